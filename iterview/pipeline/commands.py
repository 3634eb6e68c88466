"""`iterview sample` (heavy imports stay inside the command)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer


def _fail(error: Exception) -> typer.BadParameter:
    return typer.BadParameter(str(error))


def sample(
    uncond: Annotated[Path, typer.Option(help="G_u: our model folder, or the official .pt (with --config-uncond).")],
    cond: Annotated[
        Path | None, typer.Option(help="G_c: our model folder or the official .pt; not needed for uncond.")
    ] = None,
    config_uncond: Annotated[
        Path | None, typer.Option(help="Config of an official G_u .pt (official JSON or ours).")
    ] = None,
    config_cond: Annotated[Path | None, typer.Option(help="Config of an official G_c .pt.")] = None,
    output_dir: Annotated[Path, typer.Option(help="A run folder viewset_..._guidance... is made inside.")] = Path(
        "samples"
    ),
    seeds: Annotated[str, typer.Option(help="Seeds: ints and inclusive ranges, e.g. 0-8,12.")] = "0-8",
    num_samples: Annotated[int | None, typer.Option(help="Sample seeds 0..N-1 instead of --seeds.")] = None,
    classes: Annotated[str, typer.Option(help="mod (seed mod classes), uniform, random, or ints.")] = "mod",
    viewset: Annotated[
        str, typer.Option(help="uncond, random, 3x9, orbit, orbit:N, swing, swing:N, or a .json/.yaml camera file.")
    ] = "3x9",
    sampler: Annotated[
        str, typer.Option(help="official (G_u DDPM-1000, G_c DDIM-50) or fast (DPM-Solver++).")
    ] = "official",
    sampler_uncond: Annotated[str | None, typer.Option(help="Override G_u's sampler: ddpm, ddim or dpmpp.")] = None,
    sampler_cond: Annotated[str | None, typer.Option(help="Override G_c's sampler: ddpm, ddim or dpmpp.")] = None,
    steps_uncond: Annotated[int | None, typer.Option(help="G_u steps (official: < 1000 switches to DDIM).")] = None,
    steps_cond: Annotated[int | None, typer.Option(help="G_c steps.")] = None,
    guidance: Annotated[float, typer.Option(help="Classifier-free strength w: ε = (1+w)·ε_c − w·ε_∅.")] = 3.0,
    batch_size: Annotated[int, typer.Option(help="Instances sampled together per process.")] = 10,
    fov: Annotated[float | None, typer.Option(help="Field of view in degrees [official 45].")] = None,
    near: Annotated[float | None, typer.Option(help="Depth channel z-buffer near plane [official 0.6].")] = None,
    far: Annotated[float | None, typer.Option(help="Depth channel z-buffer far plane [official 5].")] = None,
    atol: Annotated[float | None, typer.Option(help="Meshing tolerance [0.03 at 128 px, × 128/size].")] = None,
    rtol: Annotated[float | None, typer.Option(help="Meshing tolerance [0.03 at 128 px, × 128/size].")] = None,
    erode_rgb: Annotated[int | None, typer.Option(help="RGB erosion radius [3 at 128 px, ÷ 128/size].")] = None,
    cpu: Annotated[bool, typer.Option(help="Sample on the CPU even when a GPU is present.")] = False,
) -> None:
    """Sample multi-view scenes: view 0 from G_u, every further view from G_c conditioned on all previous ones.

    The inference geometry is the official one carried to the model's image size
    (`InferenceGeometry.for_size`); options override it, and every scene file records it.
    Re-running the same command skips finished instances. Multi-GPU: `accelerate launch -m iterview.cli sample ...`.
    """
    from accelerate import PartialState

    from iterview.diffusion.presets import resolve_samplers
    from iterview.geometry.inference import InferenceGeometry
    from iterview.models.checkpoint import load_model
    from iterview.pipeline.multiview import Guidance
    from iterview.pipeline.sampling import parse_seeds, run_name, sample_viewset
    from iterview.pipeline.viewsets import make_viewset

    try:
        if num_samples is not None and num_samples < 1:
            raise ValueError(f"--num-samples must be >= 1, got {num_samples}")
        seed_list = list(range(num_samples)) if num_samples is not None else parse_seeds(seeds)
        choice_u, choice_c = resolve_samplers(sampler, sampler_uncond, sampler_cond, steps_uncond, steps_cond)
        views = len(make_viewset(viewset))
        if views > 1 and cond is None:
            raise ValueError(f"viewset {viewset!r} has {views} views: --cond (the G_c model) is required")
    except (ValueError, FileNotFoundError) as error:
        raise _fail(error) from error
    state = PartialState(cpu=cpu)
    g_u, _ = load_model(uncond, config_uncond)
    overrides = {"fov": fov, "near": near, "far": far, "atol": atol, "rtol": rtol, "erode_rgb": erode_rgb}
    try:
        geometry = replace(
            InferenceGeometry.for_size(g_u.image_size), **{k: v for k, v in overrides.items() if v is not None}
        )
    except ValueError as error:
        raise _fail(error) from error
    g_c = load_model(cond, config_cond)[0].to(state.device) if views > 1 else None
    root = output_dir / run_name(viewset, choice_u, choice_c, guidance)
    written = sample_viewset(
        g_u.to(state.device),
        g_c,
        root,
        seed_list,
        viewset=viewset,
        classes=classes,
        batch_size=batch_size,
        sampler_uncond=choice_u,
        sampler_cond=choice_c,
        guidance=Guidance(strength=guidance),
        geometry=geometry,
        rank=state.process_index,
        world_size=state.num_processes,
        progress=state.is_local_main_process,
    )
    typer.echo(f"{len(written)} new scene(s) in {root}")
