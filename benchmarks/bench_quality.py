"""Quality against speed on the synth benchmark: for each sampler setting, U-Net evaluations per 3x9 instance,
seconds per instance, FID, class accuracy, novel-view PSNR and depth AbsRel, side by side with the official
samplers (G_u DDPM-1000, G_c DDIM-50), same models, same seeds, one run. Prints one JSON line per setting and
writes a Markdown table and a PNG plot of FID and PSNR against evaluations.

    python benchmarks/bench_quality.py --bench data/bench [--models synth] [--images 1000] [--scenes 20]
        [--settings official_cond,fast20,fast10,ddim10] [--out bench-quality] [--quick]

`official_cond` runs only G_c with the official DDIM-50 (G_u's DDPM-1000 over 1,000 images takes hours on a
CPU); `official` runs both.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from iterview.data.benchmark import BENCHMARK, write_benchmark
from iterview.eval.benchmark import run_benchmark
from iterview.pipeline.loading import load_pipeline

# name -> (sampler preset, G_u steps, G_c steps, measure G_u, measure G_c)
SETTINGS = {
    "official": ("official", None, None, True, True),
    "official_cond": ("official", None, None, False, True),
    "fast20": ("fast", 20, 20, True, True),
    "fast10": ("fast", 10, 10, True, True),
    "fast5": ("fast", 5, 5, True, True),
    "ddim10": ("official", 10, 10, True, True),
}


def evaluations(
    models: str, sampler: str, steps_uncond: int | None, steps_cond: int | None, guidance: float
) -> dict[str, int]:
    """U-Net image evaluations per 3x9 instance (a classifier-free pair counts two)."""
    pipeline = load_pipeline(models, models, sampler, steps_uncond, steps_cond)
    cfg = 2 if guidance > 0 else 1
    uncond = pipeline.sampler_uncond.steps * cfg
    cond = pipeline.sampler_cond.steps * cfg * 26
    return {"evals_uncond": uncond, "evals_cond": cond, "evals_instance": uncond + cond}


def measure(name: str, args: argparse.Namespace) -> dict:
    sampler, steps_u, steps_c, do_u, do_c = SETTINGS[name]
    if args.quick:  # the same code path in seconds: every sampler at 3 steps
        steps_u = steps_c = 3
    out = args.out / name
    start = time.perf_counter()
    metrics = run_benchmark(
        args.bench,
        out,
        uncond=args.models if do_u else None,
        cond=args.models if do_c else None,
        sampler=sampler,
        steps_uncond=steps_u,
        steps_cond=steps_c,
        num_images=args.images,
        scenes=args.scenes,
        batch_size=args.batch,
        progress=not args.quick,
    )
    seconds = time.perf_counter() - start
    guidance = (metrics.get("cond") or metrics["uncond"])["guidance"]
    counts = evaluations(args.models, sampler, steps_u, steps_c, guidance)
    record = {"setting": name, **counts, "total_s": round(seconds, 1)}
    if "cond" in metrics:
        record |= {k: metrics["cond"][k] for k in ("psnr_all", "depth_absrel_all", "reprojection_psnr")}
        record["cond_s_per_instance"] = metrics["cond"]["seconds_per_scene"]
    if "uncond" in metrics:
        record |= {k: metrics["uncond"][k] for k in ("fid", "class_accuracy", "num_fake", "seconds_per_image")}
    return record


def write_table(records: list[dict], path: Path) -> None:
    columns = ["setting", "evals_instance", "fid", "class_accuracy", "psnr_all", "depth_absrel_all", "total_s"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for record in records:
        cells = [record.get(c, "") for c in columns]
        lines.append("| " + " | ".join(f"{c:.4g}" if isinstance(c, float) else str(c) for c in cells) + " |")
    path.write_text("\n".join(lines) + "\n")


def plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for axis, key, label in ((axes[0], "fid", "FID (G_u) ↓"), (axes[1], "psnr_all", "novel-view PSNR (G_c) ↑")):
        for record in records:
            if key in record:
                axis.scatter(record["evals_instance"], record[key])
                axis.annotate(record["setting"], (record["evals_instance"], record[key]), fontsize=8)
        axis.set_xscale("log")
        axis.set_xlabel("U-Net evaluations per 3x9 instance")
        axis.set_ylabel(label)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bench", type=Path, help="a benchmark folder (iterview synth --preset bench)")
    parser.add_argument("--models", default="synth")
    parser.add_argument("--settings", default="official_cond,fast20,fast10,ddim10")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--scenes", type=int, default=20)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("bench-quality"))
    parser.add_argument("--quick", action="store_true", help="seconds: one setting, 16 images, 1 scene, 3 steps")
    args = parser.parse_args()
    if args.quick:  # a miniature benchmark of the same recipe unless one is given
        args.images, args.scenes, args.batch, args.settings = 16, 1, 16, "fast20"
        scratch = Path(tempfile.mkdtemp(prefix="bench_quality_"))
        args.out = scratch / "out"
        if args.bench is None:
            tiny = replace(BENCHMARK, train_count=16, heldout_count=16, truth_scenes=1)
            args.bench = write_benchmark(scratch / "bench", tiny)
    if args.bench is None:
        parser.error("--bench is required (a folder written by `iterview synth DIR --preset bench`)")
    torch.manual_seed(0)
    records = []
    for name in args.settings.split(","):
        if name not in SETTINGS:
            parser.error(f"unknown setting {name!r}; choose from {', '.join(SETTINGS)}")
        records.append(measure(name, args))
        print(json.dumps({"bench": "quality", **records[-1]}), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    write_table(records, args.out / "table.md")
    plot(records, args.out / "quality_speed.png")


if __name__ == "__main__":
    main()
