"""`iterview prepare`: depth through a tiny local transformers model, user depth, robustness, resume, sharding."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from depth_support import save_tiny_depth_anything, save_tiny_dpt
from PIL import Image
from typer.testing import CliRunner

from iterview.cli import app
from iterview.data.datasets import RGBDDataset
from iterview.data.images import load_rgb
from iterview.data.layout import load_depth, save_depth
from iterview.data.prepare import (
    DepthEstimator,
    model_depth_kind,
    pixel_values_for,
    prepare_dataset,
    to_official_disparity,
)
from iterview.data.synth import write_synth_dataset

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_dpt(tmp_path_factory) -> Path:
    return save_tiny_dpt(tmp_path_factory.mktemp("tiny_dpt"))


@pytest.fixture(scope="module")
def tiny_depth_anything(tmp_path_factory) -> Path:
    return save_tiny_depth_anything(tmp_path_factory.mktemp("tiny_depth_anything"))


def _pattern(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    return np.kron(base, np.ones((8, 8, 1), np.uint8))[:height, :width]


def _image_folder(root: Path) -> Path:
    """Class folders with every kind of file prepare must handle."""
    cats, dogs = root / "cats", root / "dogs"
    cats.mkdir(parents=True)
    dogs.mkdir()
    Image.fromarray(_pattern(40, 56)).save(cats / "rgb.jpg", quality=95)
    Image.fromarray(_pattern(48, 40, 1)[..., 0]).save(cats / "gray.png")
    palette = Image.fromarray((_pattern(40, 40, 2)[..., 0] % 4).astype(np.uint8), mode="P")
    palette.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 250, 200, 10] + [0] * 756)
    palette.save(cats / "palette.png")
    Image.fromarray(np.dstack([_pattern(36, 50, 3), _pattern(36, 50, 4)[..., 0]])).save(cats / "rgba.png")
    cmyk = Image.fromarray(_pattern(40, 48, 5)).convert("CMYK")
    cmyk.save(dogs / "cmyk.jpg", quality=95)
    rotated = Image.fromarray(_pattern(40, 64, 6))
    exif = rotated.getexif()
    exif[0x0112] = 6
    rotated.save(dogs / "rotated.jpg", exif=exif, quality=95)
    cv2.imwrite(str(dogs / "deep.png"), (_pattern(40, 40, 7)[..., 0].astype(np.uint16) * 257))
    Image.fromarray(_pattern(12, 12)).save(dogs / "tiny.png")
    (dogs / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    Image.fromarray(_pattern(40, 40, 8)).save(dogs / "rgb.png")
    Image.fromarray(_pattern(40, 40, 9)).save(dogs / "rgb.jpg")  # same stem as rgb.png: its depth would collide
    return root


def test_depth_kinds_map_to_the_official_scale():
    z = torch.tensor([[0.5, 1.0], [4.0, 100.0]])
    torch.testing.assert_close(to_official_disparity(z, "depth"), 6250 / z)
    relative = torch.tensor([[2.0, 1.0], [0.5, 0.0]])
    torch.testing.assert_close(to_official_disparity(relative, "disparity"), relative * 6250)
    raw = torch.tensor([[7000.0, -3.0], [1e6, 20.0]])
    torch.testing.assert_close(to_official_disparity(raw, "official"), torch.tensor([[7000.0, 0.0], [65504.0, 20.0]]))
    assert to_official_disparity(torch.tensor([[0.0, 2.0]]), "depth")[0, 0] == 0  # invalid depth -> far
    with pytest.raises(ValueError, match="positive maximum"):
        to_official_disparity(torch.zeros(2, 2), "disparity")
    with pytest.raises(ValueError, match="depth kind"):
        to_official_disparity(z, "inverse")


def test_model_kinds_from_their_configs():
    from transformers import DepthAnythingConfig, DPTConfig

    assert model_depth_kind(DPTConfig()) == "official"
    assert model_depth_kind(DepthAnythingConfig()) == "disparity"
    assert model_depth_kind(DepthAnythingConfig(depth_estimation_type="metric")) == "depth"


def test_prepare_with_a_model_handles_every_image_kind(tmp_path, tiny_dpt):
    images = _image_folder(tmp_path / "in")
    out = tmp_path / "out"
    report = prepare_dataset(images, out, depth_model=str(tiny_dpt), batch_size=2, num_workers=0)
    reasons = {r["image"]: r["reason"] for r in report.skipped}
    assert set(reasons) == {"dogs/tiny.png", "dogs/broken.jpg", "dogs/rgb.png"}
    assert "too small: 12x12" in reasons["dogs/tiny.png"]
    assert "truncated" in reasons["dogs/broken.jpg"]
    assert "same name stem" in reasons["dogs/rgb.png"]
    assert (report.total, report.written, report.already_done) == (11, 8, 0)
    assert json.loads((out / "prepare_report.json").read_text())["skipped"] == report.skipped

    index = json.loads((out / "dataset.json").read_text())
    assert index["labels"] == {"cats": 0, "dogs": 1}
    assert len(index["images"]) == 8
    # plain RGB files are copied byte for byte; everything else becomes an upright RGB(A) PNG
    assert (out / "images/cats/rgb.jpg").read_bytes() == (images / "cats/rgb.jpg").read_bytes()
    assert "images/dogs/cmyk.png" in index["images"] and "images/dogs/rotated.png" in index["images"]
    assert Image.open(out / "images/dogs/rotated.png").size == (40, 64)
    np.testing.assert_array_equal(
        np.asarray(Image.open(out / "images/dogs/cmyk.png")), np.asarray(load_rgb(images / "dogs/cmyk.jpg"))
    )
    assert Image.open(out / "images/cats/rgba.png").mode == "RGBA"

    estimator = DepthEstimator(str(tiny_dpt))
    for image_path, depth_path in zip(index["images"], index["depths"], strict=True):
        with np.load(out / depth_path, allow_pickle=False) as archive:
            assert list(archive.keys()) == ["arr_0"] and archive["arr_0"].dtype == np.float16
            stored = archive["arr_0"]
        rgb = Image.open(out / image_path).convert("RGB")
        assert stored.shape == (rgb.height, rgb.width)
        expected = estimator.predict(pixel_values_for(estimator.processor, rgb)[None], [stored.shape])[0]
        np.testing.assert_allclose(stored, expected.numpy(), rtol=2e-3, atol=0.5)
        assert stored.min() > 1000  # a real, non-degenerate MiDaS-scale map

    dataset = RGBDDataset(out, image_size=32)
    assert len(dataset) == 8 and dataset.num_classes == 2
    assert all(dataset[i]["x_0"].abs().max() <= 1 for i in range(8))


def test_prepare_with_depth_anything_stores_its_relative_disparity_at_the_official_scale(tmp_path, tiny_depth_anything):
    """The Depth Anything path: relative disparity, bicubically resized to the image, scaled so that its maximum
    lands at 2 · 6250 (twice the official near-plane disparity), stored as fp16. The expected maps come from the
    transformers model run directly."""
    from transformers import AutoImageProcessor, AutoModelForDepthEstimation

    images = tmp_path / "in"
    images.mkdir()
    for name, (height, width) in {"wide": (40, 56), "tall": (48, 40), "square": (40, 40)}.items():
        Image.fromarray(_pattern(height, width, len(name))).save(images / f"{name}.png")
    out = tmp_path / "out"
    report = prepare_dataset(images, out, depth_model=str(tiny_depth_anything), batch_size=2, num_workers=0)
    assert (report.total, report.written) == (3, 3) and not report.skipped

    processor = AutoImageProcessor.from_pretrained(tiny_depth_anything)
    model = AutoModelForDepthEstimation.from_pretrained(tiny_depth_anything).eval()
    index = json.loads((out / "dataset.json").read_text())
    for image_path, depth_path in zip(index["images"], index["depths"], strict=True):
        rgb = Image.open(out / image_path).convert("RGB")
        with torch.no_grad():
            raw = model(**processor(images=rgb, return_tensors="pt")).predicted_depth[:, None]
        raw = torch.nn.functional.interpolate(raw, size=(rgb.height, rgb.width), mode="bicubic", align_corners=False)
        expected = (raw[0, 0] * (2 * 6250 / raw.max())).numpy()
        stored = load_depth(out / depth_path)
        np.testing.assert_allclose(stored, expected, rtol=1e-3, atol=0)
        assert stored.max() == pytest.approx(12500, rel=1e-3) and stored.min() < 0.95 * stored.max()


def test_prepare_dataset_and_training_pairs_chain(tmp_path, tiny_dpt):
    """prepare → RGBDDataset → WarpPairDataset through a two-worker DataLoader: each pair's target is the
    dataset's item, and its condition, warped to a side camera and back, is that target wherever it is kept."""
    from torch.utils.data import DataLoader

    from iterview.data.datasets import WarpPairDataset

    images = tmp_path / "in"
    images.mkdir()
    for i in range(4):
        Image.fromarray(_pattern(40, 48, i)).save(images / f"{i}.png")
    out = tmp_path / "out"
    assert prepare_dataset(images, out, depth_model=str(tiny_dpt), num_workers=0).written == 4
    plain = RGBDDataset(out, image_size=32)
    pairs = WarpPairDataset(out, image_size=32, augments=(), seed=3)
    for index, item in enumerate(DataLoader(pairs, batch_size=1, num_workers=2)):
        assert torch.equal(item["x_0"][0], plain[index]["x_0"])
        x0, y, mask, mask_rgb = item["x_0"][0], item["y"][0], item["mask"][0].bool(), item["mask_rgb"][0].bool()
        assert 0.3 < mask.float().mean() < 1 and (mask_rgb <= mask).all()
        assert ((y[3:] - x0[3:]).abs()[mask] < 2e-3).float().mean() > 0.99
        # colour: nearest-texel sampling and LANCZOS blur the 8-pixel blocks of the pattern on the random network's
        # bumpy depth (measured: mean 0.05, median 0.03 in [-1, 1] units)
        colour_error = (y[:3] - x0[:3]).abs()[mask_rgb.expand(3, -1, -1)]
        assert colour_error.mean() < 0.08, colour_error.mean()


def test_prepare_resumes_and_only_does_the_missing_work(tmp_path, tiny_dpt):
    images = tmp_path / "in"
    images.mkdir()
    for i in range(3):
        Image.fromarray(_pattern(40, 48, i)).save(images / f"{i}.jpg")
    out = tmp_path / "out"
    first = prepare_dataset(images, out, depth_model=str(tiny_dpt), num_workers=2)
    assert first.written == 3
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.npz")}
    (out / "depths/1.npz").unlink()
    (out / "depths/.2.npz.x.partial").write_bytes(b"left by a killed run")
    second = prepare_dataset(images, out, depth_model=str(tiny_dpt), num_workers=0)
    assert (second.written, second.already_done) == (1, 2)
    assert (out / "depths/0.npz").stat().st_mtime_ns == stamps[out / "depths/0.npz"]
    assert not list(out.rglob("*.partial"))
    assert json.loads((out / "dataset.json").read_text())["depths"] == [f"depths/{i}.npz" for i in range(3)]


def test_user_depth_in_every_format(tmp_path):
    images, depths = tmp_path / "in", tmp_path / "depth"
    images.mkdir()
    depths.mkdir()
    for name in ("a", "b", "c", "d", "e", "f"):
        Image.fromarray(_pattern(32, 40)).save(images / f"{name}.png")
    z = np.linspace(0.6, 5.0, 32 * 40, dtype=np.float32).reshape(32, 40)
    np.savez(depths / "a.npz", z)
    np.save(depths / "b.npy", z[::2, ::2])  # half resolution, same aspect: resized
    cv2.imwrite(str(depths / "c.png"), np.round(z * 1000).astype(np.uint16))
    Image.fromarray(np.zeros((32, 40), np.uint8)).save(depths / "d.png")  # 8-bit: refused
    np.save(depths / "e.npy", z[:, :20])  # wrong aspect: refused
    out = tmp_path / "out"
    report = prepare_dataset(images, out, depth_from=depths, depth_kind="depth", num_workers=0)
    reasons = {r["image"]: r["reason"] for r in report.skipped}
    assert set(reasons) == {"d.png", "e.png", "f.png"}
    assert "16-bit" in reasons["d.png"] and "aspect" in reasons["e.png"] and "no .npz/.npy/.png" in reasons["f.png"]
    np.testing.assert_allclose(load_depth(out / "depths/a.npz"), 6250 / z, rtol=1e-3)
    np.testing.assert_allclose(load_depth(out / "depths/c.npz"), 6250 / (np.round(z * 1000)), rtol=1e-3)
    assert load_depth(out / "depths/b.npz").shape == (32, 40)
    with pytest.raises(FileNotFoundError, match="depth-from"):
        prepare_dataset(images, out, depth_from=tmp_path / "absent")
    with pytest.raises(ValueError, match="must not lie inside"):
        prepare_dataset(images, images / "out", depth_from=depths)


def test_synth_through_prepare_gives_the_same_dataset(tmp_path):
    synth = write_synth_dataset(tmp_path / "synth", count=5, image_size=24, seed=3)
    out = tmp_path / "prepared"
    prepare_dataset(synth / "images", out, depth_from=synth / "depths", num_workers=0, min_size=16)
    original, prepared = RGBDDataset(synth, image_size=16), RGBDDataset(out, image_size=16)
    assert len(prepared) == 5 and prepared.num_classes == 4
    position = {path: i for i, path in enumerate(prepared.index.images)}
    for i, path in enumerate(original.index.images):
        a, b = original[i], prepared[position[path]]
        assert torch.equal(a["x_0"], b["x_0"]) and torch.equal(a["classes"], b["classes"])


def test_prepare_command_with_user_depth(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "depth").mkdir()
    Image.fromarray(_pattern(40, 40)).save(tmp_path / "in/x.png")
    Image.fromarray(_pattern(8, 8)).save(tmp_path / "in/small.png")
    save_depth(tmp_path / "depth/x.npz", np.full((40, 40), 9000.0))
    result = CliRunner().invoke(
        app,
        [
            "prepare",
            str(tmp_path / "in"),
            str(tmp_path / "out"),
            "--depth-from",
            str(tmp_path / "depth"),
            "--num-workers",
            "0",
        ],
    )
    assert result.exit_code == 2, result.output  # the good image is written, the bad one reported, then exit 2
    assert "2 images: 1 written, 0 already done, 1 skipped" in result.output
    assert "too small" in result.output and "1 of 2 failed" in result.output
    np.testing.assert_allclose(load_depth(tmp_path / "out/depths/x.npz"), 9000.0)


def test_accelerate_launch_shards_over_two_processes(tmp_path, tiny_dpt):
    images = tmp_path / "in"
    images.mkdir()
    for i in range(6):
        Image.fromarray(_pattern(32, 40, i)).save(images / f"{i}.png")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    # accelerate's own --cpu launcher starts a single process; --multi_gpu goes through torch.distributed.run,
    # and prepare falls back to CPU processes (gloo) when there is no CUDA device.
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--main_process_port", "29571", "-m", "iterview",
        "prepare", str(images), str(out), "--depth-model", str(tiny_dpt), "--num-workers", "0",
    ]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "6 images: 6 written" in result.stdout
    assert "3/3" in result.stderr and "6/6" not in result.stderr  # the main process did only its half
    index = json.loads((out / "dataset.json").read_text())
    assert index["depths"] == [f"depths/{i}.npz" for i in range(6)]
    estimator = DepthEstimator(str(tiny_dpt))
    for i in range(6):
        rgb = load_rgb(out / f"images/{i}.png")
        expected = estimator.predict(pixel_values_for(estimator.processor, rgb)[None], [(32, 40)])[0]
        np.testing.assert_allclose(load_depth(out / f"depths/{i}.npz"), expected.numpy(), rtol=2e-3, atol=0.5)
