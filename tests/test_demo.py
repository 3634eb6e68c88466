"""`iterview demo --quick` end to end: every stage runs and the report holds its media and finite metrics."""

from __future__ import annotations

import json
import math

from typer.testing import CliRunner

from iterview.cli import app


def test_quick_demo_runs_end_to_end_and_writes_the_report(tmp_path, one_thread):
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--quick", "--cpu", "--no-progress", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = out / "report.html"
    assert report.is_file() and f"report: {report}" in result.output
    page = report.read_text()
    # one scene's colour and depth grids, the true-scene grids (generated / true, colour / depth), two videos
    assert page.count("data:image/png;base64,") == 6 and page.count("data:video/mp4;base64,") == 2
    results = json.loads((out / "report.json").read_text())
    images, consistency = results["metrics"]["images"], results["metrics"]["consistency"]
    assert all(math.isfinite(images[key]) for key in ("fid", "kid_mean", "kid_std"))
    assert all(math.isfinite(consistency[key]) for key in ("psnr", "depth_absrel", "coverage"))
    assert consistency["scenes"] == 1 and 0 <= consistency["coverage"] <= 1
    truth = results["metrics"]["ground_truth"]
    assert math.isfinite(truth["psnr"]) and math.isfinite(truth["depth_absrel"])
    assert set(results["timings_s"]) >= {"synthetic dataset", "train G_u (first view)", "evaluate"}
    scenes = sorted((out / "samples" / "scenes").glob("*.json"))
    assert len(scenes) == 1 and len(json.loads(scenes[0].read_text())["modelviews"]) == 27
    assert sorted(p.suffix for p in (out / "samples" / "videos").iterdir()) == [".mp4", ".mp4"]
