"""No command loses data: killed jobs resume without loss or duplicates, reruns never shrink or replace a
dataset, sampling runs know which models made them, batches go on past bad items."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from iterview.cli import app
from iterview.data.layout import INDEX_FILE, read_index
from iterview.data.synth import write_synth_dataset
from iterview.errors import UserError
from iterview.hub import load_pretrained
from iterview.io import removed_if_failed
from iterview.models.checkpoint import build_model, save_model
from iterview.pipeline.scene import Scene
from iterview.pipeline.viewsets import grid_viewset_3x9
from iterview.training.config import load_config

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
pytestmark = pytest.mark.usefixtures("one_thread")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _kill_when(command: list[str], ready, timeout: float = 120) -> None:
    """Start command, wait until ready() holds, then SIGKILL it."""
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while not ready() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        assert process.poll() is None, "the job ended before it could be killed"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()


def test_synth_killed_then_rerun_completes_without_loss_or_duplicates(tmp_path):
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "iterview", "synth", str(out), "--count", "400", "--size", "16"]
    _kill_when(command, lambda: len(list(out.glob("depths/*/*.npz"))) >= 3)
    assert not (out / INDEX_FILE).exists()
    result = CliRunner().invoke(app, ["synth", str(out), "--count", "12", "--size", "16"])
    assert result.exit_code == 0, result.output
    write_synth_dataset(tmp_path / "whole", count=12, image_size=16)
    index = read_index(out)
    assert len(index.images) == len(set(index.images)) == 12
    assert index.images == read_index(tmp_path / "whole").images
    killed = {k: v for k, v in _files(out).items() if k.startswith(("images", "depths"))}
    for name, data in _files(tmp_path / "whole").items():
        if name.startswith(("images", "depths")):
            assert killed.pop(name) == data, name
    assert all(int(Path(name).stem) >= 12 for name in killed)  # only finished images beyond the 12, nothing partial
    assert not list(out.rglob("*.partial*"))


def test_prepare_killed_then_rerun_completes_without_loss_or_duplicates(tmp_path):
    images, depths = tmp_path / "in", tmp_path / "depths"
    images.mkdir()
    depths.mkdir()
    rng = np.random.default_rng(0)
    for i in range(300):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(images / f"{i:03d}.png")
        np.save(depths / f"{i:03d}.npy", rng.uniform(1, 9, (32, 32)).astype(np.float32))
    out = tmp_path / "out"
    args = ["prepare", str(images), str(out), "--depth-from", str(depths), "--depth-kind", "depth"]
    args += ["--num-workers", "0"]
    _kill_when([sys.executable, "-m", "iterview", *args], lambda: len(list(out.glob("depths/*.npz"))) >= 5)
    assert not (out / INDEX_FILE).exists()
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    reference = tmp_path / "reference"
    result = CliRunner().invoke(app, [*args[:2], str(reference), *args[3:]])
    assert result.exit_code == 0, result.output
    index = read_index(out)
    assert len(index.images) == len(set(index.images)) == 300
    assert index == read_index(reference)
    ours, theirs = _files(out), _files(reference)
    for name in ("prepare_report.json", "prepare.json"):
        ours.pop(name), theirs.pop(name)
    assert ours == theirs


def test_synth_smaller_count_keeps_the_larger_dataset(tmp_path):
    assert CliRunner().invoke(app, ["synth", str(tmp_path), "--count", "6", "--size", "16"]).exit_code == 0
    before = _files(tmp_path)
    result = CliRunner().invoke(app, ["synth", str(tmp_path), "--count", "2", "--size", "16"])
    assert result.exit_code == 0, result.output
    assert "kept all 6" in result.output and len(read_index(tmp_path).images) == 6
    assert {k: v for k, v in _files(tmp_path).items() if k != "synth.json"} == {
        k: v for k, v in before.items() if k != "synth.json"
    }


def test_overwrite_replaces_another_dataset(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "mine.png").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("kept")
    refused = CliRunner().invoke(app, ["synth", str(tmp_path), "--count", "2", "--size", "16"])
    assert refused.exit_code == 2 and "--overwrite" in refused.output
    result = CliRunner().invoke(app, ["synth", str(tmp_path), "--count", "2", "--size", "16", "--overwrite"])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "images" / "mine.png").exists() and (tmp_path / "notes.txt").read_text() == "kept"
    assert len(read_index(tmp_path).images) == 2


def test_prepare_skips_nan_and_non_positive_depth_with_the_reason(tmp_path):
    images, depths = tmp_path / "in", tmp_path / "depths"
    images.mkdir()
    depths.mkdir()
    maps = {"good": np.full((32, 32), 2.0), "nan": np.full((32, 32), np.nan), "neg": np.full((32, 32), -1.0)}
    for name, depth in maps.items():
        Image.fromarray(np.full((32, 32, 3), 99, np.uint8)).save(images / f"{name}.png")
        np.save(depths / f"{name}.npy", depth.astype(np.float32))
    out = tmp_path / "out"
    args = ["prepare", str(images), str(out), "--depth-from", str(depths), "--depth-kind", "depth"]
    args += ["--num-workers", "0"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "2 of 3 failed" in result.output
    report = {r["image"]: r["reason"] for r in json.loads((out / "prepare_report.json").read_text())["skipped"]}
    assert "NaN" in report["nan.png"] and "non-positive" in report["neg.png"]
    assert read_index(out).images == ["images/good.png"]


def _tiny(in_channels: int):
    config = replace(load_config(None, "tiny", []).model, image_size=16, in_channels=in_channels)
    return build_model(config), config


def test_sampling_run_records_its_models_and_redoes_a_truncated_scene(tmp_path):
    run = tmp_path / "runs" / "gu"
    save_model(*_tiny(4), run / "checkpoints" / "step_0000002" / "ema")  # a training run folder: newest EMA
    save_model(*_tiny(4), tmp_path / "other")
    args = ["sample", "--uncond", str(run), "--viewset", "uncond", "--steps-uncond", "2", "--seeds", "0-1", "--cpu"]
    args += ["--output-dir", str(tmp_path / "samples")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    (root,) = (tmp_path / "samples").iterdir()
    made_by = json.loads((root / "run.json").read_text())["made_by"]
    scene = root / "scenes" / "scene_class000_seed00000.npz"
    assert Scene.load(scene).made_by == made_by and made_by["sampler_uncond"]["steps"] == 2
    scene.write_bytes(scene.read_bytes()[:100])
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0 and "1 new scene" in result.output, result.output
    Scene.load(scene)
    other = [a if a != str(run) else str(tmp_path / "other") for a in args]
    result = CliRunner().invoke(app, other)
    assert result.exit_code == 2 and "differs in uncond" in result.output, result.output


def test_batches_go_on_past_bad_scenes(tmp_path):
    scene = Scene(torch.rand(27, 4, 16, 16) * 2 - 1, grid_viewset_3x9().modelviews)
    scene.save(tmp_path / "run" / "scenes" / "scene_seed00000")
    scene.save(tmp_path / "run" / "scenes" / "scene_seed00001")
    (tmp_path / "run" / "scenes" / "scene_seed00000.npz").write_bytes(b"")
    result = CliRunner().invoke(app, ["export", str(tmp_path / "run"), "--format", "ply"])
    assert result.exit_code == 2 and "1 of 2 failed" in result.output and "scene_seed00000" in result.output
    assert (tmp_path / "run" / "exports" / "scene_seed00001").is_dir()
    args = ["eval", "--scenes", str(tmp_path / "run" / "scenes"), "--neighbours", "2", "--cpu"]
    result = CliRunner().invoke(app, [*args, "--output", str(tmp_path / "metrics.json")])
    assert result.exit_code == 2 and "1 of 2 failed" in result.output and "scene_seed00000" in result.output
    consistency = json.loads((tmp_path / "metrics.json").read_text())["consistency"]
    assert consistency["scenes"] == 1 and consistency["skipped"] == 1


def test_an_unreachable_hub_fails_fast(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")

    def load(name, local_files_only=False):
        raise OSError("not cached" if local_files_only else "network attempted")

    start = time.monotonic()
    with pytest.raises(UserError, match=r"neither cached nor reachable.*--depth-model"):
        load_pretrained(load, "some/model", "--depth-model")
    assert time.monotonic() - start < 10


def test_failed_runs_leave_no_empty_folders(tmp_path):
    with pytest.raises(RuntimeError), removed_if_failed(tmp_path / "a" / "b") as folder:
        (folder / "c").mkdir(parents=True)
        raise RuntimeError
    assert not (tmp_path / "a").exists()


def test_checkpoint_files_follow_the_umask(tmp_path):
    from iterview.training.state import TrainState, save_checkpoint

    model, config = _tiny(4)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.zeros(1, 4, 16, 16), torch.zeros(1), torch.zeros(1, dtype=torch.long)).mean().backward()
    optimizer.step()
    old = os.umask(0o022)
    try:
        path = save_checkpoint(
            tmp_path, TrainState(step=1), model, model, config, optimizer, {"cpu": torch.zeros(1, 8)}, {}
        )
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in path.rglob("*") if p.is_file()}
    assert set(modes.values()) == {0o644}, modes
