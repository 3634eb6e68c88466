"""`iterview convert`: official ivid checkpoints to our safetensors + config.json format."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def convert(
    checkpoint: Annotated[Path, typer.Argument(help="Official .pt state dict (e.g. imagenet128_cond.pt).")],
    config: Annotated[
        Path,
        typer.Option(help="Official experiment JSON (e.g. rgbd_imagenet_adm_128_large_cond.json) or backbone args."),
    ],
    output: Annotated[Path, typer.Option(help="Directory to write model.safetensors + config.json into.")],
    fp16: Annotated[
        bool | None,
        typer.Option("--fp16/--fp32", help="Override the config's use_fp16 (default: keep the official layout)."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace a model already in --output instead of refusing.")
    ] = False,
) -> None:
    """Convert an official ADM checkpoint, checking every key and shape, into our checkpoint directory."""
    from dataclasses import replace

    from iterview.claims import claim_model_dir
    from iterview.config import ADMConfig
    from iterview.io import removed_if_failed
    from iterview.models.checkpoint import load_model, save_model

    claim_model_dir(output, overwrite)
    adm_config = ADMConfig.from_json(config)
    if fp16 is not None:
        adm_config = replace(adm_config, use_fp16=fp16)
    model, adm_config = load_model(checkpoint, adm_config)
    with removed_if_failed(output):
        directory = save_model(model, adm_config, output)
    parameters = sum(p.numel() for p in model.parameters())
    typer.echo(f"wrote {directory} ({parameters:,} parameters, use_fp16={adm_config.use_fp16})")
