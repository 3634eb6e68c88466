"""Fusion-based free-view rendering of saved scenes (official `inference/render.py`): every view's mesh is
re-fused by the aggregation compositor into each trajectory camera at the scene geometry's fusion SSAA (official
5×), then written as mp4 videos."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import imageio.v2 as imageio
import torch
from tqdm.auto import tqdm

from iterview.geometry.aggregate import fusion_render
from iterview.geometry.cameras import linear_to_zbuffer, orbit_camera
from iterview.geometry.mesh import FUSION_PADDING, map_mesh
from iterview.io import atomic_path, colorize_depth, save_png, to_uint8
from iterview.pipeline.scene import Scene
from iterview.pipeline.viewsets import RANDOM_PITCH_STD, RANDOM_YAW_STD, SWING_PITCH, SWING_YAW, load_cameras

TRAJECTORIES = ("swing", "orbit", "random")
# Official render.py: 60 frames at 30 fps (the renderer's SSAA, near and far are in InferenceGeometry).


def swing_trajectory(frames: int = 60, yaw: float = SWING_YAW, pitch: float = SWING_PITCH) -> torch.Tensor:
    """Official swing: yaw = 0.6·cos t, pitch = 0.15·sin t, t = linspace(0, 2π, frames) (first = last frame)."""
    t = torch.linspace(0, 2 * math.pi, frames)
    return orbit_camera(yaw * t.cos(), pitch * t.sin())


def orbit_trajectory(frames: int = 60, pitch: float = 0.0, radius: float = 1.0) -> torch.Tensor:
    """A full 360° turn around the origin starting at the front view, without repeating the first frame."""
    yaw = torch.arange(frames) * (2 * math.pi / frames)
    return orbit_camera(yaw, torch.full_like(yaw, pitch), radius)


def random_camera(generator: torch.Generator) -> torch.Tensor:
    """Official fusion evaluation camera: yaw = clip(0.3·N, ±0.6), pitch = clip(0.15·N, ±0.15) -> (1, 4, 4)."""
    yaw, pitch = torch.randn(2, generator=generator).mul(torch.tensor([RANDOM_YAW_STD, RANDOM_PITCH_STD])).tolist()
    return orbit_camera(torch.tensor([yaw]).clamp(-0.6, 0.6), torch.tensor([pitch]).clamp(-0.15, 0.15))


def make_trajectory(spec: str, frames: int = 60, generator: torch.Generator | None = None) -> torch.Tensor:
    """`swing`, `orbit`, `random` (one camera from generator) or a JSON/YAML camera file -> (F, 4, 4)."""
    if spec == "swing":
        return swing_trajectory(frames)
    if spec == "orbit":
        return orbit_trajectory(frames)
    if spec == "random":
        return random_camera(generator if generator is not None else torch.Generator().manual_seed(0))
    if Path(spec).suffix.lower() in (".json", ".yaml", ".yml"):
        return load_cameras(spec)
    raise ValueError(f"unknown trajectory {spec!r}: expected one of {', '.join(TRAJECTORIES)} or a .json/.yaml file")


@dataclass
class FusionFrames:
    """color: (F, 3, N, N) in [0, 1]; depth: (F, 1, N, N) z-buffer of the scene's (near, far) in [0, 1];
    mask: (F, 1, N, N) bool, where any view supplied depth."""

    color: torch.Tensor
    depth: torch.Tensor
    mask: torch.Tensor


def render_fusion(
    scene: Scene,
    modelviews: torch.Tensor,
    chunk: int = 4,
    progress: bool = False,
    size: int | None = None,
    callback: Callable[[int, int], None] | None = None,
) -> FusionFrames:
    """Fuse all views of `scene` into cameras modelviews (F, 4, 4), as the official video renderer: meshes rebuilt
    with numeric padding 32 and the scene's geometry, aggregation at its fusion_ssaa× the image size, colour
    LANCZOS-downsampled (clipped first, where the official 8-bit cast wraps around). Depth is expressed with the
    scene's (near, far), not the official video's training (0.5, 100). `size`: frame size (default: the scene's).
    callback(done, total) follows each chunk of frames; an exception it raises stops rendering."""
    size = size or scene.rgbd.shape[-1]
    meshes, textures = scene.meshes(FUSION_PADDING)
    modelviews = modelviews.to(scene.rgbd.device)
    frames = []
    for start in tqdm(range(0, len(modelviews), chunk), desc="frames", disable=not progress, leave=False):
        cameras = modelviews[start : start + chunk]
        n = len(cameras)
        frames.append(
            fusion_render(
                [map_mesh(m, lambda v, n=n: v.expand(n, *v.shape[1:])) for m in meshes],
                [t.expand(n, *t.shape[1:]) for t in textures],
                cameras,
                size,
                scene.geometry,
            )
        )
        if callback is not None:
            callback(start + n, len(modelviews))
    return FusionFrames(
        torch.cat([f.color for f in frames]),
        linear_to_zbuffer(torch.cat([f.depth for f in frames]), scene.near, scene.far),
        torch.cat([f.mask for f in frames]),
    )


def write_video(frames: torch.Tensor, path: str | Path, fps: int = 30) -> Path:
    """Atomically write frames (F, 3, H, W) in [0, 1] as an H.264 mp4 (imageio-ffmpeg)."""
    path = Path(path)
    with atomic_path(path, keep_suffix=True) as tmp:  # ffmpeg picks the container from the suffix
        # bitexact keeps the encoder's version string out of the file, so equal frames give equal bytes.
        writer = imageio.get_writer(
            tmp,
            format="FFMPEG",
            fps=fps,
            codec="libx264",
            macro_block_size=2,
            ffmpeg_log_level="error",
            output_params=["-fflags", "+bitexact", "-flags:v", "+bitexact"],
        )
        try:
            for frame in frames:
                writer.append_data(to_uint8(frame))
        finally:
            writer.close()
    return path


def render_scene_video(
    scene: Scene,
    output_dir: str | Path,
    name: str,
    trajectory: str = "swing",
    frames: int = 60,
    fps: int = 30,
    generator: torch.Generator | None = None,
    progress: bool = False,
    size: int | None = None,
    callback: Callable[[int, int], None] | None = None,
) -> list[Path]:
    """Render `scene` along a trajectory: `videos/<name>.mp4` and `videos/<name>_depth.mp4` (inverted inferno,
    empty pixels black) under output_dir; the `random` trajectory writes one image `results/<name>.png`, the
    official fusion evaluation set. callback(done, total) follows each chunk of frames. Returns the files written."""
    output_dir = Path(output_dir)
    cameras = make_trajectory(trajectory, frames, generator)
    fused = render_fusion(scene, cameras, progress=progress, size=size, callback=callback)
    if trajectory == "random":
        return [save_png(fused.color[0], output_dir / "results" / f"{name}.png")]
    depth = colorize_depth(fused.depth) * fused.mask
    return [
        write_video(fused.color, output_dir / "videos" / f"{name}.mp4", fps),
        write_video(depth, output_dir / "videos" / f"{name}_depth.mp4", fps),
    ]
