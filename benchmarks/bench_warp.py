"""Warping, aggregation and fusion rendering at 128² against the official renderer's CPU timing.

Prints one JSON line with, per available device: forward-backward warps per second at 128² with 3× SSAA (batch 1
and 16), aggregations per second (aggregate_conditions over 26 source views at 128², 3× SSAA) and seconds per
fusion frame (26 views at 128² with 5× SSAA, i.e. rendered at 640²). Beside each: our wall time and process CPU
time per item, the official figure of `warping/official_cpu_timing.json` (moderngl on Mesa llvmpipe, 2 CPU
cores) and the ratios official / ours for both (null without the reference file). On a busy machine the CPU time
shows what the work costs when the wall clock does not. On CPU the compiled kernels run when numba is installed
(`cpu_backend` says which path ran).
Run: python benchmarks/bench_warp.py [--repeats 5] [--threads N] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from iterview.geometry.aggregate import aggregate_conditions, fusion_render
from iterview.geometry.cameras import linear_to_zbuffer, orbit_camera, zbuffer_to_linear
from iterview.geometry.mesh import depth_to_mesh
from iterview.geometry.raster import use_kernels
from iterview.geometry.warp import forward_backward_warp, render_simple

DEFAULT_REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
OFFICIAL_KEYS = {
    "warp": "forward_backward_warp_128_ssaa3_s",
    "aggregation": "aggregate_conditions_26_views_128_ssaa3_s",
    "fusion": "fusion_render_26_views_128_ssaa5_one_frame_s",
}
SIZE = 128
YAWS = (0.0, 0.15, -0.15, 0.30, -0.30, 0.45, -0.45, 0.60, -0.60)
PITCHES = (0.0, 0.15, -0.15)


def scene(batch: int, device: torch.device) -> torch.Tensor:
    """RGBD (B, 4, 128, 128) in [0, 1], depth as z-buffer (0.5, 100): a textured sphere in front of a plane."""
    coords = (torch.arange(SIZE, device=device) + 0.5) / SIZE - 0.5
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    radius = (x**2 + y**2).sqrt()
    sphere = 0.9 - (0.3**2 - radius.clamp(max=0.3) ** 2).sqrt()
    depth = torch.where(radius < 0.3, sphere, torch.full_like(radius, 1.9))
    checker = ((x * 8).floor() + (y * 8).floor()).remainder(2)
    color = torch.stack([0.3 + 0.5 * checker, 0.5 + 0.4 * x, torch.where(radius < 0.3, 0.8, 0.2)])
    rgbd = torch.cat([color, linear_to_zbuffer(depth, 0.5, 100)[None]])
    return rgbd.expand(batch, 4, SIZE, SIZE).contiguous()


def viewset(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The 3×9 viewset as the official sampler meets it at its last view: 26 source views (the scene rendered
    into each camera: linear depth clipped to the inference range [0.6, 5], colour, camera) and the target."""
    cameras = orbit_camera(
        torch.tensor([yaw for yaw in YAWS for _ in PITCHES]), torch.tensor([pitch for _ in YAWS for pitch in PITCHES])
    ).to(device)
    sources = cameras[:-1]
    rgbd = scene(len(sources), device)
    mesh = depth_to_mesh(zbuffer_to_linear(rgbd[:, 3], 0.5, 100), cameras[:1].expand_as(sources), padding=SIZE)
    views = render_simple(mesh, rgbd[:, :3], sources, SIZE)
    return views.depth[:, 0].clamp(0.6, 5.0), views.color, sources, cameras[-1:]


def median_seconds(run: Callable[[], object], device: torch.device, repeats: int) -> tuple[float, float]:
    """Median wall-clock seconds and median process CPU seconds of run() (CPU time tells a busy machine apart:
    with one thread it is the wall time an idle machine would show)."""

    def timed() -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - wall, time.process_time() - cpu

    for _ in range(3):  # warm-up: compiled kernels loaded, buffers mapped, caches warm
        timed()
    walls, cpus = zip(*(timed() for _ in range(repeats)), strict=True)
    return sorted(walls)[len(walls) // 2], sorted(cpus)[len(cpus) // 2]


def official_seconds() -> dict[str, float | None]:
    """The official seconds per operation from `warping/official_cpu_timing.json` in the reference folder
    (`ITERVIEW_REFERENCE` or ../shared/reference); None for each where the file is missing."""
    path = Path(os.environ.get("ITERVIEW_REFERENCE") or DEFAULT_REFERENCE) / "warping" / "official_cpu_timing.json"
    if not path.is_file():
        print(f"warning: {path} not found: the official figures and ratios are null", file=sys.stderr)
        return dict.fromkeys(OFFICIAL_KEYS)
    timing = json.loads(path.read_text())
    return {name: float(timing[key]) for name, key in OFFICIAL_KEYS.items()}


def report(name: str, seconds: float, cpu: float, official: float | None) -> dict[str, float | None]:
    """Our wall and CPU seconds per item beside the official seconds and the ratios official / ours."""
    return {
        f"{name}_wall_s": round(seconds, 4),
        f"{name}_process_cpu_s": round(cpu, 4),
        f"{name}_official_s": official,
        f"{name}_speedup_wall": None if official is None else round(official / seconds, 2),
        f"{name}_speedup_cpu": None if official is None else round(official / cpu, 2),
    }


def bench_device(device: torch.device, repeats: int, official: dict[str, float | None]) -> dict[str, object]:
    result: dict[str, object] = {}
    prefix = device.type
    for batch in (1, 16):
        rgbd = scene(batch, device)
        side = orbit_camera(torch.full((batch,), 0.15), torch.full((batch,), 0.05)).to(device)
        seconds, cpu = median_seconds(lambda rgbd=rgbd, side=side: forward_backward_warp(rgbd, side), device, repeats)
        result[f"{prefix}_warps_per_s_b{batch}"] = round(batch / seconds, 2)
        result.update(report(f"{prefix}_warp_b{batch}", seconds / batch, cpu / batch, official["warp"]))

    depth, colors, sources, target = viewset(device)
    colors = list(colors.split(1))
    inference = dict(padding="frustum", atol=0.03, rtol=0.03, erode_rgb=3, compute_normals=True)
    meshes = [depth_to_mesh(depth[k : k + 1], sources[k : k + 1], **inference) for k in range(len(sources))]
    seconds, cpu = median_seconds(lambda: aggregate_conditions(meshes, colors, target, SIZE), device, repeats)
    result[f"{prefix}_aggregations_per_s_26_views"] = round(1 / seconds, 3)
    result.update(report(f"{prefix}_aggregation", seconds, cpu, official["aggregation"]))

    fusion = dict(padding=32, atol=0.03, rtol=0.03, erode_rgb=3, compute_normals=True)
    meshes = [depth_to_mesh(depth[k : k + 1], sources[k : k + 1], **fusion) for k in range(len(sources))]
    camera = orbit_camera(torch.tensor([0.3]), torch.tensor([0.05])).to(device)
    seconds, cpu = median_seconds(lambda: fusion_render(meshes, colors, camera, SIZE), device, max(1, repeats // 2))
    result[f"{prefix}_fusion_s_per_frame_26_views"] = round(seconds, 3)
    result.update(report(f"{prefix}_fusion", seconds, cpu, official["fusion"]))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: PyTorch's choice)")
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run: 32 px, one repeat")
    args = parser.parse_args()
    if args.quick:
        global SIZE
        SIZE, args.repeats = 32, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    official = official_seconds()
    result: dict[str, object] = {
        "benchmark": "warp_aggregate_fusion_128",
        "official_cpu_warps_per_s": None if official["warp"] is None else round(1 / official["warp"], 2),
        "cpu_threads": torch.get_num_threads(),
        "cpu_backend": "numba" if use_kernels(torch.device("cpu"), "auto") else "torch",
    }
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for device in devices:
        result.update(bench_device(device, args.repeats, official))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
