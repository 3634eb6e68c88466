"""`iterview eval` end to end on tiny image folders."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from iterview.cli import app


def _folder(path, count: int, size: int, seed: int) -> None:
    path.mkdir(parents=True)
    g = np.random.default_rng(seed)
    for i in range(count):
        base = g.integers(0, 256, (1, 1, 3))
        image = np.clip(base + g.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(path / f"{i}.png")


def test_eval_writes_image_metrics_and_reuses_the_real_cache(tmp_path):
    _folder(tmp_path / "real", 2, 24, 0)
    _folder(tmp_path / "fake", 3, 16, 1)
    stats, out = tmp_path / "real.safetensors", tmp_path / "metrics.json"
    args = ["eval", "--fake", str(tmp_path / "fake"), "--real-stats", str(stats), "--image-size", "16"]
    args += ["--num-samples", "2", "--output", str(out), "--cpu"]
    result = CliRunner().invoke(app, [*args, "--real", str(tmp_path / "real")])
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())["images"]
    assert metrics["num_fake"] == 2 and metrics["num_real"] == 2
    assert np.isfinite(metrics["fid"]) and metrics["fid"] > 0 and np.isfinite(metrics["kid_mean"])
    assert "FID" in result.output and stats.is_file()
    assert "warning: FID from 2 real and 2 generated images" in result.output

    (tmp_path / "real" / "0.png").unlink()  # the cache is used: the real folder is no longer read
    again = CliRunner().invoke(app, [*args, "--seed", "1"])
    assert again.exit_code == 0, again.output
    assert json.loads(out.read_text())["images"]["num_real"] == 2


def test_eval_rejects_missing_inputs_with_clear_messages(tmp_path):
    result = CliRunner().invoke(app, ["eval"])
    assert result.exit_code == 2 and "nothing to evaluate" in result.output
    _folder(tmp_path / "fake", 2, 16, 0)
    result = CliRunner().invoke(app, ["eval", "--fake", str(tmp_path / "fake")])
    assert result.exit_code == 2 and "need real images" in result.output
    args = ["eval", "--fake", str(tmp_path / "fake"), "--real", str(tmp_path / "fake"), "--image-size", "32"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "expected 32x32" in result.output
