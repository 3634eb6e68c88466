"""WarpPairDataset: synth -> dataset -> warp pair round trip, and pairs fixed by (seed, epoch, index)."""

from __future__ import annotations

import pytest
import torch
from geometry_support import load_warping, smooth_scene, to_image
from torch.utils.data import DataLoader

from iterview.data.datasets import WarpPairDataset
from iterview.data.pairs import make_training_pair, sample_training_cameras
from iterview.data.synth import write_synth_dataset
from iterview.geometry.cameras import camera_center
from iterview.geometry.imageops import erode, gaussian_blur3
from iterview.geometry.warp import forward_backward_warp


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    return write_synth_dataset(tmp_path_factory.mktemp("pairs") / "synth", count=4, image_size=64, seed=0)


def test_synth_pairs_round_trip(synth_root):
    pairs = WarpPairDataset(synth_root, image_size=64, seed=0)
    assert len(pairs) == 4 and pairs.num_classes == 4
    for index in range(len(pairs)):
        item = pairs[index]
        assert item["x_0"].shape == item["y"].shape == (4, 64, 64)
        assert item["mask"].shape == item["mask_rgb"].shape == (1, 64, 64) and item["pose"].shape == (2,)
        assert item["classes"].dtype == torch.long
        mask, mask_rgb = item["mask"].bool(), item["mask_rgb"].bool()
        assert set(item["mask"].unique().tolist()) <= {0.0, 1.0}
        assert not (mask_rgb & ~mask).any()
        assert item["y"].min() >= -1 and item["y"].max() <= 1
        assert (item["y"][:, ~mask[0]] == -1).all()
        # a small camera move keeps much of the view (what leaves the side camera's frame or hides behind the
        # object comes back as holes), and where it is kept the warped depth is the scene's own depth
        assert mask.float().mean() > 0.3
        depth_error = (item["y"][3] - item["x_0"][3]).abs()[mask[0]]
        assert depth_error.median() < 0.01 and depth_error.max() < 0.05


def test_pairs_depend_only_on_seed_epoch_and_index(synth_root):
    pairs = WarpPairDataset(synth_root, image_size=64, seed=7)
    again = WarpPairDataset(synth_root, image_size=64, seed=7)
    first = pairs[2]
    for key, value in again[2].items():
        assert torch.equal(value, first[key]), key
    assert not torch.equal(WarpPairDataset(synth_root, image_size=64, seed=8)[2]["pose"], first["pose"])
    pairs.set_epoch(1)
    assert not torch.equal(pairs[2]["pose"], first["pose"])
    pairs.set_epoch(0)
    assert torch.equal(pairs[2]["y"], first["y"])


def test_multi_worker_loading_gives_the_same_pairs(synth_root):
    pairs = WarpPairDataset(synth_root, image_size=64, seed=3)
    pairs.set_epoch(2)
    serial = list(DataLoader(pairs, batch_size=2))
    parallel = list(DataLoader(pairs, batch_size=2, num_workers=2))
    for a, b in zip(serial, parallel, strict=True):
        for key in a:
            assert torch.equal(a[key], b[key]), key


def test_training_cameras_follow_the_official_distribution():
    modelview, pose = sample_training_cameras(20000, torch.Generator().manual_seed(0))
    assert modelview.shape == (20000, 4, 4) and pose.shape == (20000, 2)
    assert pose.std(0).sub(0.15).abs().max() < 0.005 and pose.mean(0).abs().max() < 0.005
    eye = camera_center(modelview)
    radius = eye.norm(dim=1)
    assert abs(radius.mean().item() - 1) < 0.005 and abs(radius.std().item() - 0.1) < 0.005
    torch.testing.assert_close(torch.atan2(eye[:, 0], eye[:, 2]), pose[:, 0], atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.asin(eye[:, 1] / radius), pose[:, 1], atol=1e-4, rtol=0)
    rotation = modelview[:, :3, :3]
    torch.testing.assert_close(rotation @ rotation.transpose(1, 2), torch.eye(3).expand(20000, 3, 3), atol=1e-5, rtol=0)
    # The look-at target is jittered with std 0.05 per axis: across the optical axis that moves the origin off
    # the axis by a 2D Gaussian offset, mean square 2 · 0.05².
    axis = modelview[:, 2, :3]  # unit, pointing backwards
    offset = -eye - (-eye * axis).sum(1, keepdim=True) * axis
    assert abs(offset.square().sum(1).mean().item() - 2 * 0.05**2) < 2e-4
    again, _ = sample_training_cameras(20000, torch.Generator().manual_seed(0))
    assert torch.equal(modelview, again)


def test_training_pair_without_augments_is_the_forward_backward_warp():
    rgbd = torch.cat([smooth_scene(24, 1), smooth_scene(24, 2)]) * 2 - 1
    pair = make_training_pair(rgbd, torch.Generator().manual_seed(5), augments=())
    modelview, pose = sample_training_cameras(2, torch.Generator().manual_seed(5))
    warp = forward_backward_warp(rgbd * 0.5 + 0.5, modelview)
    torch.testing.assert_close(pair["y"], torch.cat([warp.color, warp.depth], 1) * 2 - 1)
    assert torch.equal(pair["mask"], warp.mask) and torch.equal(pair["mask_rgb"], warp.mask)
    assert torch.equal(pair["pose"], pose)


def test_training_pair_augments_are_seeded_and_official():
    rgbd = torch.cat([smooth_scene(24, s) for s in range(8)])
    rgbd[:, :3] = torch.rand(8, 3, 24, 24, generator=torch.Generator().manual_seed(0))  # detail tells blur apart
    rgbd = rgbd * 2 - 1
    pair = make_training_pair(rgbd, torch.Generator().manual_seed(3))
    again = make_training_pair(rgbd, torch.Generator().manual_seed(3))
    other = make_training_pair(rgbd, torch.Generator().manual_seed(4))
    assert all(torch.equal(pair[k], again[k]) for k in pair)
    assert not torch.equal(pair["y"], other["y"])
    assert set(pair) == {"y", "mask", "mask_rgb", "pose"}
    assert pair["y"].shape == (8, 4, 24, 24) and pair["mask"].shape == pair["mask_rgb"].shape == (8, 1, 24, 24)

    mask, mask_rgb, y = pair["mask"].bool(), pair["mask_rgb"].bool(), pair["y"]
    assert (y[~mask.expand_as(y)] == -1).all()
    assert (y[:, :3][~mask_rgb.expand(-1, 3, -1, -1)] == -1).all()
    for b in range(8):  # mask_rgb is the mask eroded by one of the official kernels
        assert any(torch.equal(mask_rgb[b : b + 1], erode(mask[b : b + 1], k)) for k in (1, 3, 5, 7, 9))

    # Blur: the RGB is either the noisy double warp or the clean image blurred with some sigma in [1e-3, 1.001).
    rgb = (y[:, :3] + 1) / 2
    blurred = [gaussian_blur3(rgbd[:, :3] * 0.5 + 0.5, torch.full((8,), s)) for s in torch.linspace(1e-3, 1.001, 201)]
    close = torch.stack([((b - rgb).abs() * mask_rgb).amax((1, 2, 3)) for b in blurred]).amin(0)
    assert (close < 0.01).sum() >= 4  # with p = 0.8 and this seed most samples are blurred
    assert (close > 0.1).any()  # ... but not all


def test_training_pair_bad_input(reference):
    rgbd = to_image(load_warping(reference)["train_rgbd"])
    with pytest.raises(ValueError, match=r"z-buffer in \[-1, 1\]"):
        make_training_pair(rgbd * 3)
    with pytest.raises(ValueError, match="unknown augments"):
        make_training_pair(rgbd * 2 - 1, augments=("flip",))
