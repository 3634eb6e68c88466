"""`iterview render` and `iterview export` (heavy imports stay inside the commands)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer


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
        int | None, typer.Option(help="Supersampling of the fusion render (default: the scene's; official: 5).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random trajectory (combined with each scene's name).")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Render scenes whose outputs already exist again.")] = False,
    cpu: Annotated[bool, typer.Option(help="Render on the CPU even when a GPU is present.")] = False,
) -> None:
    """Fusion-based free-view rendering of saved scenes to mp4 (colour and depth), or one random view each."""
    import torch
    from accelerate import PartialState
    from tqdm.auto import tqdm

    from iterview import validate
    from iterview.errors import BatchReport
    from iterview.pipeline.scene import Scene, find_scenes
    from iterview.render.video import make_trajectory, render_scene_video
    from iterview.seeds import derive_seed

    for option, value in (("--frames", frames), ("--fps", fps), ("--ssaa", ssaa)):
        validate.at_least(option, value)
    make_trajectory(traj, frames, torch.Generator().manual_seed(seed))  # a bad camera file fails before any work
    root, stems = _run_root(scenes), find_scenes(scenes)
    out = output_dir or root
    state = PartialState(cpu=cpu)
    report = BatchReport("some scenes could not be rendered", scenes)
    for stem in tqdm(
        stems[state.process_index :: state.num_processes], desc="scenes", disable=not state.is_local_main_process
    ):
        name = stem.name
        target = out / "results" / f"{name}.png" if traj == "random" else out / "videos" / f"{name}_depth.mp4"
        if target.exists() and not overwrite:
            continue

        def job(stem=stem, name=name) -> None:
            scene = Scene.load(stem).to(state.device)
            if ssaa is not None:
                scene.geometry = replace(scene.geometry, fusion_ssaa=ssaa)
            generator = torch.Generator().manual_seed(derive_seed(seed, name))
            render_scene_video(scene, out, name, traj, frames, fps, generator, progress=state.is_local_main_process)

        report.run(str(stem), job)
    typer.echo(f"rendered {report.done} scene(s) into {out}")
    report.finish()


def export(
    scenes: Annotated[Path, typer.Argument(help="A run folder (with scenes/), a scenes folder or one scene file.")],
    output_dir: Annotated[
        Path | None, typer.Option(help="Default: <run folder>/exports; one folder per scene.")
    ] = None,
    format: Annotated[list[str] | None, typer.Option(help="ply, glb, nerf (repeatable; default all).")] = None,
    atol: Annotated[float | None, typer.Option(help="Discontinuity tolerance (default: the scene's).")] = None,
    rtol: Annotated[float | None, typer.Option(help="Discontinuity tolerance (default: the scene's).")] = None,
) -> None:
    """Export scenes to a coloured point cloud and fused mesh (PLY, GLB) and a NeRF / 3DGS folder."""
    from iterview import validate
    from iterview.errors import BatchReport, UserError
    from iterview.pipeline.scene import Scene, find_scenes
    from iterview.render.export import FORMATS, export_scene

    tolerances = {k: v for k, v in (("atol", atol), ("rtol", rtol)) if v is not None}
    for name, value in tolerances.items():
        validate.number(f"--{name}", value, minimum=0)
    formats = format or list(FORMATS)
    if set(formats) - set(FORMATS):
        unknown = sorted(set(formats) - set(FORMATS))
        raise UserError("unknown export format", "--format", f"{unknown}", f"pass some of {', '.join(FORMATS)}")
    root, stems = _run_root(scenes), find_scenes(scenes)
    out = output_dir or root / "exports"
    report = BatchReport("some scenes could not be exported", scenes)

    def job(stem: Path) -> None:
        scene = Scene.load(stem)
        scene.geometry = replace(scene.geometry, **tolerances)
        export_scene(scene, out / stem.name, formats)

    for stem in stems:
        report.run(str(stem), lambda stem=stem: job(stem))
    typer.echo(f"exported {report.done} scene(s) into {out}")
    report.finish()
