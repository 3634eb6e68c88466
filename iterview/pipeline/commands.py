"""`iterview sample` and `iterview lift` (heavy imports stay inside the commands)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from iterview.diffusion.presets import SamplerChoice
    from iterview.geometry.inference import InferenceGeometry
    from iterview.models.adm import ADMUNet
    from iterview.pipeline.lift import FirstView, PhotoLifter
    from iterview.pipeline.multiview import Guidance

# The sample command's options in the order `validate.sampling_options` / `resolve_samplers` take them.
GEOMETRY_OPTIONS = ("fov", "near", "far", "atol", "rtol", "erode_rgb")
SAMPLER_OPTIONS = ("sampler", "sampler_uncond", "sampler_cond", "steps_uncond", "steps_cond")
COMPILE_HELP = "torch.compile the fast U-Nets: minutes per batch shape first, for runs of hundreds of instances."


def sample(
    ctx: typer.Context,
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
        str, typer.Option(help="official (G_u DDPM-1000, G_c DDIM-50) or fast (G_u ancestral DDIM-25, G_c DDIM-10).")
    ] = "official",
    sampler_uncond: Annotated[
        str | None, typer.Option(help="Override G_u's sampler: ddpm, ddim, dpmpp, dpmpp3m or unipc.")
    ] = None,
    sampler_cond: Annotated[
        str | None, typer.Option(help="Override G_c's sampler: ddpm, ddim, dpmpp, dpmpp3m or unipc.")
    ] = None,
    steps_uncond: Annotated[int | None, typer.Option(help="G_u steps (official: < 1000 switches to DDIM).")] = None,
    steps_cond: Annotated[int | None, typer.Option(help="G_c steps.")] = None,
    guidance: Annotated[
        float | None,
        typer.Option(help="Classifier-free strength w: ε = (1+w)·ε_c − w·ε_∅ (default: a shipped set's own, else 3)."),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Instances sampled together per process.")] = 10,
    fov: Annotated[float | None, typer.Option(help="Field of view in degrees (official: 45).")] = None,
    near: Annotated[float | None, typer.Option(help="Depth channel z-buffer near plane (official: 0.6).")] = None,
    far: Annotated[float | None, typer.Option(help="Depth channel z-buffer far plane (official: 5).")] = None,
    atol: Annotated[float | None, typer.Option(help="Meshing tolerance (0.03 at 128 px, × 128/size).")] = None,
    rtol: Annotated[float | None, typer.Option(help="Meshing tolerance (0.03 at 128 px, × 128/size).")] = None,
    erode_rgb: Annotated[int | None, typer.Option(help="RGB erosion radius (3 at 128 px, ÷ 128/size).")] = None,
    cpu: Annotated[bool, typer.Option(help="Sample on the CPU even when a GPU is present.")] = False,
    official_unet: Annotated[
        bool, typer.Option(help="Evaluate the U-Nets as the official code does (slower; the fast path is within 1e-4).")
    ] = False,
    compile: Annotated[bool, typer.Option("--compile", help=COMPILE_HELP)] = False,
) -> None:
    """Sample multi-view scenes: view 0 from G_u, every further view from G_c conditioned on all previous ones.

    The inference geometry is the official one carried to the model's image size
    (`InferenceGeometry.for_size`), or a shipped set's own (with its guidance and x0 clipping); options override
    it, and every scene file records it.
    Re-running the same command skips finished instances. Multi-GPU: `accelerate launch -m iterview.cli sample ...`.
    """
    run = _sampling_run(ctx.params)
    written = _sample_scenes(run, viewset, classes, batch_size, cpu)
    typer.echo(f"{len(written)} new scene(s) in {run.root}")


@dataclass
class SamplingRun:
    """What `iterview sample` samples: the models (on the CPU), the seeds, samplers, guidance and inference
    geometry, the run's record (its identity, see `runinfo.run_record`) and its folder."""

    g_u: ADMUNet
    g_c: ADMUNet | None
    seeds: list[int]
    sampler_uncond: SamplerChoice
    sampler_cond: SamplerChoice
    guidance: Guidance
    geometry: InferenceGeometry
    record: dict
    root: Path


def _sampling_run(options: dict[str, Any]) -> SamplingRun:
    """Check the sample command's options (UserErrors name the option), load its models and describe the run."""
    from iterview import validate
    from iterview.diffusion.presets import resolve_samplers
    from iterview.errors import UserError
    from iterview.models.adm import compile_for_inference, prepare_for_inference
    from iterview.models.checkpoint import load_model
    from iterview.pipeline.loading import inference_geometry, sampling_settings
    from iterview.pipeline.multiview import Guidance
    from iterview.pipeline.runinfo import run_record
    from iterview.pipeline.sampling import check_classes, parse_seeds, run_name
    from iterview.pipeline.viewsets import make_viewset

    for name in ("num_samples", "steps_uncond", "steps_cond", "batch_size"):
        validate.at_least("--" + name.replace("_", "-"), options[name])
    count = options["num_samples"]
    seeds = list(range(count)) if count is not None else parse_seeds(options["seeds"])
    check_classes(options["classes"], len(seeds))
    if options["official_unet"] and options["compile"]:
        why = "--compile compiles the fast U-Nets, --official-unet keeps the official ones"
        raise UserError("--compile with --official-unet", "--compile", why, "drop one of them")
    viewset, uncond, cond = options["viewset"], options["uncond"], options["cond"]
    named = cond if cond is not None else uncond
    choices = resolve_samplers(*(options[name] for name in SAMPLER_OPTIONS))
    choice_u, choice_c, strength = sampling_settings(named, choices, options["guidance"])
    validate.sampling_options(strength, *(options[name] for name in GEOMETRY_OPTIONS))
    views = len(make_viewset(viewset))
    if views > 1 and cond is None:
        raise UserError(f"viewset {viewset!r} has {views} views", "--cond", "G_c is required", "pass --cond")
    weights_u = validate.resolve_weights(uncond, "uncond")
    weights_c = validate.resolve_weights(cond, "cond") if views > 1 else None
    g_u, config_u = load_model(weights_u, options["config_uncond"])
    g_c, config_c = load_model(weights_c, options["config_cond"]) if weights_c is not None else (None, None)
    if not options["official_unet"]:
        speed_up = compile_for_inference if options["compile"] else prepare_for_inference
        g_u = speed_up(g_u)
        g_c = speed_up(g_c) if g_c is not None else None
    validate.model_pair(config_u, uncond, config_c, cond)
    overrides = {name: options[name] for name in GEOMETRY_OPTIONS if options[name] is not None}
    geometry = replace(inference_geometry(named, config_u.image_size), **overrides)
    guidance = Guidance(strength=strength)
    record = run_record(weights_u, config_u, weights_c, config_c, choice_u, choice_c, guidance, geometry)
    root = options["output_dir"] / run_name(viewset, choice_u, choice_c, strength)
    return SamplingRun(g_u, g_c, seeds, choice_u, choice_c, guidance, geometry, record, root)


def _sample_scenes(run: SamplingRun, viewset: str, classes: str, batch_size: int, cpu: bool) -> list[Path]:
    """Sample the run's seeds into its folder on this process's device (its share of them under `accelerate
    launch`); returns the scenes written. A folder made by other models or settings is refused."""
    from accelerate import PartialState

    from iterview.io import removed_if_failed
    from iterview.pipeline.runinfo import recorded_run
    from iterview.pipeline.sampling import sample_viewset

    state = PartialState(cpu=cpu)
    with removed_if_failed(run.root), recorded_run(run.root, run.record):
        return sample_viewset(
            run.g_u.to(state.device),
            None if run.g_c is None else run.g_c.to(state.device),
            run.root,
            run.seeds,
            viewset=viewset,
            classes=classes,
            batch_size=batch_size,
            sampler_uncond=run.sampler_uncond,
            sampler_cond=run.sampler_cond,
            guidance=run.guidance,
            geometry=run.geometry,
            rank=state.process_index,
            world_size=state.num_processes,
            progress=state.is_local_main_process,
            made_by=run.record,
        )


def lift(
    ctx: typer.Context,
    photos: Annotated[list[Path], typer.Argument(help="Photos to lift (any common format, size and aspect).")],
    cond: Annotated[
        str,
        typer.Option(help="G_c: a shipped set (synth), a run, a model folder, or an official .pt (+ --config-cond)."),
    ],
    output: Annotated[Path, typer.Option(help="Output folder; with several photos, one sub-folder per photo.")],
    uncond: Annotated[
        str | None, typer.Option(help="G_u, only to inpaint the --pad padding of view 0 (default: G_c does).")
    ] = None,
    config_cond: Annotated[Path | None, typer.Option(help="Config of an official G_c .pt.")] = None,
    config_uncond: Annotated[Path | None, typer.Option(help="Config of an official G_u .pt.")] = None,
    depth_model: Annotated[
        str | None, typer.Option(help="transformers depth model, hub id or folder (default: Intel/dpt-beit-large-512).")
    ] = None,
    depth: Annotated[
        list[Path] | None, typer.Option(help="Depth file (.npz/.npy/16-bit .png) per photo, in order (repeatable).")
    ] = None,
    depth_kind: Annotated[
        str | None, typer.Option(help="official, disparity or depth (default: the model's own; official for files).")
    ] = None,
    class_label: Annotated[int | None, typer.Option("--class", help="Class label (default: the null class).")] = None,
    viewset: Annotated[
        str, typer.Option(help="orbit:N, swing, swing:N, 3x9 or a .json/.yaml camera file.")
    ] = "orbit:8",
    pad: Annotated[
        bool, typer.Option(help="Keep the whole photo (G_c fills the padding) instead of a centre crop.")
    ] = False,
    seed: int = 0,
    sampler: Annotated[str, typer.Option(help="official (G_c DDIM-50) or fast (DDIM-10, CFG window).")] = "official",
    guidance: Annotated[
        float | None, typer.Option(help="Classifier-free strength w (with --class; default: a shipped set's, else 3).")
    ] = None,
    cpu: Annotated[bool, typer.Option(help="Run on the CPU even when a GPU is present.")] = False,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite", help="Replace a scene of another photo or settings that the output holds under its name."
        ),
    ] = False,
) -> None:
    """Lift photos into scenes: the photo is view 0, its depth comes from a depth model or a file, and G_c
    generates every further view; writes the scene, grids, a fusion video and PLY / GLB / NeRF exports.

    Every photo is checked before any sampling; bad ones are reported and skipped, and the exit status is 1 if
    any photo failed. A photo already lifted with the same settings is not sampled again; a scene of another
    photo or settings in its output folder is replaced only with --overwrite."""
    lifter = _photo_lifter(ctx.params)
    folders = [output] if len(photos) == 1 else [output / name for name in photo_folders(photos)]
    jobs, failed = _checked_jobs(lifter, photos, depth or [None] * len(photos), folders, overwrite)
    for view, folder, done in jobs:
        root = lifter.lift(view, folder, overwrite=overwrite)
        typer.echo(f"{view.photo} -> {root}" + (" (already lifted)" if done else ""))
    if failed:
        typer.echo(f"{len(failed)} of {len(photos)} photo(s) failed: {', '.join(map(str, failed))}", err=True)
        raise typer.Exit(1)


def _photo_lifter(options: dict[str, Any]) -> PhotoLifter:
    """Check the lift command's options (depth files or a depth model, one file per photo) and load its models
    and depth model."""
    import torch

    from iterview.pipeline.lift import LiftSettings, PhotoLifter, load_lift_models

    photos, depth, depth_model = options["photos"], options["depth"], options["depth_model"]
    if depth and depth_model:
        raise ValueError("give --depth files or --depth-model, not both")
    if depth and len(depth) != len(photos):
        raise ValueError(f"{len(depth)} --depth file(s) for {len(photos)} photo(s): give one per photo")
    device = torch.device("cuda" if torch.cuda.is_available() and not options["cpu"] else "cpu")
    settings = LiftSettings.from_options(options, depth_files=bool(depth))
    models = [options[name] for name in ("cond", "uncond", "config_cond", "config_uncond")]
    return PhotoLifter(load_lift_models(*models, device), settings, device, progress=True)


def _checked_jobs(
    lifter: PhotoLifter, photos: list[Path], depths: list[Path | None], folders: list[Path], overwrite: bool
) -> tuple[list[tuple[FirstView, Path, bool]], list[Path]]:
    """Every photo's first view and output folder, checked before any sampling (a bad photo or depth file, or a
    folder holding another scene under its name unless overwrite), with whether it is already lifted there; and
    the photos that failed, each reported as it fails."""
    jobs, failed = [], []
    for photo, depth_file, folder in zip(photos, depths, folders, strict=True):
        try:
            view = lifter.first_view(photo, depth_file)
            jobs.append((view, folder, not overwrite and lifter.already_lifted(view, folder)))
        except (ValueError, FileNotFoundError) as error:
            failed.append(photo)
            typer.echo(f"error: {error}", err=True)
    return jobs, failed


def photo_folders(photos: list[Path]) -> list[str]:
    """One output folder name per photo: its stem, or stem_ext where two photos share a stem."""
    stems = [photo.stem for photo in photos]
    return [
        f"{photo.stem}_{photo.suffix.lstrip('.')}" if stems.count(photo.stem) > 1 else photo.stem for photo in photos
    ]
