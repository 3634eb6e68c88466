"""The `iterview prepare` and `iterview synth` commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

SYNTH_PRESETS = ("bench",)
SYNTH_DEFAULTS = {"count": 512, "size": 64, "seed": 0}


def synth(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the dataset into (created; resumed if present).")],
    count: Annotated[
        int | None, typer.Option("--count", "-n", min=1, help="Number of scenes (one front view each; default 512).")
    ] = None,
    size: Annotated[int | None, typer.Option("--size", "-s", min=8, help="Image size in pixels (default 64).")] = None,
    seed: Annotated[
        int | None, typer.Option(min=0, help="Image i is always the same scene for a given seed (default 0).")
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(help="bench: the versioned synth benchmark (train/, heldout/, truth/; its own sizes and seeds)."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace another dataset in OUT_DIR instead of refusing.")
    ] = False,
) -> None:
    """Write a procedural RGBD dataset: textured objects before textured backgrounds, with exact depth.

    A rerun resumes; a smaller --count keeps the larger dataset already there."""
    from iterview.data.layout import read_index
    from iterview.data.synth import write_synth_dataset
    from iterview.errors import UserError
    from iterview.io import removed_if_failed

    if preset is not None:
        if preset not in SYNTH_PRESETS:
            raise UserError("unknown preset", "--preset", f"got {preset!r}", f"pass one of {', '.join(SYNTH_PRESETS)}")
        given = [f"--{name}" for name, value in (("count", count), ("size", size), ("seed", seed)) if value is not None]
        if given:
            raise UserError(
                "options the preset fixes", " ".join(given), f"--preset {preset} has its own", "leave them out"
            )
        _synth_benchmark(out_dir, overwrite)
        return
    count = SYNTH_DEFAULTS["count"] if count is None else count
    size = SYNTH_DEFAULTS["size"] if size is None else size
    seed = SYNTH_DEFAULTS["seed"] if seed is None else seed
    _claim_synth(out_dir, seed, size, "classic", overwrite)
    with removed_if_failed(out_dir):
        root = write_synth_dataset(out_dir, count=count, image_size=size, seed=seed)
    total = len(read_index(root).images)
    kept = f" (kept all {total}: --count never shrinks a dataset)" if total > count else ""
    typer.echo(f"{total} images of {size}x{size} in {root}{kept}")


def _claim_synth(root: Path, seed: int, size: int, style: str, overwrite: bool, option: str = "OUT_DIR") -> None:
    """Claim root for a synth dataset of (seed, size, style): the style is part of what the set is."""
    from iterview.claims import claim_dataset

    claim_dataset(root, "synth", {"seed": seed, "image_size": size, "style": style}, overwrite, option)


def _synth_benchmark(out_dir: Path, overwrite: bool) -> None:
    """`synth --preset bench`: the benchmark recipe into out_dir, each split claimed with the recipe's style."""
    from iterview.claims import folder_owner
    from iterview.data.benchmark import BENCHMARK, RECIPE_FILE, write_benchmark
    from iterview.errors import UserError
    from iterview.io import removed_if_failed

    owner = folder_owner(out_dir)
    if owner not in (None, "benchmark"):
        raise UserError(
            "refusing to write the synth benchmark",
            f"OUT_DIR {out_dir}",
            f"it holds {'a ' + owner if owner != 'dataset' else 'another'} dataset or model",
            "pass another folder",
        )
    recipe = BENCHMARK
    splits = [("heldout", recipe.heldout_seed)]
    if recipe.train_count:
        splits.insert(0, ("train", recipe.train_seed))
    for split, seed in splits:
        _claim_synth(out_dir / split, seed, recipe.image_size, recipe.style, overwrite, f"OUT_DIR/{split}")
    try:
        with removed_if_failed(out_dir):
            root = write_benchmark(out_dir, recipe)
    except ValueError as error:  # another recipe
        raise UserError(
            "refusing to write the synth benchmark", out_dir / RECIPE_FILE, str(error), "pass another folder"
        ) from None
    typer.echo(
        f"synth benchmark v{recipe.version} in {root}: {recipe.train_count} training and {recipe.heldout_count} "
        f"held-out images of {recipe.image_size}x{recipe.image_size}, 3x9 truth for {recipe.truth_scenes}"
    )


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
