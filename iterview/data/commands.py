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
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace another dataset in OUT_DIR instead of refusing.")
    ] = False,
) -> None:
    """Write a procedural RGBD dataset: textured objects before textured backgrounds, with exact depth.

    A rerun resumes; a smaller --count keeps the larger dataset already there."""
    from iterview.data.claims import claim_dataset
    from iterview.data.layout import read_index
    from iterview.data.synth import write_synth_dataset
    from iterview.io import removed_if_failed

    claim_dataset(out_dir, "synth", {"seed": seed, "image_size": size, "style": "classic"}, overwrite)
    with removed_if_failed(out_dir):
        root = write_synth_dataset(out_dir, count=count, image_size=size, seed=seed)
    total = len(read_index(root).images)
    kept = f" (kept all {total}: --count never shrinks a dataset)" if total > count else ""
    typer.echo(f"{total} images of {size}x{size} in {root}{kept}")


def prepare(
    images_dir: Annotated[Path, typer.Argument(help="Folder of images, flat or in class sub-folders (-> labels).")],
    out_dir: Annotated[Path, typer.Argument(help="Dataset folder to write (images/, depths/, dataset.json).")],
    depth_model: Annotated[
        str, typer.Option(help="transformers depth model: a hub id or a local folder.")
    ] = "Intel/dpt-beit-large-512",
    depth_from: Annotated[
        Path | None,
        typer.Option(help="Folder of your own depth maps (.npz/.npy/16-bit .png, same relative names) instead."),
    ] = None,
    depth_kind: Annotated[
        str | None,
        typer.Option(help="What the depth holds: official (MiDaS scale), disparity (any scale) or depth (z)."),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per model call.")] = 4,
    num_workers: Annotated[int, typer.Option(min=0, help="Image-decoding worker processes.")] = 2,
    min_size: Annotated[int, typer.Option(min=1, help="Skip images whose shorter side is below this.")] = 32,
    half: Annotated[bool, typer.Option(help="Run the model in float16 (CUDA only).")] = False,
    cpu: Annotated[bool, typer.Option(help="Run on the CPU even if a GPU is present.")] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace another dataset in OUT_DIR instead of refusing.")
    ] = False,
) -> None:
    """Estimate depth for a folder of images and write an RGBD training set in the official layout.

    A rerun resumes; OUT_DIR may only hold a dataset prepared from the same images with the same depth source.
    Images that cannot be used are skipped with their reason, and the command then exits with code 2."""
    from iterview.data.prepare import REPORT_FILE, prepare_dataset
    from iterview.errors import BatchFailed

    report = prepare_dataset(
        images_dir,
        out_dir,
        depth_model=depth_model,
        depth_from=depth_from,
        depth_kind=depth_kind,
        batch_size=batch_size,
        num_workers=num_workers,
        min_size=min_size,
        half=half,
        cpu=cpu,
        overwrite=overwrite,
    )
    if report is None:  # not the main process of an `accelerate launch` run
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(
        f"{report.total} images: {report.written} written, {report.already_done} already done, "
        f"{len(report.skipped)} skipped"
    )
    if report.skipped:
        table = Table("skipped image", "reason")
        for record in report.skipped[:20]:
            table.add_row(record["image"], record["reason"])
        console.print(table)
        console.print(f"all reasons: {out_dir / REPORT_FILE}")
        raise BatchFailed("some images were skipped", images_dir, len(report.skipped), report.total)
