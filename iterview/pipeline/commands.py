"""`iterview sample` (heavy imports stay inside the command)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer


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
        str, typer.Option(help="uncond, random, 3x9, orbit, orbit:N, or a .json/.yaml camera file.")
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

    from iterview import validate
    from iterview.diffusion.presets import resolve_samplers
    from iterview.errors import UserError
    from iterview.geometry.inference import InferenceGeometry
    from iterview.io import removed_if_failed
    from iterview.models.checkpoint import load_model
    from iterview.pipeline.multiview import Guidance
    from iterview.pipeline.runinfo import recorded_run, run_record
    from iterview.pipeline.sampling import check_classes, parse_seeds, run_name, sample_viewset
    from iterview.pipeline.viewsets import make_viewset

    for option, value in (
        ("--num-samples", num_samples),
        ("--steps-uncond", steps_uncond),
        ("--steps-cond", steps_cond),
    ):
        validate.at_least(option, value)
    validate.at_least("--batch-size", batch_size)
    validate.sampling_options(guidance, fov, near, far, atol, rtol, erode_rgb)
    seed_list = list(range(num_samples)) if num_samples is not None else parse_seeds(seeds)
    check_classes(classes, len(seed_list))
    choice_u, choice_c = resolve_samplers(sampler, sampler_uncond, sampler_cond, steps_uncond, steps_cond)
    views = len(make_viewset(viewset))
    if views > 1 and cond is None:
        raise UserError(f"viewset {viewset!r} has {views} views", "--cond", "G_c is required", "pass --cond")
    weights_u = validate.resolve_weights(uncond, "uncond")
    weights_c = validate.resolve_weights(cond, "cond") if views > 1 else None
    g_u, config_u = load_model(weights_u, config_uncond)
    g_c, config_c = load_model(weights_c, config_cond) if weights_c is not None else (None, None)
    validate.model_pair(config_u, uncond, config_c, cond)
    overrides = {"fov": fov, "near": near, "far": far, "atol": atol, "rtol": rtol, "erode_rgb": erode_rgb}
    geometry = replace(
        InferenceGeometry.for_size(config_u.image_size), **{k: v for k, v in overrides.items() if v is not None}
    )
    strength = Guidance(strength=guidance)
    record = run_record(weights_u, config_u, weights_c, config_c, choice_u, choice_c, strength, geometry)
    state = PartialState(cpu=cpu)
    root = output_dir / run_name(viewset, choice_u, choice_c, guidance)
    with removed_if_failed(root), recorded_run(root, record):
        written = sample_viewset(
            g_u.to(state.device),
            None if g_c is None else g_c.to(state.device),
            root,
            seed_list,
            viewset=viewset,
            classes=classes,
            batch_size=batch_size,
            sampler_uncond=choice_u,
            sampler_cond=choice_c,
            guidance=strength,
            geometry=geometry,
            rank=state.process_index,
            world_size=state.num_processes,
            progress=state.is_local_main_process,
            made_by=record,
        )
    typer.echo(f"{len(written)} new scene(s) in {root}")
