"""RGBD datasets in the official layout (images/, depths/*.npz, dataset.json)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from iterview.geometry.warp import TRAIN_AUGMENTS


class RGBDDataset(Dataset):
    """Official BaseDataset with z-buffer depth (near 0.5, far 100) and normalisation to [-1, 1].

    Items: {"x_0": (4, S, S) float32 in [-1, 1], "classes": () int64 (only if labelled)}.
    `num_classes` is None for single-category data.
    """

    num_classes: int | None

    def __init__(self, root: str | Path, image_size: int, near: float = 0.5, far: float = 100.0) -> None:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError


class WarpPairDataset(RGBDDataset):
    """RGBDDataset plus a forward-backward-warp training pair per item, seeded per (seed, epoch, index).

    Items add: "y" (4, S, S) in [-1, 1], "mask" (1, S, S), "mask_rgb" (1, S, S), "pose" (2,).
    """

    def __init__(
        self,
        root: str | Path,
        image_size: int,
        augments: tuple[str, ...] = TRAIN_AUGMENTS,
        std: float = 0.15,
        seed: int = 0,
    ) -> None:
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        raise NotImplementedError
