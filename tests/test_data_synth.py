"""Procedural scenes: exact analytic depth, multi-view consistency, the written dataset, resume and the CLI."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from iterview.cli import app
from iterview.data.datasets import RGBDDataset
from iterview.data.layout import load_depth
from iterview.data.synth import (
    CATEGORIES,
    Material,
    SynthScene,
    front_camera,
    random_scene,
    scene_for_index,
    write_synth_dataset,
)
from iterview.geometry.cameras import focal_length, linear_to_zbuffer, orbit_camera

ROOT = Path(__file__).resolve().parents[1]


def _plain(color: float) -> Material:
    return Material(torch.full((2, 3), color), 0, 1.0, torch.tensor([1.0, 0.0, 0.0]), torch.zeros(3))


def _sphere_scene(radius: float = 0.25) -> SynthScene:
    return SynthScene(
        category=CATEGORIES.index("sphere"),
        size=torch.full((3,), radius),
        yaw=0.0,
        floor_y=-0.6,
        wall_z=-1.0,
        light=torch.tensor([0.0, 0.0, 1.0]),
        object_material=_plain(0.8),
        floor_material=_plain(0.5),
        wall_material=_plain(0.3),
        scene_from_world=torch.eye(4),
    )


def test_front_view_depth_is_analytic():
    size = 33  # odd: the centre pixel's ray is the optical axis
    rgb, depth = _sphere_scene(0.25).render(front_camera(), size, ssaa=1)
    assert rgb.shape == (1, 3, size, size) and depth.shape == (1, 1, size, size)
    assert rgb.min() >= 0 and rgb.max() <= 1
    assert depth[0, 0, 16, 16].item() == pytest.approx(0.75, abs=1e-6)
    # the top-left pixel's ray meets the wall at z = -1, two units in front of the camera
    assert depth[0, 0, 0, 0].item() == pytest.approx(2.0, abs=1e-5)
    # the bottom-centre ray goes down at slope (0.5 - 0.5/size) / focal and meets the floor y = -0.6
    slope = (0.5 - 0.5 / size) / focal_length()
    assert depth[0, 0, size - 1, 16].item() == pytest.approx(min(0.6 / slope, 2.0), abs=1e-5)
    # a ray at angle a from the axis meets the sphere at z-depth (cos a - sqrt(r² - sin² a)) cos a
    offset = 4 / size / focal_length()
    angle = math.atan(offset)
    expected = (math.cos(angle) - math.sqrt(0.25**2 - math.sin(angle) ** 2)) * math.cos(angle)
    assert depth[0, 0, 16, 20].item() == pytest.approx(expected, abs=1e-5)


def test_novel_views_are_consistent_with_the_front_depth():
    scene = random_scene(torch.Generator().manual_seed(3), category=CATEGORIES.index("box"))
    size = 48
    cameras = torch.cat([front_camera(), orbit_camera(torch.tensor([0.25]), torch.tensor([0.1]))])
    _, depth = scene.render(cameras, size, ssaa=1)
    focal = focal_length()
    centres = (torch.arange(size) + 0.5) / size
    y, x = torch.meshgrid((0.5 - centres) / focal, (centres - 0.5) / focal, indexing="ij")
    z = depth[0, 0]
    camera_points = torch.stack([x * z, y * z, -z, torch.ones_like(z)], dim=-1).reshape(-1, 4)
    side = (cameras[1] @ torch.linalg.inv(cameras[0]) @ camera_points.T).T
    side_z = -side[:, 2]
    col = ((side[:, 0] / side_z * focal + 0.5) * size).floor().long()
    row = ((0.5 - side[:, 1] / side_z * focal) * size).floor().long()
    inside = (col >= 0) & (col < size) & (row >= 0) & (row < size) & (z.reshape(-1) < 50)
    seen = depth[1, 0][row[inside], col[inside]]
    agree = (seen - side_z[inside]).abs() < 0.03 * side_z[inside]
    assert inside.float().mean() > 0.6
    # pixels occluded in the side view or on a depth edge disagree; the rest must match the geometry
    assert agree.float().mean() > 0.9


def test_random_scenes_stay_beyond_the_near_plane_and_are_seeded():
    camera = front_camera()
    nearest = min(scene_for_index(5, i).render(camera, 16, ssaa=1)[1].min().item() for i in range(40))
    assert nearest > 0.5
    a, b = scene_for_index(5, 7), scene_for_index(5, 7)
    assert torch.equal(a.render(camera, 16)[0], b.render(camera, 16)[0])
    assert not torch.equal(a.render(camera, 16)[0], scene_for_index(5, 8).render(camera, 16)[0])
    with pytest.raises(ValueError, match="modelview"):
        a.render(camera[0], 16)
    with pytest.raises(ValueError, match="odd"):
        a.render(camera, 16, ssaa=2)


def test_dataset_round_trip_gives_the_true_zbuffer(tmp_path):
    root = write_synth_dataset(tmp_path / "synth", count=6, image_size=32, seed=2)
    dataset = RGBDDataset(root, image_size=32)
    assert len(dataset) == 6 and dataset.num_classes == len(CATEGORIES)
    index = json.loads((root / "dataset.json").read_text())
    assert index["labels"] == {name: i for i, name in enumerate(CATEGORIES)}
    for i in range(6):
        scene = scene_for_index(2, i)
        rgb, depth = scene.render(front_camera(), 32)
        item = dataset[i]
        assert int(item["classes"]) == scene.category
        torch.testing.assert_close((item["x_0"][:3] + 1) / 2, rgb[0], atol=0.5 / 255 + 1e-6, rtol=0)
        # fp16 disparity storage: about 1e-3 relative error in 1/z
        torch.testing.assert_close(
            (item["x_0"][3] + 1) / 2, linear_to_zbuffer(depth[0, 0], 0.5, 100.0), atol=2e-3, rtol=0
        )


def test_resume_after_a_kill_leaves_no_partial_file(tmp_path):
    killed = tmp_path / "killed"
    code = f"from iterview.data.synth import write_synth_dataset; write_synth_dataset({str(killed)!r}, 100000, 24, 1)"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while len(list(killed.glob("depths/*/*.npz"))) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        process.kill()
        process.wait()
    images = [p for p in killed.rglob("*") if p.is_file() and p.suffix == ".png"]
    assert len(images) >= 4 and not (killed / "dataset.json").exists()
    for png in images:  # every final file is complete: temporaries only become final by a rename
        Image.open(png).load()
    for npz in killed.rglob("*.npz"):
        load_depth(npz)
    count = len(images) + 2
    write_synth_dataset(killed, count=count, image_size=24, seed=1)
    assert not [p for p in killed.rglob("*") if p.name.endswith(".partial")]
    reference = write_synth_dataset(tmp_path / "whole", count=count, image_size=24, seed=1)
    produced = sorted(p.relative_to(killed) for p in killed.rglob("*") if p.is_file())
    assert produced == sorted(p.relative_to(reference) for p in reference.rglob("*") if p.is_file())
    for path in produced:
        if path.suffix == ".npz":
            np.testing.assert_array_equal(load_depth(killed / path), load_depth(reference / path))
        elif path.suffix == ".png":
            assert (killed / path).read_bytes() == (reference / path).read_bytes()


def test_changing_seed_in_an_existing_folder_is_refused(tmp_path):
    write_synth_dataset(tmp_path, count=1, image_size=16, seed=0)
    with pytest.raises(ValueError, match="seed"):
        write_synth_dataset(tmp_path, count=1, image_size=16, seed=1)


def test_synth_command(tmp_path):
    result = CliRunner().invoke(app, ["synth", str(tmp_path / "out"), "--count", "3", "--size", "16", "--seed", "4"])
    assert result.exit_code == 0, result.output
    dataset = RGBDDataset(tmp_path / "out", image_size=16)
    assert len(dataset) == 3 and dataset[2]["x_0"].shape == (4, 16, 16)
    assert json.loads((tmp_path / "out" / "synth.json").read_text())["seed"] == 4


def test_synth_preset_bench_claims_its_splits_with_the_recipe_style(tmp_path, monkeypatch):
    from dataclasses import replace

    import iterview.data.benchmark as benchmark

    tiny = replace(benchmark.BENCHMARK, image_size=16, train_count=3, heldout_count=2, truth_scenes=1)
    monkeypatch.setattr(benchmark, "BENCHMARK", tiny)
    out = tmp_path / "bench"
    for _ in range(2):  # a rerun resumes
        result = CliRunner().invoke(app, ["synth", str(out), "--preset", "bench"])
        assert result.exit_code == 0, result.output
    assert benchmark.read_recipe(out) == tiny and benchmark.truth_path(out, 0).is_file()
    assert json.loads((out / "train" / "synth.json").read_text())["style"] == "bench"
    classic = CliRunner().invoke(app, ["synth", str(out / "train"), "--count", "3", "--size", "16"])
    assert classic.exit_code == 2 and "style" in classic.output
    fixed = CliRunner().invoke(app, ["synth", str(tmp_path / "b2"), "--preset", "bench", "--count", "3"])
    assert fixed.exit_code == 2 and "--count" in fixed.output and not (tmp_path / "b2").exists()
    unknown = CliRunner().invoke(app, ["synth", str(tmp_path / "b3"), "--preset", "huge"])
    assert unknown.exit_code == 2 and "--preset" in unknown.output
    CliRunner().invoke(app, ["synth", str(tmp_path / "plain"), "--count", "2", "--size", "16"])
    other = CliRunner().invoke(app, ["synth", str(tmp_path / "plain"), "--preset", "bench"])
    assert other.exit_code == 2 and "synth" in other.output and not (tmp_path / "plain" / "train").exists()
