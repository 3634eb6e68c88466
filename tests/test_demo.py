"""`iterview demo --quick` end to end on the shipped models, and its from-scratch `--train` path."""

from __future__ import annotations

import json
import math

from typer.testing import CliRunner

from iterview.cli import app
from iterview.config import tiny_adm_config
from iterview.data.benchmark import BENCHMARK
from iterview.data.synth import CATEGORIES
from iterview.models.checkpoint import save_model, tiny_adm


def _run(out, *extra):
    result = CliRunner().invoke(app, ["demo", "--quick", "--cpu", "--no-progress", "--out", str(out), *extra])
    assert result.exit_code == 0, result.output
    return json.loads((out / "report.json").read_text())


def test_quick_demo_shows_every_class_and_measures_it(tmp_path, one_thread):
    out = tmp_path / "demo"
    results = _run(out)
    page = (out / "report.html").read_text()
    classes = len(CATEGORIES)
    # each class's colour and depth grids, a held-out scene (generated and true), the first-view grid; two videos
    assert page.count("data:image/png;base64,") == 2 * classes + 2 + 1
    assert page.count("data:video/mp4;base64,") == 2
    scenes = sorted((out / "samples" / "scenes").glob("*.json"))
    labels = sorted(json.loads(p.read_text())["label"] for p in scenes)
    assert labels == list(range(classes)) and all(len(json.loads(p.read_text())["modelviews"]) == 27 for p in scenes)
    first, novel = results["metrics"]["first_views"], results["metrics"]["novel_views"]
    assert 0 <= first["class_accuracy"] <= 1 and math.isfinite(first["fid"])
    assert novel["scenes"] == 1 and 0 < novel["covered_share"] < 1 and math.isfinite(novel["psnr_all"])
    assert results["metrics"]["sampling"]["sampler_cond"] == "ddim3+cfg81-578+clip"
    assert set(results["timings_s"]) >= {"sample 3x9 viewsets of every class", "render a fusion video"}


def test_demo_trains_from_scratch_with_the_synth_recipe(tmp_path, one_thread):
    out = tmp_path / "demo"
    results = _run(out, "--train", "--steps-uncond", "2", "--steps-cond", "1")
    assert {"train G_u (first view)", "train G_c (novel views, from G_u)"} <= set(results["timings_s"])
    config = json.loads((out / "g_c" / "train_config.json").read_text())
    assert config["warp_pixel_scale"] == 4.0 and config["max_steps"] == 1  # the synth_c preset, shortened
    assert (out / "g_c" / "checkpoints" / "step_0000001" / "ema" / "model.safetensors").is_file()


def test_a_demo_folder_resumes_but_is_not_reused_for_other_models(tmp_path, one_thread):
    out = tmp_path / "demo"
    _run(out)
    scenes = out / "samples" / "scenes"
    before = {path.name: path.read_bytes() for path in scenes.iterdir()}
    _run(out)  # the same demo again: its finished scenes are kept
    assert {path.name: path.read_bytes() for path in scenes.iterdir()} == before
    shape = {"image_size": BENCHMARK.image_size, "num_classes": len(CATEGORIES)}
    g_u = save_model(tiny_adm(1, in_channels=4, **shape), tiny_adm_config(in_channels=4, **shape), tmp_path / "u")
    g_c = save_model(tiny_adm(2, in_channels=10, **shape), tiny_adm_config(in_channels=10, **shape), tmp_path / "c")
    args = ["demo", "--quick", "--cpu", "--no-progress", "--out", str(out), "--uncond", str(g_u), "--cond", str(g_c)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "run folder made by other models or settings" in result.output and "pass another --out" in result.output
    assert {path.name: path.read_bytes() for path in scenes.iterdir()} == before
