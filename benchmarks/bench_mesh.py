"""depth_to_mesh at 128² (frustum padding, normals, discontinuity and erosion flags) against the official timing.

Prints one JSON line: ms per mesh for batch 1 and 16 on each available device, the official CPU figure
(`warping/official_cpu_timing.json`, numpy on a 2-core CPU) and the speed-up ratios.
Run: python benchmarks/bench_mesh.py [--repeats 20] [--quick]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from iterview.geometry.cameras import orbit_camera
from iterview.geometry.mesh import depth_to_mesh

OFFICIAL_TIMING = Path(__file__).resolve().parents[2] / "shared" / "reference" / "warping" / "official_cpu_timing.json"
OFFICIAL_FALLBACK_S = 0.014  # the figure in that file, for checkouts without the reference folder


def scene_depth(batch: int, size: int, device: torch.device) -> torch.Tensor:
    """A sphere in front of a plane: smooth regions plus real discontinuities, as in the official test scene."""
    coords = (torch.arange(size, device=device) + 0.5) / size - 0.5
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    radius = (x**2 + y**2).sqrt()
    sphere = 0.9 - (0.3**2 - radius.clamp(max=0.3) ** 2).sqrt()
    depth = torch.where(radius < 0.3, sphere, torch.full_like(radius, 1.9))
    return depth.expand(batch, size, size).contiguous()


def time_per_mesh(batch: int, device: torch.device, repeats: int) -> float:
    depth = scene_depth(batch, 128, device)
    cameras = orbit_camera(torch.linspace(-0.6, 0.6, batch), torch.zeros(batch)).to(device)
    options = dict(padding="frustum", atol=0.03, rtol=0.03, erode_rgb=3, compute_normals=True)

    def run() -> None:
        depth_to_mesh(depth, cameras, **options)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] / batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run: one repeat")
    args = parser.parse_args()
    if args.quick:
        args.repeats = 1
    official_s = OFFICIAL_FALLBACK_S
    if OFFICIAL_TIMING.is_file():
        official_s = json.loads(OFFICIAL_TIMING.read_text())["depth_to_mesh_128_frustum_normals_flags_s"]
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    result: dict[str, object] = {
        "benchmark": "depth_to_mesh_128_frustum_normals_flags",
        "official_cpu_ms_per_mesh": official_s * 1e3,
        "cpu_threads": torch.get_num_threads(),
    }
    for device in devices:
        for batch in (1, 16):
            seconds = time_per_mesh(batch, device, args.repeats)
            result[f"ours_{device.type}_b{batch}_ms_per_mesh"] = round(seconds * 1e3, 3)
            result[f"speedup_{device.type}_b{batch}"] = round(official_s / seconds, 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
