"""Quality against speed on the synth benchmark: for each sampler setting, U-Net evaluations per 3x9 instance,
seconds per instance, G_u FID and class accuracy, G_c novel-view PSNR and depth AbsRel, side by side with the
official samplers (G_u DDPM-1000, G_c DDIM-50), same models, same seeds, one run. Prints one JSON line per
setting and writes a Markdown table and a PNG plot of FID and PSNR against evaluations from these measurements.

    python benchmarks/bench_quality.py --bench data/bench [--models synth] [--images 1000] [--scenes 20]
        [--settings official_cond,ddim10,dpmpp20,...] [--official-images 250] [--out bench-quality] [--quick]

`official_cond` runs only G_c with the official DDIM-50 and `official_uncond` only G_u with DDPM-1000, on
--official-images images (2,000 evaluations each: 1,000 take hours on a CPU); `official` runs both. Every
setting's FID is also taken over its first that many images (`fid_same_n`, the same seeds), which
`fid_vs_official` compares. Settings named `*_window` guide only at network timesteps 81..578, EDM σ in
[0.28, 5.42] (Kynkäänniemi et al. 2024, "Applying guidance in a limited interval"): one U-Net evaluation
instead of two at the other steps. `ddim*_eta1` sample G_u with ancestral DDIM (η = 1) and G_c with
`unipc6_window`; `fast` is the `--sampler fast` preset (G_u ancestral DDIM-25, G_c `ddim10_window`). Each
setting's record is kept in OUT/SETTING/record.json, so a rerun measures only what is missing (a record is
reused when the options it depends on are the same), and G_u's images are saved as they come: an interrupted
or enlarged run samples only the missing ones."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from iterview.data.benchmark import BENCHMARK, read_recipe, write_benchmark
from iterview.diffusion.presets import (
    FAST_COND,
    FAST_UNCOND,
    GUIDANCE_WINDOW,
    OFFICIAL_COND,
    OFFICIAL_UNCOND,
    SamplerChoice,
)
from iterview.eval.benchmark import novel_view_metrics, real_vs_real_fid, uncond_metrics
from iterview.eval.classifier import SynthClassifier
from iterview.io import write_json
from iterview.pipeline.loading import load_pipeline
from iterview.pipeline.multiview import MultiViewPipeline
from iterview.pipeline.viewsets import GRID_3X9

VIEWS = sum(len(row) for row in GRID_3X9)


@dataclass(frozen=True)
class Setting:
    """The samplers of G_u and G_c, and which of the two this setting measures."""

    uncond: SamplerChoice
    cond: SamplerChoice
    measure_uncond: bool = True
    measure_cond: bool = True


def _both(name: str, steps: int, window: tuple[int, int] | None = None) -> tuple[SamplerChoice, SamplerChoice]:
    return SamplerChoice(name, steps, cfg_window=window), SamplerChoice(name, steps, cfg_window=window)


def _ancestral(steps: int, window: tuple[int, int] | None = None) -> Setting:
    """G_u ancestral DDIM (eta = 1) with `steps`, G_c as `unipc6_window`."""
    return Setting(SamplerChoice("ddim", steps, eta=1.0, cfg_window=window), _both("unipc", 6, GUIDANCE_WINDOW)[1])


SETTINGS = {
    "official": Setting(OFFICIAL_UNCOND, OFFICIAL_COND),
    "official_cond": Setting(OFFICIAL_UNCOND, OFFICIAL_COND, measure_uncond=False),
    "official_uncond": Setting(OFFICIAL_UNCOND, OFFICIAL_COND, measure_cond=False),
    "ddim10": Setting(*_both("ddim", 10)),
    "dpmpp20": Setting(*_both("dpmpp", 20)),
    "dpmpp10": Setting(*_both("dpmpp", 10)),
    "dpmpp5": Setting(*_both("dpmpp", 5)),
    "dpmpp3m10": Setting(*_both("dpmpp3m", 10)),
    "unipc10": Setting(*_both("unipc", 10)),
    "unipc5": Setting(*_both("unipc", 5)),
    "unipc10_window": Setting(*_both("unipc", 10, GUIDANCE_WINDOW)),
    "unipc6_window": Setting(*_both("unipc", 6, GUIDANCE_WINDOW)),
    "ddim10_window": Setting(*_both("ddim", 10, GUIDANCE_WINDOW)),
    "fast": Setting(FAST_UNCOND, FAST_COND),
    "ddim25_eta1": _ancestral(25),
    "ddim50_eta1": _ancestral(50),
    "ddim50_eta1_window": _ancestral(50, GUIDANCE_WINDOW),
    "ddim100_eta1": _ancestral(100),
}
DEFAULT_SETTINGS = [name for name in SETTINGS if name not in ("official", "official_uncond")]
QUICK_SETTING = "unipc10_window"


def configure(pipeline: MultiViewPipeline, setting: Setting, quick: bool) -> MultiViewPipeline:
    """The pipeline with the setting's samplers, keeping the models' x0 clipping; quick: at most 3 steps."""

    def choice(sampler: SamplerChoice, clip: bool) -> SamplerChoice:
        steps = sampler.steps if not quick or sampler.name == "ddpm" else min(sampler.steps, 3)
        return replace(sampler, steps=steps, clip=clip)

    pipeline.sampler_uncond = choice(setting.uncond, pipeline.sampler_uncond.clip)
    pipeline.sampler_cond = choice(setting.cond, pipeline.sampler_cond.clip)
    return pipeline


def measure(name: str, pipeline: MultiViewPipeline, classifier: SynthClassifier, args: argparse.Namespace) -> dict:
    """One setting's record: evaluations per instance, seconds, and the metrics of the parts it measures (read
    back from OUT/SETTING/record.json when an earlier run measured it with the same options)."""
    setting = SETTINGS[name]
    out = args.out / name
    images = args.official_images if name.startswith("official") else args.images
    options = {"models": args.models, "images": images, "scenes": args.scenes, "seed": args.seed, "parts": args.parts}
    relevant = ["models", "seed", "parts"]
    relevant += ["images"] if setting.measure_uncond and "uncond" in args.parts else []
    relevant += ["scenes"] if setting.measure_cond and "cond" in args.parts else []
    saved = out / "record.json"
    if saved.is_file():
        record = json.loads(saved.read_text())
        if all(record.get("options", {}).get(key) == options[key] for key in relevant):
            return record
    configure(pipeline, setting, args.quick)
    record = {
        "setting": name,
        "sampler_uncond": pipeline.sampler_uncond.label,
        "sampler_cond": pipeline.sampler_cond.label,
        "evals_uncond": pipeline.unet_evaluations(1, guided=True),
        "evals_instance": pipeline.unet_evaluations(VIEWS, guided=True),
    }
    guided = pipeline.guidance.strength > 0
    official = OFFICIAL_UNCOND.evaluations(pipeline.schedule, guided)
    official += (VIEWS - 1) * OFFICIAL_COND.evaluations(pipeline.schedule, guided)
    record["evals_vs_official"] = record["evals_instance"] / official
    start = time.perf_counter()
    if setting.measure_uncond and "uncond" in args.parts:
        cache = args.out / "heldout_stats.safetensors"
        metrics = uncond_metrics(
            args.bench, pipeline, classifier, out / "uncond", images, args.seed, args.batch, not args.quick, cache, True
        )
        record |= metrics | {"images": images}
    if setting.measure_cond and "cond" in args.parts:
        metrics = novel_view_metrics(
            args.bench, pipeline, out / "cond", args.scenes, args.seed, args.scenes, not args.quick
        )
        record |= metrics
    if record.get("seconds_per_image") is not None and "seconds_per_scene" in record:
        record["s_per_instance"] = record["seconds_per_image"] + record["seconds_per_scene"]
    record["total_s"] = round(time.perf_counter() - start, 1)
    write_json(record | {"options": options}, saved)
    return record | {"options": options}


def fid_of_first(folder: Path, count: int, args: argparse.Namespace) -> float:
    """FID of the first `count` images (the first seeds) under folder against the held-out statistics."""
    from iterview.eval.fid import FeatureStats, ImageFiles, extract_features, frechet_distance, list_images, real_stats
    from iterview.eval.inception import load_inception

    inception = load_inception()
    size = read_recipe(args.bench).image_size
    files = ImageFiles(list_images(folder)[:count], size, real=False)
    fake = FeatureStats.from_features(extract_features(inception, files, progress=False))
    real = real_stats(inception, None, size, args.out / "heldout_stats.safetensors")
    return frechet_distance(fake.mu, fake.sigma, real.mu, real.sigma)


def add_ratios(record: dict, official: dict) -> None:
    """FID ratio, PSNR difference (dB) and AbsRel ratio of a setting against the official one, where both have
    the metric."""
    if "fid" in official and "fid_same_n" in record:
        record["fid_vs_official"] = record["fid_same_n"] / official["fid"]
    if "psnr_all" in official and "psnr_all" in record:
        record["psnr_vs_official_db"] = record["psnr_all"] - official["psnr_all"]
        record["absrel_vs_official"] = record["depth_absrel_all"] / official["depth_absrel_all"]


COLUMNS = [
    "setting",
    "sampler_uncond",
    "sampler_cond",
    "evals_instance",
    "evals_vs_official",
    "s_per_instance",
    "fid",
    "fid_same_n",
    "fid_vs_official",
    "class_accuracy",
    "psnr_all",
    "psnr_vs_official_db",
    "depth_absrel_all",
    "absrel_vs_official",
]


def write_table(records: list[dict], path: Path) -> None:
    """The records as a Markdown table, one row per setting (blank where a setting did not measure a part)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for record in records:
        cells = [record.get(c, "") for c in COLUMNS]
        lines.append("| " + " | ".join(f"{c:.4g}" if isinstance(c, float) else str(c) for c in cells) + " |")
    path.write_text("\n".join(lines) + "\n")


def plot(records: list[dict], path: Path) -> None:
    """A PNG of FID (over the seeds every setting shares) and novel-view PSNR against U-Net evaluations per
    instance, one point per setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullLocator, StrMethodFormatter

    figure, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    fid_label = "FID (G_u), same seeds ↓"
    for axis, key, label in ((axes[0], "fid_same_n", fid_label), (axes[1], "psnr_all", "novel-view PSNR (G_c) ↑")):
        for i, record in enumerate(r for r in records if key in r):
            point = (record["evals_instance"], record[key])
            axis.scatter(*point)  # labels alternate above and below: settings may share a point
            offset = (4, 4) if i % 2 == 0 else (4, -10)
            axis.annotate(record["setting"], point, xytext=offset, textcoords="offset points", fontsize=8)
        axis.set_xscale("log")
        axis.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.xaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
        axis.xaxis.set_minor_locator(NullLocator())
        axis.set_xlabel("U-Net evaluations per 3x9 instance")
        axis.set_ylabel(label)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def parse_args() -> argparse.Namespace:
    """Options; --quick shrinks everything and writes a miniature benchmark into a scratch folder."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bench", type=Path, help="a benchmark folder (iterview synth --preset bench)")
    parser.add_argument("--models", default="synth")
    parser.add_argument("--settings", default=",".join(DEFAULT_SETTINGS), help=f"from {', '.join(SETTINGS)}")
    parser.add_argument("--images", type=int, default=1000, help="G_u images per setting (FID, class accuracy)")
    parser.add_argument("--official-images", type=int, help="G_u images of the official DDPM-1000 [--images]")
    parser.add_argument("--scenes", type=int, default=20, help="held-out 3x9 scenes per setting (PSNR, AbsRel)")
    parser.add_argument("--parts", default="uncond,cond", help="measure G_u (uncond), G_c (cond) or both")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench-quality"))
    parser.add_argument("--quick", action="store_true", help=f"seconds: {QUICK_SETTING} at 3 steps, 16 images, 1 scene")
    args = parser.parse_args()
    if args.quick:  # a miniature benchmark of the same recipe unless one is given
        args.images, args.scenes, args.batch, args.settings = 16, 1, 16, QUICK_SETTING
        args.official_images = 8
        scratch = Path(tempfile.mkdtemp(prefix="bench_quality_"))
        args.out = scratch / "out"
        if args.bench is None:
            tiny = replace(BENCHMARK, train_count=16, heldout_count=16, truth_scenes=1)
            args.bench = write_benchmark(scratch / "bench", tiny)
    args.official_images = args.official_images or args.images
    if args.bench is None:
        parser.error("--bench is required (a folder written by `iterview synth DIR --preset bench`)")
    unknown = [name for name in args.settings.split(",") if name not in SETTINGS]
    if unknown:
        parser.error(f"unknown setting(s) {', '.join(unknown)}; choose from {', '.join(SETTINGS)}")
    return args


def main() -> None:
    from iterview.eval.classifier import load_classifier
    from iterview.models.shipped import resolve_model

    args = parse_args()
    torch.manual_seed(0)
    pipeline = load_pipeline(args.models, args.models)
    classifier = load_classifier(resolve_model(args.models, "classifier"))
    records = [measure(name, pipeline, classifier, args) for name in args.settings.split(",")]
    official = {}
    for record in records:
        if record["setting"].startswith("official"):
            official |= record
    for record in records:
        same_n = min(official.get("images", record["images"]), record["images"]) if "fid" in record else None
        if same_n is not None and record.get("fid_same_n_images") != same_n:
            folder = args.out / record["setting"] / "uncond" / "images"
            record["fid_same_n"] = record["fid"] if same_n == record["images"] else fid_of_first(folder, same_n, args)
            record["fid_same_n_images"] = same_n
            write_json(record, args.out / record["setting"] / "record.json")
        add_ratios(record, official)
        print(json.dumps({"bench": "quality", **record}), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    write_table(records, args.out / "table.md")
    plot(records, args.out / "quality_speed.png")
    floor_path = args.out / "real_vs_real.json"
    measured = json.loads(floor_path.read_text()).get("images") if floor_path.is_file() else None
    if "uncond" in args.parts and read_recipe(args.bench).train_count >= args.images and measured != args.images:
        floor = {"real_vs_real_fid": real_vs_real_fid(args.bench, args.images, progress=not args.quick)}
        floor_path.write_text(json.dumps(floor | {"images": args.images}))


if __name__ == "__main__":
    main()
