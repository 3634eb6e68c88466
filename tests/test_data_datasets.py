"""RGBDDataset against the official loader's output, the official layout, and bad-input errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from iterview.data.datasets import RGBDDataset, disparity_to_zbuffer
from iterview.data.layout import read_index, save_depth, write_index

COLOUR_ATOL = 2 / 255 + 1e-6  # one 8-bit level in [-1, 1] where a LANCZOS implementation rounds differently


def _expected(reference: Path, name: str) -> dict[str, torch.Tensor]:
    expected = load_file(reference / "dataset" / f"{name}_x0.safetensors")
    # The official loader mis-reads palette and CMYK images; iterview matches the corrected result.
    for key in [k for k in expected if k.endswith("_expected_fixed")]:
        expected[key.removesuffix("_expected_fixed")] = expected.pop(key)
    return expected


def _golden_size(expected: dict[str, torch.Tensor]) -> int:
    """The image size the golden items were made at, read from their (4, S, S) shape."""
    (size,) = {tuple(x.shape) for x in expected.values()}
    assert len(size) == 3 and size[1] == size[2], size
    return size[1]


@pytest.mark.parametrize("name", ["single_category", "imagenet_style"])
def test_items_match_the_official_loader(reference, name):
    expected = _expected(reference, name)
    size = _golden_size(expected)
    dataset = RGBDDataset(reference / "dataset" / name, image_size=size)
    meta = json.loads((reference / "dataset" / f"{name}.json").read_text())
    order = meta["order"] if "order" in meta else [Path(item["image"]).name for item in meta["items"]]
    assert [Path(p).name for p in dataset.index.images] == order
    assert len(dataset) == len(expected)
    for index, image_path in enumerate(dataset.index.images):
        item = dataset[index]
        target = expected[Path(image_path).stem]
        assert item["x_0"].shape == target.shape and item["x_0"].dtype == torch.float32
        torch.testing.assert_close(item["x_0"][:3], target[:3], atol=COLOUR_ATOL, rtol=0)
        assert torch.equal(item["x_0"][3], target[3]), f"{image_path}: depth is exact"
        if "items" in meta:
            assert item["classes"].dtype == torch.long and item["classes"].ndim == 0
            assert int(item["classes"]) == meta["items"][index]["class"]
        else:
            assert "classes" not in item
    assert dataset.num_classes == (len(set(meta["labels"].values())) if "labels" in meta else None)


@pytest.mark.parametrize("name", ["single_category", "imagenet_style"])
def test_index_written_is_the_official_dataset_json(reference, name, tmp_path):
    """A fresh scan writes the dataset.json the official loader writes (single category) and its labels map."""
    meta = json.loads((reference / "dataset" / f"{name}.json").read_text())
    root = tmp_path / name
    shutil.copytree(reference / "dataset" / name, root)
    (root / "dataset.json").unlink(missing_ok=True)
    index = read_index(root)
    written = json.loads(write_index(root, index).read_text())
    if "dataset_json" in meta:
        assert written == meta["dataset_json"]
    else:
        assert written["images"] == [item["image"] for item in meta["items"]]
        assert written["labels"] == meta["labels"]
        assert [index.label_of(i) for i in range(len(index.images))] == [item["class"] for item in meta["items"]]


def test_official_dataset_json_is_read(reference, tmp_path):
    root = tmp_path / "single"
    shutil.copytree(reference / "dataset" / "single_category", root)
    official = json.loads((reference / "dataset" / "single_category.json").read_text())["dataset_json"]
    official["images"] = official["images"][::-1]
    official["depths"] = official["depths"][::-1]
    (root / "dataset.json").write_text(json.dumps(official))
    dataset = RGBDDataset(root, image_size=16)
    assert dataset.index.images == official["images"]
    assert len(dataset) == len(official["images"]) and dataset[0]["x_0"].shape == (4, 16, 16)


def test_zbuffer_preprocessing_follows_the_official_rule():
    near_scene = np.array([[25000.0, 12500.0], [625.0, 0.0]], np.float32)  # max disparity 4 > 1/near: rescaled
    d = disparity_to_zbuffer(near_scene)
    s = np.maximum(near_scene / 6250 / (4 * 0.5), 1e-3)
    np.testing.assert_allclose(d, np.clip((s - 2) / (0.01 - 2), 0, 1), atol=1e-7)
    assert d[0, 0] == 0.0 and d[1, 1] == 1.0
    far_scene = np.array([[625.0, 62.5]], np.float32)  # z = 10 and 100: no rescale, exact z-buffer
    z = 6250 / far_scene
    np.testing.assert_allclose(disparity_to_zbuffer(far_scene), (2 - 1 / z) / 1.99, atol=1e-6)


def _write_pair(root: Path, name: str, size: tuple[int, int], depth_size: tuple[int, int] | None = None) -> None:
    width, height = size
    Image.fromarray(np.full((height, width, 3), 128, np.uint8)).save(root / "images" / f"{name}.png")
    dh, dw = depth_size or (height, width)
    save_depth(root / "depths" / f"{name}.npz", np.full((dh, dw), 7000.0))


def test_scanned_layout_and_errors(tmp_path):
    (tmp_path / "images").mkdir()
    _write_pair(tmp_path, "a", (20, 10))
    _write_pair(tmp_path, "b", (10, 10), depth_size=(30, 30))
    _write_pair(tmp_path, "c", (20, 10), depth_size=(20, 10))
    dataset = RGBDDataset(tmp_path, image_size=8)
    assert dataset.index.depths == ["depths/a.npz", "depths/b.npz", "depths/c.npz"]
    assert dataset[1]["x_0"].shape == (4, 8, 8)  # depth at another resolution but the same aspect is fine
    with pytest.raises(ValueError, match="aspect ratio"):
        dataset[2]
    (tmp_path / "depths" / "a.npz").unlink()
    with pytest.raises(FileNotFoundError, match=r"depths/a\.npz"):
        dataset[0]
    (tmp_path / "images" / "class").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "images" / "class" / "x.png")
    with pytest.raises(ValueError, match="class folders"):
        read_index(tmp_path)
    with pytest.raises(FileNotFoundError, match="dataset folder not found"):
        RGBDDataset(tmp_path / "absent", image_size=8)


def test_multi_worker_loader_gives_the_same_batches(reference):
    dataset = RGBDDataset(reference / "dataset" / "imagenet_style", image_size=16)
    single = list(DataLoader(dataset, batch_size=2))
    parallel = list(DataLoader(dataset, batch_size=2, num_workers=2))
    for a, b in zip(single, parallel, strict=True):
        assert torch.equal(a["x_0"], b["x_0"]) and torch.equal(a["classes"], b["classes"])
