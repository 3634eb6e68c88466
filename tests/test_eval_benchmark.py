"""`iterview eval --benchmark` end to end with tiny random models, and the metric arithmetic against the truth."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from typer.testing import CliRunner

from iterview.cli import app
from iterview.config import tiny_adm_config
from iterview.data.benchmark import BENCHMARK, load_truth, write_benchmark
from iterview.eval.benchmark import _summarise, _truth_errors, _truth_rgbd
from iterview.eval.classifier import SynthClassifier, save_classifier
from iterview.models.checkpoint import save_model, tiny_adm
from iterview.pipeline.multiview import MultiViewResult

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = replace(BENCHMARK, image_size=16, train_count=8, heldout_count=8, truth_scenes=1)


def _model(in_channels: int, folder):
    shape = {"image_size": TINY.image_size, "in_channels": in_channels, "num_classes": 4}
    return save_model(tiny_adm(perturb=False, **shape), tiny_adm_config(**shape), folder)


def test_eval_benchmark_command_measures_both_models(tmp_path):
    root = write_benchmark(tmp_path / "bench", TINY)
    uncond, cond = _model(4, tmp_path / "g_u"), _model(10, tmp_path / "g_c")
    classifier = save_classifier(SynthClassifier(4, width=8), tmp_path / "classifier")
    out = tmp_path / "metrics.json"
    args = [
        "eval",
        "--benchmark",
        str(root),
        "--uncond",
        str(uncond),
        "--cond",
        str(cond),
        "--classifier",
        str(classifier),
        "--steps-uncond",
        "2",
        "--steps-cond",
        "2",
        "--num-samples",
        "8",
        "--heldout-scenes",
        "1",
        "--teacher-forced",
        "--benchmark-output",
        str(tmp_path / "eval"),
        "--output",
        str(out),
        "--cpu",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    assert metrics["uncond"]["num_fake"] == 8 and 0 <= metrics["uncond"]["class_accuracy"] <= 1
    assert metrics["uncond"]["real_vs_real_fid"] > 0
    assert metrics["cond"]["scenes"] == 1 and metrics["cond"]["sampler_cond"] == "ddim2+cfg81-578"
    # the true previous views cover more of each view than a random G_c's do
    assert 0 < metrics["cond"]["covered_share"] < metrics["cond"]["teacher_forced_covered_share"] < 1
    assert metrics["cond"]["teacher_forced_depth_absrel_all"] > 0
    assert len(list((tmp_path / "eval" / "uncond" / "images").glob("*.png"))) == 8
    assert (tmp_path / "eval" / "cond" / "grids" / "truth_0000.png").is_file()


def test_truth_errors_are_zero_for_the_truth_and_split_by_the_condition(tmp_path):
    root = write_benchmark(tmp_path / "bench", replace(TINY, train_count=0))
    truth = load_truth(root, 0)
    near, far = 0.5, 100.0
    zbuffer = (1 / near - 1 / truth["depth"].clamp(near, far)) / (1 / near - 1 / far)
    rgbd = torch.cat([truth["rgb"], zbuffer], 1) * 2 - 1
    torch.testing.assert_close(_truth_rgbd(truth, near, far), rgbd)  # the true views teacher forcing is given
    mask = torch.zeros(26, 1, 16, 16)
    mask[:, :, :, :8] = 1  # the left half "covered by the condition"

    class Cond:
        def __init__(self, m):
            self.mask = m

    perfect = MultiViewResult(rgbd[None], truth["modelviews"][None], [Cond(m[None]) for m in mask])
    totals = _truth_errors(perfect, 0, truth, near, far)
    assert totals[0, 0] < 1e-10 and totals[0, 1] == 26 * 16 * 16 and totals[1, 1] == totals[2, 1] == 26 * 16 * 8
    assert (totals[3:, 0] / totals[3:, 1]).max() < 1e-6  # depth AbsRel only from float round-off
    shifted = rgbd.clone()
    shifted[1:, :3, :, 8:] += 0.2  # colour error of 0.1 only where G_c invented
    metrics = _summarise(
        _truth_errors(MultiViewResult(shifted[None], perfect.modelviews, perfect.conditions), 0, truth, near, far),
        [type("C", (), {"psnr": 30.0, "depth_absrel": 0.0})()],
    )
    assert metrics["psnr_covered"] == 100.0  # capped: no error
    assert metrics["psnr_invented"] < metrics["psnr_all"] < metrics["psnr_covered"]
    assert metrics["psnr_invented"] == pytest.approx(20.0, abs=0.5)  # up to clipping at white


def test_first_views_resume_where_an_earlier_run_stopped(tmp_path):
    from iterview.eval.benchmark import uncond_metrics
    from iterview.pipeline.loading import load_pipeline

    root = write_benchmark(tmp_path / "bench", replace(TINY, train_count=0))
    uncond = _model(4, tmp_path / "g_u")
    classifier = SynthClassifier(4, width=8)
    pipeline = load_pipeline(uncond, sampler="fast", steps_uncond=2)
    out = tmp_path / "first"
    first = uncond_metrics(root, pipeline, classifier, out, count=4, batch_size=2, progress=False)
    images = {path.name: path.read_bytes() for path in sorted((out / "images").glob("*.png"))}
    assert len(images) == 4 and first["seconds_per_image"] > 0
    for name in ("00001.png", "00002.png"):  # as if interrupted (and out of order)
        (out / "images" / name).unlink()
    (out / "images" / "00000.png").write_bytes(images["00003.png"])  # a kept image is not sampled again
    resumed = uncond_metrics(root, pipeline, classifier, out, count=4, batch_size=2, progress=False, resume=True)
    assert (out / "images" / "00000.png").read_bytes() == images["00003.png"]
    for name in ("00001.png", "00002.png", "00003.png"):
        assert (out / "images" / name).read_bytes() == images[name]  # per-image seeds: the same images
    assert resumed["seconds_per_image"] > 0
    (out / "images" / "00000.png").write_bytes(images["00000.png"])
    again = uncond_metrics(root, pipeline, classifier, out, count=4, batch_size=2, progress=False, resume=True)
    assert again["seconds_per_image"] is None
    assert again["fid"] == pytest.approx(first["fid"]) and again["class_accuracy"] == first["class_accuracy"]
    with pytest.raises(ValueError, match="remove them to sample anew"):  # another seed: the saved ones don't fit
        uncond_metrics(root, pipeline, classifier, out, count=4, seed=1, batch_size=2, progress=False, resume=True)
