"""Every benchmark script runs: `--quick` (seconds, same code path with fewer iterations and smaller sizes) exits 0
and prints exactly one JSON line with the keys its full run reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.name for p in (ROOT / "benchmarks").glob("bench_*.py"))
EXPECTED_KEYS = {
    "bench_data.py": {"benchmark", "synth_images_per_s", "rgbd_items_per_s", "pairs_per_s_workers0"},
    "bench_demo.py": {"bench", "mode", "total_s", "stages_s", "within_budget"},
    "bench_gpu.py": {"bench", "device", "unet_uncond", "unet_cond", "instance_b1", "instance_b2"},
    "bench_mesh.py": {"benchmark", "official_cpu_ms_per_mesh", "ours_cpu_b1_ms_per_mesh", "speedup_cpu_b16"},
    "bench_pipeline.py": {"bench", "official", "fast", "speedup"},
    "bench_quality.py": {"bench", "setting", "evals_instance", "fid", "class_accuracy", "psnr_all", "depth_absrel_all"},
    "bench_sampler.py": {"bench", "official", "ours", "speedup_vs_ddpm1000", "cfg_step_seconds"},
    "bench_train.py": {"bench", "images_per_s", "speedup_vs_official_fp32"},
    "bench_unet.py": {"bench", "official_b1_per_s", "sdpa_b16_ratio", "sdpa+channels_last_b16_max_abs_error"},
    "bench_warp.py": {
        "benchmark",
        "cpu_warps_per_s_b1",
        "cpu_aggregations_per_s_26_views",
        "cpu_fusion_s_per_frame_26_views",
    },
}
# The quick demo trains two models and renders videos: a minute or two, so it is the one slow entry.
SLOW = {"bench_demo.py"}
QUICK_ENV = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def test_every_benchmark_is_covered():
    assert set(SCRIPTS) == set(EXPECTED_KEYS)


@pytest.mark.parametrize(
    "script", [pytest.param(s, marks=pytest.mark.slow) if s in SLOW else s for s in sorted(EXPECTED_KEYS)]
)
def test_benchmark_quick_mode_prints_one_json_line(script):
    arguments = ["--quick", "--cpu"] if script in ("bench_demo.py", "bench_train.py") else ["--quick"]
    command = [sys.executable, str(ROOT / "benchmarks" / script), *arguments]
    done = subprocess.run(command, cwd=ROOT, env=os.environ | QUICK_ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    record = one_json_line(done.stdout)
    assert EXPECTED_KEYS[script] <= set(record), sorted(EXPECTED_KEYS[script] - set(record))
    if script == "bench_gpu.py":
        for role in ("uncond", "cond"):
            assert record[f"unet_{role}"]["fast_max_abs_error"] <= 1e-4
        # counted U-Net evaluations of the quick run (3 views, a 50-step schedule): the official path guides
        # all 50 DDPM steps and both DDIM steps of each further view
        assert record["instance_b1"]["official"]["unet_evals"] == 2 * 50 + 2 * 2 * 2
        assert record["instance_b1"]["fast"]["unet_evals"] < record["instance_b1"]["official"]["unet_evals"]


def one_json_line(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert len(lines) == 1, stdout[-3000:]
    return json.loads(lines[0])


@pytest.mark.slow
def test_gpu_script_writes_each_benchmark_line(tmp_path):
    """benchmarks/gpu.sh, the GPU run, in its quick mode on the CPU: one JSON line per benchmark, in its file."""
    env = os.environ | QUICK_ENV | {"PYTHON": sys.executable}
    done = subprocess.run(
        [str(ROOT / "benchmarks" / "gpu.sh"), str(tmp_path), "--quick"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    files = {
        "gpu.json": "bench",
        "pipeline_b1.json": "speedup",
        "pipeline_b10.json": "speedup",
        "warp.json": "benchmark",
    }
    for name, key in files.items():
        assert key in one_json_line((tmp_path / name).read_text()), name
    assert one_json_line((tmp_path / "pipeline_b10.json").read_text())["batch"] == 10
    sections = [json.loads(line) for line in (tmp_path / "gpu.jsonl").read_text().splitlines()]
    assert [s.get("batch") for s in sections] == [2, 2, 1, 2]
