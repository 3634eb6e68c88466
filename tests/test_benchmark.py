"""The synth benchmark: a deterministic recipe with exact ground truth, and the classifier metrics on it."""

from __future__ import annotations

import hashlib
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from iterview.data.benchmark import BENCHMARK, load_truth, read_recipe, truth_cameras, write_benchmark
from iterview.data.datasets import RGBDDataset
from iterview.data.synth import CATEGORIES, front_camera, random_scene, scene_for_index
from iterview.eval.classifier import (
    SynthClassifier,
    class_accuracy,
    classifier_inception_score,
    load_classifier,
    predict,
    save_classifier,
)
from iterview.models.shipped import resolve_model

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = replace(BENCHMARK, image_size=16, train_count=6, heldout_count=4, truth_scenes=2)


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def test_the_recipe_is_deterministic_and_splits_are_disjoint(tmp_path):
    a, b = write_benchmark(tmp_path / "a", TINY), write_benchmark(tmp_path / "b", TINY)
    assert _digests(a) == _digests(b)
    assert read_recipe(a) == TINY
    train = RGBDDataset(a / "train", TINY.image_size)
    heldout = RGBDDataset(a / "heldout", TINY.image_size)
    assert (len(train), len(heldout)) == (TINY.train_count, TINY.heldout_count)
    images = [train[i]["x_0"] for i in range(len(train))]
    assert not any(torch.equal(x, heldout[j]["x_0"]) for x in images for j in range(len(heldout)))
    with pytest.raises(ValueError, match="another benchmark recipe"):
        write_benchmark(a, replace(TINY, heldout_count=5))


def test_truth_renders_the_held_out_scenes_on_the_3x9_cameras(tmp_path):
    root = write_benchmark(tmp_path / "bench", TINY)
    truth = load_truth(root, 1)
    assert torch.equal(truth["modelviews"], truth_cameras())
    size = TINY.image_size
    assert truth["rgb"].shape == (27, 3, size, size) and truth["depth"].shape == (27, 1, size, size)
    scene = scene_for_index(TINY.heldout_seed, 1, TINY.style)
    rgb, depth = scene.render(truth_cameras()[5:6], size)
    torch.testing.assert_close(truth["rgb"][5:6], rgb, atol=0.5 / 255 + 1e-6, rtol=0)
    torch.testing.assert_close(truth["depth"][5:6], depth)
    # view 0 of the truth is the held-out image itself (up to 8-bit quantisation)
    image = RGBDDataset(root / "heldout", size)[1]["x_0"][:3] * 0.5 + 0.5
    torch.testing.assert_close(image, truth["rgb"][0], atol=1 / 255 + 1e-6, rtol=0)


def test_bench_scenes_keep_every_element_of_the_task():
    generator = torch.Generator().manual_seed(0)
    for category in range(len(CATEGORIES)):
        scene = random_scene(generator, category, style="bench")
        rgb, depth = scene.render(front_camera(), 32, ssaa=1)
        assert scene.category == category
        assert depth.min() > 0.5  # beyond the official near plane
        assert scene.floor_y < 0 and scene.wall_z < 0
        assert rgb.std() > 0.02  # object, floor and wall are not one flat colour
    with pytest.raises(ValueError, match="style"):
        random_scene(generator, style="cartoon")


def test_shipped_classifier_recognises_fresh_renders():
    model = load_classifier(resolve_model("synth", "classifier"))
    assert sum(p.numel() for p in model.parameters()) * 4 < 2 * 2**20  # < 2 MB
    camera = front_camera()
    images, labels = [], []
    for index in range(48):  # a seed the classifier never saw
        scene = scene_for_index(99, index, "bench")
        images.append(scene.render(camera, 32)[0][0] * 2 - 1)
        labels.append(scene.category)
    accuracy = class_accuracy(predict(model, torch.stack(images)), torch.tensor(labels))
    assert accuracy >= 0.95


def test_classifier_round_trip_is_strict(tmp_path):
    model = SynthClassifier(3, width=8)
    folder = save_classifier(model, tmp_path / "c", {"note": "x"})
    loaded = load_classifier(folder)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded(x), model.eval()(x))
    with pytest.raises(FileNotFoundError):
        load_classifier(tmp_path / "missing")


def test_classifier_inception_score_bounds():
    confident = torch.eye(4).repeat(10, 1)  # every class equally often, each image certain
    assert classifier_inception_score(confident)[0] == pytest.approx(4.0)
    undecided = torch.full((40, 4), 0.25)
    assert classifier_inception_score(undecided)[0] == pytest.approx(1.0)
    one_class = torch.eye(4)[[0] * 40]
    assert classifier_inception_score(one_class)[0] == pytest.approx(1.0)
    assert math.isclose(class_accuracy(confident, torch.arange(4).repeat(10)), 1.0)
    with pytest.raises(ValueError, match="at least"):
        classifier_inception_score(confident[:5])
