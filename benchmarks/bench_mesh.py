"""depth_to_mesh at 128² (frustum padding, normals, discontinuity and erosion flags) against the official timing.

Prints one JSON line: wall and process CPU ms per mesh for batch 1 and 16 on each available device, the official
CPU figure (`warping/official_cpu_timing.json` in the reference folder, `ITERVIEW_REFERENCE` or
../shared/reference; numpy on a 2-core CPU) and the speed-up ratios (null without the reference file).
Run: python benchmarks/bench_mesh.py [--repeats 20] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from iterview.geometry.cameras import orbit_camera
from iterview.geometry.mesh import depth_to_mesh

DEFAULT_REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
OFFICIAL_KEY = "depth_to_mesh_128_frustum_normals_flags_s"


def official_seconds() -> float | None:
    """The official seconds per mesh from the reference folder's timing file, None where it is missing."""
    path = Path(os.environ.get("ITERVIEW_REFERENCE") or DEFAULT_REFERENCE) / "warping" / "official_cpu_timing.json"
    if not path.is_file():
        print(f"warning: {path} not found: the official figure and ratios are null", file=sys.stderr)
        return None
    return float(json.loads(path.read_text())[OFFICIAL_KEY])


def scene_depth(batch: int, size: int, device: torch.device) -> torch.Tensor:
    """A sphere in front of a plane: smooth regions plus real discontinuities, as in the official test scene."""
    coords = (torch.arange(size, device=device) + 0.5) / size - 0.5
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    radius = (x**2 + y**2).sqrt()
    sphere = 0.9 - (0.3**2 - radius.clamp(max=0.3) ** 2).sqrt()
    depth = torch.where(radius < 0.3, sphere, torch.full_like(radius, 1.9))
    return depth.expand(batch, size, size).contiguous()


def time_per_mesh(batch: int, device: torch.device, repeats: int) -> tuple[float, float]:
    """Median wall and process CPU seconds per mesh."""
    depth = scene_depth(batch, 128, device)
    cameras = orbit_camera(torch.linspace(-0.6, 0.6, batch), torch.zeros(batch)).to(device)
    options = dict(padding="frustum", atol=0.03, rtol=0.03, erode_rgb=3, compute_normals=True)

    def run() -> None:
        depth_to_mesh(depth, cameras, **options)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    run()  # warm-up
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return sorted(walls)[len(walls) // 2] / batch, sorted(cpus)[len(cpus) // 2] / batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run: one repeat")
    args = parser.parse_args()
    if args.quick:
        args.repeats = 1
    official_s = official_seconds()
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    result: dict[str, object] = {
        "benchmark": "depth_to_mesh_128_frustum_normals_flags",
        "official_cpu_ms_per_mesh": None if official_s is None else official_s * 1e3,
        "cpu_threads": torch.get_num_threads(),
    }
    for device in devices:
        for batch in (1, 16):
            seconds, cpu = time_per_mesh(batch, device, args.repeats)
            result[f"ours_{device.type}_b{batch}_ms_per_mesh"] = round(seconds * 1e3, 3)
            result[f"ours_{device.type}_b{batch}_process_cpu_ms_per_mesh"] = round(cpu * 1e3, 3)
            result[f"speedup_{device.type}_b{batch}"] = None if official_s is None else round(official_s / seconds, 2)
            result[f"speedup_{device.type}_b{batch}_process_cpu"] = (
                None if official_s is None else round(official_s / cpu, 2)
            )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
