"""Runs in real separate processes: a training run and a sampling run killed with SIGKILL at a known point, then
rerun, give the result of an uninterrupted run with nothing duplicated, lost or left half-written; sampling under
`accelerate launch` gives the single-process files."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file
from test_pipeline import tiny
from test_training import SMALL
from typer.testing import CliRunner

from iterview.cli import app
from iterview.data.synth import write_synth_dataset
from iterview.models.checkpoint import save_model
from iterview.training.state import checkpoint_dirs

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

ROOT = Path(__file__).resolve().parents[1]
TRAIN = {**SMALL, "batch_size": 2, "save_every": 3, "keep_last": None, "max_steps": 8}


def run_then_kill(tmp_path: Path, target: str, count: int, arguments: list[str]) -> None:
    """Start `iterview ARGUMENTS` in a fresh process, wait until it reaches the COUNT-th call of TARGET, SIGKILL it."""
    marker = tmp_path / f"stopped-{time.monotonic_ns()}"
    command = [sys.executable, str(ROOT / "tests" / "stop_at.py"), str(marker), target, str(count), "--", *arguments]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert process.poll() is None, f"the run ended before the kill point:\n{process.stdout.read()[-3000:]}"
            assert time.monotonic() < deadline, "the run never reached the kill point"
            time.sleep(0.05)
    finally:
        process.kill()  # SIGKILL: no exception handler, no atexit, no flush
        process.communicate()
    assert process.returncode == -9


def digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return write_synth_dataset(tmp_path_factory.mktemp("synth"), count=8, image_size=16, seed=0)


def train_arguments(synth: Path, output: Path) -> list[str]:
    settings = [a for k, v in TRAIN.items() for a in ("--set", f"{k}={json.dumps(v)}")]
    return ["train", "--preset", "tiny", "--data", str(synth), "--output", str(output), "--no-progress", *settings]


def sample_arguments(tmp_path: Path) -> list[str]:
    """`iterview sample` of four random-viewset instances, one at a time, with tiny models saved in tmp_path."""
    g_u, g_c = save_model(*tiny(4, 1), tmp_path / "gu"), save_model(*tiny(10, 2), tmp_path / "gc")
    base = ["sample", "--uncond", str(g_u), "--cond", str(g_c), "--viewset", "random", "--seeds", "0-3"]
    return [*base, "--sampler", "fast", "--steps-uncond", "2", "--steps-cond", "2", "--batch-size", "1", "--cpu"]


def test_training_killed_mid_checkpoint_resumes_to_the_uninterrupted_result(synth, tmp_path):
    straight = tmp_path / "straight"
    result = CliRunner().invoke(app, train_arguments(synth, straight))
    assert result.exit_code == 0, result.output

    killed = tmp_path / "killed"
    # Checkpoints at steps 3, 6 and 8, each writing model then ema: the 4th save_model is the ema of step 6, so
    # the kill lands with step 6 half on disk and the log already at step 6.
    run_then_kill(tmp_path, "iterview.training.state:save_model", 4, train_arguments(synth, killed))
    assert [p.name for p in checkpoint_dirs(killed)] == ["step_0000003"]
    assert (killed / "checkpoints" / ".step_0000006.tmp").is_dir(), "killed mid-save"
    logged = [json.loads(line)["step"] for line in (killed / "log.jsonl").read_text().splitlines()]
    assert logged == list(range(1, 7))

    result = CliRunner().invoke(app, ["train", "--output", str(killed), "--resume", "--no-progress"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (killed / "log.jsonl").read_text().splitlines()]
    expected = [json.loads(line) for line in (straight / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, TRAIN["max_steps"] + 1)), "no step lost or repeated"
    assert [r["loss"] for r in records] == [r["loss"] for r in expected]
    assert [p.name for p in checkpoint_dirs(killed)] == [p.name for p in checkpoint_dirs(straight)]
    assert not list((killed / "checkpoints").glob(".*")), "the half-written checkpoint is gone"
    for checkpoint in checkpoint_dirs(straight):
        for name in ("model/model.safetensors", "ema/model.safetensors", "optimizer.safetensors"):
            a, b = load_file(checkpoint / name), load_file(killed / "checkpoints" / checkpoint.name / name)
            assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a), (checkpoint.name, name)


def test_sampling_killed_mid_instance_resumes_to_the_uninterrupted_result(tmp_path):
    base = sample_arguments(tmp_path)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    result = CliRunner().invoke(app, [*base, "--output-dir", str(straight)])
    assert result.exit_code == 0, result.output

    # A random-viewset instance writes three PNGs, then its scene: the 5th PNG is the 2nd of instance 1.
    run_then_kill(tmp_path, "iterview.pipeline.sampling:save_png", 5, [*base, "--output-dir", str(killed)])
    (run,) = [p.name for p in straight.iterdir()]
    partial = digests(killed / run)
    assert sum(name.startswith("scenes/") for name in partial) == 2, "only instance 0 is finished"
    assert len([n for n in partial if n.endswith(".png")]) == 4, "instance 1 was cut off mid-way"

    result = CliRunner().invoke(app, [*base, "--output-dir", str(killed)])
    assert result.exit_code == 0, result.output
    assert digests(killed / run) == digests(straight / run), "same files, same bytes, nothing extra"


def test_accelerate_launch_of_sampling_splits_the_seeds_and_matches_one_process(tmp_path):
    """`accelerate launch` with two processes sharing the seeds: together they write exactly the
    files, byte for byte, of a single-process run."""
    import socket

    base = sample_arguments(tmp_path)
    single, launched = tmp_path / "single", tmp_path / "launched"
    result = CliRunner().invoke(app, [*base, "--output-dir", str(single)])
    assert result.exit_code == 0, result.output

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    launch += ["--main_process_port", str(port), "-m", "iterview", *base, "--output-dir", str(launched)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(launch, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = [p.name for p in single.iterdir()]
    assert digests(launched / run) == digests(single / run)
