"""The `iterview prepare` and `iterview synth` commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def synth(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the dataset into (created; resumed if present).")],
    count: Annotated[int, typer.Option("--count", "-n", min=1, help="Number of scenes (one front view each).")] = 512,
    size: Annotated[int, typer.Option("--size", "-s", min=8, help="Image size in pixels.")] = 64,
    seed: Annotated[int, typer.Option(min=0, help="Image i is always the same scene for a given seed.")] = 0,
) -> None:
    """Write a procedural RGBD dataset: textured objects before textured backgrounds, with exact depth."""
    from iterview.data.synth import write_synth_dataset

    root = write_synth_dataset(out_dir, count=count, image_size=size, seed=seed)
    typer.echo(f"wrote {count} images of {size}x{size} to {root}")
