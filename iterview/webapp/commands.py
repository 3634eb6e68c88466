"""`iterview app`: serve the web page (Gradio, the optional `app` extra, is imported only when it starts)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated

import typer

DEFAULT_MODEL = "synth"


def app_command(
    uncond: Annotated[
        str,
        typer.Option(
            help="G_u: a shipped model name, a training run, a model folder or an official .pt (+ --config-uncond)."
        ),
    ] = DEFAULT_MODEL,
    cond: Annotated[
        str,
        typer.Option(
            help="G_c: a shipped model name, a training run, a model folder or an official .pt (+ --config-cond)."
        ),
    ] = DEFAULT_MODEL,
    config_uncond: Annotated[Path | None, typer.Option(help="Config of an official G_u .pt.")] = None,
    config_cond: Annotated[Path | None, typer.Option(help="Config of an official G_c .pt.")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on; 0.0.0.0 shares the app on the network.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 7860,
    output_dir: Annotated[Path, typer.Option(help="Where scenes, videos, exports and downloads are written.")] = Path(
        "iterview-app"
    ),
    frames: Annotated[int, typer.Option(help="Frames of the swing video made after each scene.")] = 60,
    ssaa: Annotated[
        int | None, typer.Option(help="Fusion supersampling (default: the scene's, official 5; lower is faster).")
    ] = None,
    cpu: Annotated[bool, typer.Option(help="Run on the CPU even when a GPU is present.")] = False,
) -> None:
    """A local web app: generate scenes view by view, lift photos, explore and download them."""
    import torch

    from iterview.pipeline.loading import load_pipeline
    from iterview.webapp.handlers import AppModels, RenderSettings, claim_output_dir

    if importlib.util.find_spec("gradio") is None:
        typer.echo('iterview app needs the `app` extra (Gradio): pip install -e ".[app]"', err=True)
        raise typer.Exit(1)
    from iterview.webapp.ui import build_app, launch

    if not 0 < port < 65536:
        raise typer.BadParameter(f"--port must be in 1..65535, got {port}")
    if frames < 2 or (ssaa is not None and ssaa < 1):
        raise typer.BadParameter(f"--frames must be >= 2 and --ssaa >= 1, got {frames} and {ssaa}")
    device = torch.device("cuda" if torch.cuda.is_available() and not cpu else "cpu")
    try:
        # A shipped set brings the geometry, guidance and x0 clipping it was trained for.
        pipeline = load_pipeline(uncond, cond, device=device, config_uncond=config_uncond, config_cond=config_cond)
    except (ValueError, FileNotFoundError) as error:
        raise typer.BadParameter(str(error)) from None
    models = AppModels.from_pipeline(pipeline, device)
    claim_output_dir(output_dir, models)
    typer.echo(f"iterview app on http://{host}:{port} (outputs in {output_dir}); Ctrl+C stops it")
    demo = build_app(models, output_dir, RenderSettings(frames, ssaa))
    launch(demo, host, port, output_dir)
