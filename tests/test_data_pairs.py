"""WarpPairDataset: synth -> dataset -> warp pair round trip, and pairs fixed by (seed, epoch, index)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from iterview.data.datasets import WarpPairDataset
from iterview.data.synth import write_synth_dataset


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
