"""`iterview render` and `iterview export` (heavy imports stay inside the commands)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer


def _fail(error: Exception) -> typer.BadParameter:
    return typer.BadParameter(str(error))


def _run_root(path: Path) -> Path:
    """The run folder of a scene argument: the folder above `scenes/`, else the folder itself (or the file's)."""
    folder = path.parent if path.suffix in (".npz", ".json") else path
    return folder.parent if folder.name == "scenes" else folder


def render(
    scenes: Annotated[Path, typer.Argument(help="A run folder (with scenes/), a scenes folder or one scene file.")],
    output_dir: Annotated[
        Path | None, typer.Option(help="Where videos/ (or results/) go; default: the run folder.")
    ] = None,
    traj: Annotated[str, typer.Option(help="swing, orbit, random, or a .json/.yaml camera file.")] = "swing",
    frames: Annotated[int, typer.Option(help="Frames for swing and orbit.")] = 60,
    fps: int = 30,
    ssaa: Annotated[
        int | None, typer.Option(help="Supersampling of the fusion render [the scene's, official 5].")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random trajectory (combined with each scene's name).")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Render scenes whose outputs already exist again.")] = False,
    cpu: Annotated[bool, typer.Option(help="Render on the CPU even when a GPU is present.")] = False,
) -> None:
    """Fusion-based free-view rendering of saved scenes to mp4 (colour and depth), or one random view each."""
    import torch
    from accelerate import PartialState
    from tqdm.auto import tqdm

    from iterview.pipeline.scene import Scene, find_scenes
    from iterview.render.video import render_scene_video
    from iterview.seeds import derive_seed

    try:
        root, stems = _run_root(scenes), find_scenes(scenes)
    except FileNotFoundError as error:
        raise _fail(error) from error
    if frames < 1 or (ssaa is not None and ssaa < 1):
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
        scene = Scene.load(stem).to(state.device)
        if ssaa is not None:
            scene.geometry = replace(scene.geometry, fusion_ssaa=ssaa)
        generator = torch.Generator().manual_seed(derive_seed(seed, name))
        render_scene_video(scene, out, name, traj, frames, fps, generator, progress=state.is_local_main_process)
        done += 1
    typer.echo(f"rendered {done} scene(s) into {out}")


def export(
    scenes: Annotated[Path, typer.Argument(help="A run folder (with scenes/), a scenes folder or one scene file.")],
    output_dir: Annotated[
        Path | None, typer.Option(help="Default: <run folder>/exports; one folder per scene.")
    ] = None,
    format: Annotated[list[str] | None, typer.Option(help="ply, glb, nerf (repeatable; default all).")] = None,
    atol: Annotated[float | None, typer.Option(help="Discontinuity tolerance [the scene's].")] = None,
    rtol: Annotated[float | None, typer.Option(help="Discontinuity tolerance [the scene's].")] = None,
) -> None:
    """Export scenes to a coloured point cloud and fused mesh (PLY, GLB) and a NeRF / 3DGS folder."""
    from iterview.pipeline.scene import Scene, find_scenes
    from iterview.render.export import FORMATS, export_scene

    try:
        root, stems = _run_root(scenes), find_scenes(scenes)
        formats = format or list(FORMATS)
        if set(formats) - set(FORMATS):
            raise ValueError(f"unknown --format {sorted(set(formats) - set(FORMATS))}: expected {', '.join(FORMATS)}")
    except (ValueError, FileNotFoundError) as error:
        raise _fail(error) from error
    out = output_dir or root / "exports"
    tolerances = {k: v for k, v in (("atol", atol), ("rtol", rtol)) if v is not None}
    for stem in stems:
        scene = Scene.load(stem)
        try:
            scene.geometry = replace(scene.geometry, **tolerances)
        except ValueError as error:
            raise _fail(error) from error
        export_scene(scene, out / stem.name, formats)
    typer.echo(f"exported {len(stems)} scene(s) into {out}")
