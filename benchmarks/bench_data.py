"""Data pipeline throughput: synth images/s, RGBDDataset items/s and WarpPairDataset pairs/s with 0 and N workers.

The official training pair costs at least one forward-backward warp (`warping/official_cpu_timing.json`: moderngl
with software OpenGL on a 2-core CPU, 128², before loading and augmentations); its pairs/s is printed beside ours.
Prints one JSON line. Run from the project root: python benchmarks/bench_data.py [--size 128] [--count 64]
[--workers 2] [--quick]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from iterview.data.datasets import RGBDDataset, WarpPairDataset
from iterview.data.synth import write_synth_dataset

OFFICIAL_TIMING = Path(__file__).resolve().parents[2] / "shared" / "reference" / "warping" / "official_cpu_timing.json"
OFFICIAL_FALLBACK_S = 0.067  # the figure in that file, for checkouts without the reference folder


def items_per_second(dataset, workers: int, batch_size: int = 8) -> float:
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers)
    start = time.perf_counter()
    count = sum(len(batch["x_0"]) for batch in loader)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--count", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run: 8 images of 32 px, 1 worker")
    args = parser.parse_args()
    if args.quick:
        args.size, args.count, args.workers = 32, 8, 1
    official_s = OFFICIAL_FALLBACK_S
    if OFFICIAL_TIMING.is_file():
        official_s = json.loads(OFFICIAL_TIMING.read_text())["forward_backward_warp_128_ssaa3_s"]
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        root = write_synth_dataset(Path(folder) / "synth", args.count, args.size, seed=0)
        synth_rate = args.count / (time.perf_counter() - start)
        rgbd_rate = items_per_second(RGBDDataset(root, args.size), workers=0)
        pairs = WarpPairDataset(root, args.size)
        pairs_serial = items_per_second(pairs, workers=0)
        pairs_parallel = items_per_second(pairs, workers=args.workers)
    result = {
        "benchmark": f"data_pipeline_{args.size}",
        "cpu_threads": torch.get_num_threads(),
        "synth_images_per_s": round(synth_rate, 1),
        "rgbd_items_per_s": round(rgbd_rate, 1),
        "pairs_per_s_workers0": round(pairs_serial, 2),
        f"pairs_per_s_workers{args.workers}": round(pairs_parallel, 2),
    }
    if args.size == 128:  # the official figure is for 128² images
        result["official_warp_only_pairs_per_s"] = round(1 / official_s, 2)
        result["speedup_workers0_vs_official"] = round(pairs_serial * official_s, 2)
        result[f"speedup_workers{args.workers}_vs_official"] = round(pairs_parallel * official_s, 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
