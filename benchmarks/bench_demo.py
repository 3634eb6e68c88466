"""Time `iterview demo` stage by stage and print one JSON line.

The official code has no equivalent to run beside it: it needs an NVIDIA GPU with EGL for its renderer and
CUDA for sampling and metrics, so on a CPU-only machine its figure is null. The line gives the total against the
5-minute budget of the full demo (shipped models) on two CPU cores.

    python benchmarks/bench_demo.py [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from iterview.demo import FULL, QUICK, run_demo

BUDGET_S = {"full": 5 * 60, "quick": 2 * 60}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="time the reduced CI run")
    parser.add_argument("--out", type=Path, help="keep the demo output here (default: a temporary folder)")
    parser.add_argument("--cpu", action="store_true", help="stay on the CPU even when a GPU is present")
    args = parser.parse_args()
    mode = "quick" if args.quick else "full"
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_demo_"))
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty: a resumed run would not time every stage")
    start = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # the stages' own messages: stdout keeps the one JSON line
        report = run_demo(out, QUICK if args.quick else FULL, cpu=args.cpu, progress=False)
    total = time.perf_counter() - start
    timings = json.loads(report.with_suffix(".json").read_text())["timings_s"]
    line = {
        "bench": "demo",
        "mode": mode,
        "cpu_threads": os.cpu_count(),
        "total_s": round(total, 1),
        "stages_s": timings,
        "budget_s": BUDGET_S[mode],
        "within_budget": total <= BUDGET_S[mode],
        "official_s": None,  # no CPU path: EGL renderer + CUDA
    }
    print(json.dumps(line))
    if args.out is None:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
