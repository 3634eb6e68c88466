"""`iterview sample`, `iterview render` and `iterview export` (heavy imports stay inside the commands)."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Annotated

import typer

SAMPLER_PRESETS = ("official", "fast")
FAST_STEPS = 20


def resolve_samplers(
    preset: str = "official",
    sampler_uncond: str | None = None,
    sampler_cond: str | None = None,
    steps_uncond: int | None = None,
    steps_cond: int | None = None,
    timesteps: int = 1000,
):
    """Sampler per model. official: G_u DDPM over all T steps (DDIM when fewer steps are asked, as the official
    --steps_uncond), G_c DDIM-50; fast: DPM-Solver++(2M) with 20 steps for both. Names and steps override."""
    from iterview.pipeline.multiview import SamplerChoice

    if preset not in SAMPLER_PRESETS:
        raise ValueError(f"unknown sampler preset {preset!r}: expected one of {', '.join(SAMPLER_PRESETS)}")
    default_steps = {"ddpm": timesteps, "ddim": 50, "dpmpp": FAST_STEPS}
    if preset == "fast":
        name_u, name_c = "dpmpp", "dpmpp"
    else:
        name_u = "ddim" if steps_uncond is not None and steps_uncond < timesteps else "ddpm"
        name_c = "ddim"
    name_u, name_c = sampler_uncond or name_u, sampler_cond or name_c

    def choice(name: str, steps: int | None) -> SamplerChoice:
        # DDPM always walks every step (the official sampler ignores `steps`).
        return SamplerChoice(name, timesteps if name == "ddpm" else steps or default_steps.get(name, 0))

    return choice(name_u, steps_uncond), choice(name_c, steps_cond)


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
    fov: float = 45.0,
    near: Annotated[float, typer.Option(help="Depth channel z-buffer near plane at inference.")] = 0.6,
    far: Annotated[float, typer.Option(help="Depth channel z-buffer far plane at inference.")] = 5.0,
    atol: float = 0.03,
    rtol: float = 0.03,
    erode_rgb: int = 3,
    cpu: Annotated[bool, typer.Option(help="Sample on the CPU even when a GPU is present.")] = False,
) -> None:
    """Sample multi-view scenes: view 0 from G_u, every further view from G_c conditioned on all previous ones.

    Re-running the same command skips finished instances. Multi-GPU: `accelerate launch -m iterview.cli sample ...`.
    """
    from accelerate import PartialState

    from iterview.models.checkpoint import load_model
    from iterview.pipeline.multiview import Guidance, InferenceGeometry
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
        geometry=InferenceGeometry(fov=fov, near=near, far=far, atol=atol, rtol=rtol, erode_rgb=erode_rgb),
        rank=state.process_index,
        world_size=state.num_processes,
        progress=state.is_local_main_process,
    )
    typer.echo(f"{len(written)} new scene(s) in {root}")


def find_scenes(path: Path) -> tuple[Path, list[Path]]:
    """A scene file, a folder of scene files or a run folder (with scenes/) -> (run root, scene stems)."""
    if path.suffix in (".npz", ".json"):
        if not path.is_file():
            raise FileNotFoundError(f"scene file not found: {path}")
        stem = path.with_suffix("")
        return (stem.parent.parent if stem.parent.name == "scenes" else stem.parent), [stem]
    if not path.is_dir():
        raise FileNotFoundError(f"expected a scene file, a scenes folder or a run folder, found nothing at {path}")
    folder = path / "scenes" if (path / "scenes").is_dir() else path
    stems = sorted(p.with_suffix("") for p in folder.glob("*.json"))
    if not stems:
        raise FileNotFoundError(f"no scenes (*.json + *.npz) in {folder}")
    return (folder.parent if folder.name == "scenes" else folder), stems


def render(
    scenes: Annotated[Path, typer.Argument(help="A run folder (with scenes/), a scenes folder or one scene file.")],
    output_dir: Annotated[
        Path | None, typer.Option(help="Where videos/ (or results/) go; default: the run folder.")
    ] = None,
    traj: Annotated[str, typer.Option(help="swing, orbit, random, or a .json/.yaml camera file.")] = "swing",
    frames: Annotated[int, typer.Option(help="Frames for swing and orbit.")] = 60,
    fps: int = 30,
    ssaa: Annotated[int, typer.Option(help="Supersampling of the fusion render (official 5).")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the random trajectory (combined with each scene's name).")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Render scenes whose outputs already exist again.")] = False,
    cpu: Annotated[bool, typer.Option(help="Render on the CPU even when a GPU is present.")] = False,
) -> None:
    """Fusion-based free-view rendering of saved scenes to mp4 (colour and depth), or one random view each."""
    import torch
    from accelerate import PartialState
    from tqdm.auto import tqdm

    from iterview.pipeline.scene import Scene
    from iterview.render.video import render_scene_video

    try:
        root, stems = find_scenes(scenes)
    except FileNotFoundError as error:
        raise _fail(error) from error
    if frames < 1 or ssaa < 1:
        raise typer.BadParameter(f"--frames and --ssaa must be >= 1, got {frames} and {ssaa}")
    out = output_dir or root
    state = PartialState(cpu=cpu)
    done = 0
    for stem in tqdm(
        stems[state.process_index :: state.num_processes], desc="scenes", disable=not state.is_local_main_process
    ):
        name = stem.name
        target = out / "results" / f"{name}.png" if traj == "random" else out / "videos" / f"{name}_depth.mp4"
        if target.exists() and not overwrite:
            continue
        scene = Scene.load(stem)
        scene.rgbd, scene.modelviews = scene.rgbd.to(state.device), scene.modelviews.to(state.device)
        generator = torch.Generator().manual_seed(zlib.crc32(f"{seed}:{name}".encode()))
        render_scene_video(scene, out, name, traj, frames, fps, ssaa, generator, progress=state.is_local_main_process)
        done += 1
    typer.echo(f"rendered {done} scene(s) into {out}")


def export(
    scenes: Annotated[Path, typer.Argument(help="A run folder (with scenes/), a scenes folder or one scene file.")],
    output_dir: Annotated[
        Path | None, typer.Option(help="Default: <run folder>/exports; one folder per scene.")
    ] = None,
    format: Annotated[list[str] | None, typer.Option(help="ply, glb, nerf (repeatable; default all).")] = None,
    atol: float = 0.03,
    rtol: float = 0.03,
) -> None:
    """Export scenes to a coloured point cloud and fused mesh (PLY, GLB) and a NeRF / 3DGS folder."""
    from iterview.pipeline.scene import Scene
    from iterview.render.export import FORMATS, export_scene

    try:
        root, stems = find_scenes(scenes)
        formats = format or list(FORMATS)
        if set(formats) - set(FORMATS):
            raise ValueError(f"unknown --format {sorted(set(formats) - set(FORMATS))}: expected {', '.join(FORMATS)}")
    except (ValueError, FileNotFoundError) as error:
        raise _fail(error) from error
    out = output_dir or root / "exports"
    for stem in stems:
        export_scene(Scene.load(stem), out / stem.name, formats, atol, rtol)
    typer.echo(f"exported {len(stems)} scene(s) into {out}")
