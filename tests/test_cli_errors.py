"""Bad input to every subcommand: one line naming the file or option, exit code 2, no traceback, and not one
file of what was there before changed (or any file or folder added)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from iterview.cli import app
from iterview.data.synth import write_synth_dataset
from iterview.diffusion.presets import SamplerChoice
from iterview.models.checkpoint import build_model, save_model
from iterview.pipeline.runinfo import RUN_FILE
from iterview.pipeline.sampling import run_name
from iterview.pipeline.scene import Scene
from iterview.pipeline.viewsets import grid_viewset_3x9
from iterview.training.config import load_config

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny(in_channels: int, image_size: int = 16):
    config = replace(load_config(None, "tiny", []).model, image_size=image_size, in_channels=in_channels)
    return build_model(config), config


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    """A workspace of good and bad inputs: tiny 16-px models, a synth dataset, scenes, camera files, configs."""
    root = tmp_path_factory.mktemp("ws")
    g_u, config_u = _tiny(4)
    save_model(g_u, config_u, root / "gu")
    save_model(*_tiny(10), root / "gc")
    save_model(*_tiny(10, 32), root / "gc32")
    torch.save(g_u.state_dict(), root / "official.pt")
    (root / "gu.json").write_text(json.dumps({"model": config_u.to_dict()}))
    (root / "bad_config.json").write_text(json.dumps({"model": {**config_u.to_dict(), "model_channels": "many"}}))
    (root / "notjson.json").write_text("{not json")
    (root / "broken").mkdir()
    (root / "broken" / "model.safetensors").write_bytes(b"garbage")
    (root / "broken" / "config.json").write_text(json.dumps({"model": config_u.to_dict()}))
    (root / "empty").mkdir()
    write_synth_dataset(root / "data", count=4, image_size=16, seed=0)
    (root / "prepared").mkdir()
    (root / "prepared" / "dataset.json").write_text(json.dumps({"images": [], "depths": []}))
    (root / "imgs").mkdir()
    for i in range(2):
        Image.fromarray(np.full((40, 40, 3), 60 * i, np.uint8)).save(root / "imgs" / f"{i}.png")
    (root / "cams_nan.yaml").write_text("- {yaw: .nan, pitch: 0}\n")
    (root / "cams_text.json").write_text(json.dumps([{"yaw": "left", "pitch": 0}]))
    (root / "cams_scale.json").write_text(json.dumps([(2 * np.eye(4)).tolist()]))
    (root / "cams_empty.json").write_text("[]")
    (root / "cams_keys.json").write_text(json.dumps([{"yaw": 0}]))
    (root / "cams_broken.yaml").write_text("- {yaw: 0, pitch: [0\n")
    (root / "cams_binary.yaml").write_bytes(b"\xff\xfe\x00")
    (root / "broken.yaml").write_text("model:\n  channel_mult: [1, 2\n")
    (root / "binidx").mkdir()
    (root / "binidx" / "dataset.json").write_bytes(b"\xff\xfe")
    for name, recipe in (("bench_fields", '{"version": 1, "shape": "torus"}'), ("bench_json", "{")):
        (root / name).mkdir()
        (root / name / "benchmark.json").write_text(recipe)
    scene = Scene(torch.rand(27, 4, 16, 16) * 2 - 1, grid_viewset_3x9().modelviews)
    scene.save(root / "run" / "scenes" / "scene_seed00000")
    scene.save(root / "bad" / "scenes" / "scene_seed00001")
    (root / "bad" / "scenes" / "scene_seed00001.npz").write_bytes(b"PK\x03\x04truncated")
    (root / "badjson").mkdir()
    (root / "badjson" / "scene_seed00002.json").write_text("{")
    (root / "badjson" / "scene_seed00002.npz").write_bytes(b"")
    other = root / "samples" / run_name("uncond", SamplerChoice("ddim", 2), SamplerChoice("ddim", 50), 3.0)
    other.mkdir(parents=True)
    (other / RUN_FILE).write_text(json.dumps({"format": "iterview.run", "made_by": {"uncond": "another model"}}))
    legacy = root / "legacy" / run_name("uncond", SamplerChoice("ddim", 2), SamplerChoice("ddim", 50), 3.0)
    scene.save(legacy / "scenes" / "scene_seed00000")
    return root


SAMPLE = ["sample", "--uncond", "{ws}/gu", "--viewset", "uncond", "--cpu", "--steps-uncond", "2"]
SAMPLE_3X9 = ["sample", "--uncond", "{ws}/gu", "--cond", "{ws}/gc", "--cpu", "--sampler", "fast"]
OUT = ["--output-dir", "{ws}/new"]

CASES = {
    # sample: numbers
    "guidance negative": ([*SAMPLE, *OUT, "--guidance", "-5"], "--guidance"),
    "guidance huge": ([*SAMPLE, *OUT, "--guidance", "1e9"], "--guidance"),
    "guidance nan": ([*SAMPLE, *OUT, "--guidance", "nan"], "--guidance"),
    "guidance inf": ([*SAMPLE, *OUT, "--guidance", "inf"], "--guidance"),
    "near beyond far": ([*SAMPLE, *OUT, "--near", "5", "--far", "1"], "--far"),
    "near zero": ([*SAMPLE, *OUT, "--near", "0"], "--near"),
    "near nan": ([*SAMPLE, *OUT, "--near", "nan"], "--near"),
    "far inf": ([*SAMPLE, *OUT, "--far", "inf"], "--far"),
    "fov zero": ([*SAMPLE, *OUT, "--fov", "0"], "--fov"),
    "fov 180": ([*SAMPLE, *OUT, "--fov", "180"], "--fov"),
    "atol negative": ([*SAMPLE, *OUT, "--atol", "-1"], "--atol"),
    "rtol nan": ([*SAMPLE, *OUT, "--rtol", "nan"], "--rtol"),
    "erode negative": ([*SAMPLE, *OUT, "--erode-rgb", "-1"], "--erode-rgb"),
    "steps uncond zero": ([*SAMPLE, *OUT, "--steps-uncond", "0"], "--steps-uncond"),
    "steps cond zero": ([*SAMPLE, *OUT, "--steps-cond", "0"], "--steps-cond"),
    "batch size zero": ([*SAMPLE, *OUT, "--batch-size", "0"], "--batch-size"),
    "num samples zero": ([*SAMPLE, *OUT, "--num-samples", "0"], "--num-samples"),
    "seeds text": ([*SAMPLE, *OUT, "--seeds", "x"], "seed list"),
    "seeds empty": ([*SAMPLE, *OUT, "--seeds", ","], "seed list"),
    "seeds repeated": ([*SAMPLE, *OUT, "--seeds", "1,1"], "repeats"),
    "classes text": ([*SAMPLE, *OUT, "--classes", "foo"], "--classes"),
    "classes count": ([*SAMPLE, *OUT, "--seeds", "0-2", "--classes", "1,2"], "--classes"),
    "sampler preset": ([*SAMPLE, *OUT, "--sampler", "bogus"], "sampler preset"),
    "sampler name": ([*SAMPLE, *OUT, "--sampler-uncond", "bogus"], "bogus"),
    "compile official U-Nets": ([*SAMPLE, *OUT, "--compile", "--official-unet"], "--compile"),
    # sample: viewsets and camera files
    "viewset name": ([*SAMPLE, *OUT, "--viewset", "bogus"], "viewset"),
    "viewset orbit": ([*SAMPLE, *OUT, "--viewset", "orbit:x"], "orbit"),
    "camera nan yaw": ([*SAMPLE_3X9, *OUT, "--viewset", "{ws}/cams_nan.yaml"], "cams_nan.yaml: camera 0"),
    "camera text yaw": ([*SAMPLE_3X9, *OUT, "--viewset", "{ws}/cams_text.json"], "cams_text.json: camera 0"),
    "camera yaml broken": ([*SAMPLE_3X9, *OUT, "--viewset", "{ws}/cams_broken.yaml"], "cams_broken.yaml"),
    "camera not text": ([*SAMPLE_3X9, *OUT, "--viewset", "{ws}/cams_binary.yaml"], "cams_binary.yaml"),
    "camera not json": ([*SAMPLE_3X9, *OUT, "--viewset", "{ws}/notjson.json"], "notjson.json"),
    "camera scaled": ([*SAMPLE_3X9, *OUT, "--viewset", "{ws}/cams_scale.json"], "cams_scale.json: camera 0"),
    "camera missing": ([*SAMPLE_3X9, *OUT, "--viewset", "{ws}/missing.json"], "missing.json"),
    "camera empty": ([*SAMPLE_3X9, *OUT, "--viewset", "{ws}/cams_empty.json"], "cams_empty.json"),
    "camera keys": ([*SAMPLE_3X9, *OUT, "--viewset", "{ws}/cams_keys.json"], "cams_keys.json: camera 0"),
    # sample: models
    "3x9 without G_c": (["sample", "--uncond", "{ws}/gu", "--cpu", *OUT], "--cond"),
    "missing checkpoint": (["sample", "--uncond", "{ws}/nope", "--viewset", "uncond", *OUT], "--uncond"),
    "G_c as G_u": (["sample", "--uncond", "{ws}/gc", "--viewset", "uncond", *OUT], "swap --uncond and --cond"),
    "G_u as G_c": (["sample", "--uncond", "{ws}/gu", "--cond", "{ws}/gu", *OUT], "--cond"),
    "swapped pair": (["sample", "--uncond", "{ws}/gc", "--cond", "{ws}/gu", *OUT], "swap --uncond and --cond"),
    "resolutions differ": (["sample", "--uncond", "{ws}/gu", "--cond", "{ws}/gc32", *OUT], "different resolutions"),
    "empty model folder": (["sample", "--uncond", "{ws}/empty", "--viewset", "uncond", *OUT], "--uncond"),
    "corrupt weights": (["sample", "--uncond", "{ws}/broken", "--viewset", "uncond", *OUT], "model.safetensors"),
    "pt without config": (["sample", "--uncond", "{ws}/official.pt", "--viewset", "uncond", *OUT], "official.pt"),
    "config many channels": ([*SAMPLE, *OUT, "--config-uncond", "{ws}/bad_config.json"], "model_channels"),
    "config not json": ([*SAMPLE, *OUT, "--config-uncond", "{ws}/notjson.json"], "notjson.json"),
    "run of another model": ([*SAMPLE, "--output-dir", "{ws}/samples"], RUN_FILE),
    "run without record": ([*SAMPLE, "--output-dir", "{ws}/legacy"], "run.json"),
    # render
    "render nowhere": (["render", "{ws}/nowhere"], "nowhere"),
    "render fps zero": (["render", "{ws}/run", "--fps", "0"], "--fps"),
    "render frames zero": (["render", "{ws}/run", "--frames", "0"], "--frames"),
    "render ssaa zero": (["render", "{ws}/run", "--ssaa", "0"], "--ssaa"),
    "render trajectory": (["render", "{ws}/run", "--traj", "bogus"], "trajectory"),
    "render camera nan": (["render", "{ws}/run", "--traj", "{ws}/cams_nan.yaml"], "cams_nan.yaml"),
    "render truncated scene": (["render", "{ws}/bad/scenes/scene_seed00001.json"], "scene_seed00001.npz"),
    "render scene not json": (["render", "{ws}/badjson"], "scene_seed00002.json"),
    "render no scenes": (["render", "{ws}/empty"], "no scenes"),
    # export
    "export nowhere": (["export", "{ws}/nowhere"], "nowhere"),
    "export format": (["export", "{ws}/run", "--format", "xyz"], "--format"),
    "export atol nan": (["export", "{ws}/run", "--atol", "nan"], "--atol"),
    "export truncated scene": (["export", "{ws}/bad"], "scene_seed00001.npz"),
    # eval
    "eval nothing": (["eval"], "--fake"),
    "eval without real": (["eval", "--fake", "{ws}/imgs"], "--real"),
    "eval fake nowhere": (["eval", "--fake", "{ws}/nowhere", "--real", "{ws}/imgs"], "nowhere"),
    "eval real nowhere": (["eval", "--fake", "{ws}/imgs", "--image-size", "40", "--real", "{ws}/nowhere"], "nowhere"),
    "eval wrong size": (["eval", "--fake", "{ws}/imgs", "--real", "{ws}/imgs"], "0.png"),
    "eval scenes nowhere": (["eval", "--scenes", "{ws}/nowhere"], "nowhere"),
    "eval truncated scene": (["eval", "--scenes", "{ws}/bad/scenes"], "scene_seed00001.npz"),
    "eval benchmark no model": (["eval", "--benchmark", "{ws}/nowhere", "--cpu"], "--uncond"),
    "eval benchmark nowhere": (["eval", "--benchmark", "{ws}/nowhere", "--uncond", "{ws}/gu", "--cpu"], "nowhere"),
    # convert
    "convert missing pt": (["convert", "{ws}/missing.pt", "--config", "{ws}/gu.json", "--output", "{ws}/c"], "missing"),
    "convert many channels": (
        ["convert", "{ws}/official.pt", "--config", "{ws}/bad_config.json", "--output", "{ws}/c"],
        "model_channels",
    ),
    "convert config not json": (
        ["convert", "{ws}/official.pt", "--config", "{ws}/notjson.json", "--output", "{ws}/c"],
        "notjson.json",
    ),
    "convert wrong config": (
        ["convert", "{ws}/official.pt", "--config", "{ws}/gc/config.json", "--output", "{ws}/c"],
        "official.pt",
    ),
    "convert over a model": (["convert", "{ws}/official.pt", "--config", "{ws}/gu.json", "--output", "{ws}/gc"], "gc"),
    "convert into a dataset": (
        ["convert", "{ws}/official.pt", "--config", "{ws}/gu.json", "--output", "{ws}/data"],
        "--output",
    ),
    # synth
    "synth into a prepared dataset": (["synth", "{ws}/prepared", "--size", "16"], "prepared"),
    "synth other seed": (["synth", "{ws}/data", "--size", "16", "--seed", "3"], "seed"),
    "synth other size": (["synth", "{ws}/data", "--size", "32"], "image_size"),
    "synth into a model": (["synth", "{ws}/gu", "--size", "16"], "gu"),
    "synth count zero": (["synth", "{ws}/new", "--count", "0"], "--count"),
    "synth size tiny": (["synth", "{ws}/new", "--size", "4"], "--size"),
    # prepare
    "prepare into synth": (["prepare", "{ws}/imgs", "{ws}/data", "--depth-from", "{ws}/imgs"], "synth"),
    "prepare into model": (["prepare", "{ws}/imgs", "{ws}/gu", "--depth-from", "{ws}/imgs"], "gu"),
    "prepare into official": (["prepare", "{ws}/imgs", "{ws}/prepared", "--depth-from", "{ws}/imgs"], "prepared"),
    "prepare no images": (["prepare", "{ws}/nowhere", "{ws}/new", "--depth-from", "{ws}/imgs"], "nowhere"),
    "prepare empty folder": (["prepare", "{ws}/empty", "{ws}/new", "--depth-from", "{ws}/imgs"], "empty"),
    "prepare depth folder": (["prepare", "{ws}/imgs", "{ws}/new", "--depth-from", "{ws}/nowhere"], "--depth-from"),
    "prepare depth kind": (["prepare", "{ws}/imgs", "{ws}/new", "--depth-from", "{ws}/imgs", "--depth-kind", "z"], "z"),
    "prepare inside input": (["prepare", "{ws}/imgs", "{ws}/imgs/out", "--depth-from", "{ws}/imgs"], "inside"),
    "prepare batch zero": (["prepare", "{ws}/imgs", "{ws}/new", "--batch-size", "0"], "--batch-size"),
    # train
    "train preset": (["train", "--output", "{ws}/new", "--preset", "huge"], "huge"),
    "train config not json": (["train", "--output", "{ws}/new", "--config", "{ws}/notjson.json"], "notjson.json"),
    "train unknown field": (["train", "--output", "{ws}/new", "--preset", "tiny", "--set", "foo=1"], "foo"),
    "train override not yaml": (["train", "--output", "{ws}/new", "--preset", "tiny", "--set", "lr=[1"], "lr=[1"),
    "train config yaml broken": (["train", "--output", "{ws}/new", "--config", "{ws}/broken.yaml"], "broken.yaml"),
    "train index not text": (
        ["train", "--output", "{ws}/new", "--preset", "tiny", "--data", "{ws}/binidx"],
        "dataset.json",
    ),
    "train missing data": (["train", "--output", "{ws}/new", "--preset", "tiny", "--data", "{ws}/nowhere"], "nowhere"),
    # eval
    "eval recipe fields": (["eval", "--benchmark", "{ws}/bench_fields", "--cond", "{ws}/gc"], "bench_fields"),
    "eval recipe not json": (["eval", "--benchmark", "{ws}/bench_json", "--cond", "{ws}/gc"], "bench_json"),
    # demo
    "demo threads": (["demo", "--threads", "0", "--out", "{ws}/new"], "--threads"),
}


def snapshot(root: Path) -> dict[str, str]:
    """Every file's sha256 and every folder under root."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(root.rglob("*"))
    }


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_clear_line(ws, case):
    args, expected = CASES[case]
    before = snapshot(ws)
    result = CliRunner().invoke(app, [a.format(ws=ws) for a in args])
    output = result.output
    assert result.exit_code == 2, output
    assert expected in output, output
    assert "Traceback" not in output
    # The output ends with the whole error: its one line, or the panel of a usage error.
    assert output.rstrip().splitlines()[-1].startswith(("error: ", "╰─")), output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert snapshot(ws) == before, "the command changed or added files"


def test_matrix_is_large():
    assert len(CASES) >= 60


def test_debug_shows_the_traceback(ws):
    result = CliRunner().invoke(app, ["--debug", "render", str(ws / "nowhere")])
    assert isinstance(result.exception, FileNotFoundError)
