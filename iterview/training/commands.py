"""`iterview train`: the command-line face of `iterview.training.train`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

PRESET_NAMES = (
    "rgbd_imagenet_adm_128_large_cfg, rgbd_imagenet_adm_128_large_cond, rgbd_singlecategory_adm_128_small, "
    "rgbd_singlecategory_adm_128_small_cond, tiny, tiny_cond, synth_u, synth_c, synth_u_refine, synth_c_refine, "
    "synth_u_anneal, synth_c_anneal, synth_c_depth"
)


def train_command(
    output: Annotated[Path, typer.Option("--output", "-o", help="Run folder: checkpoints/, samples/, log.jsonl.")],
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Training config file (YAML or JSON).")] = None,
    preset: Annotated[str | None, typer.Option("--preset", "-p", help=f"Start from a preset: {PRESET_NAMES}.")] = None,
    data: Annotated[Path | None, typer.Option("--data", "-d", help="Dataset folder (sets data_dir).")] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a config field, repeatable: --set batch_size=4 --set model.dropout=0.1."),
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the newest checkpoint in --output.")] = False,
    init_from: Annotated[
        Path | None,
        typer.Option("--init-from", help="Start from these weights (run, checkpoint, model folder or official .pt)."),
    ] = None,
    cpu: Annotated[bool, typer.Option("--cpu", help="Train on the CPU even if a GPU is present.")] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show the progress bar.")] = True,
) -> None:
    """Train G_u (first view) or G_c (novel views from warps); run under `accelerate launch` for several GPUs."""
    from iterview.training.config import load_config
    from iterview.training.trainer import CONFIG_FILE, train

    overrides = list(overrides or [])
    if data is not None:
        overrides.append(f"data_dir={data}")
    if config is None and preset is None and resume:
        config = output / CONFIG_FILE
    train_config = load_config(config, preset, overrides)
    weights = train(train_config, output, resume=resume, init_from=init_from, cpu=cpu, progress=progress)
    typer.echo(f"EMA weights for sampling: {weights}")
