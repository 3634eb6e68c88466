"""RGBD datasets in the official layout (images/, depths/*.npz, dataset.json)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from iterview.data.images import load_image
from iterview.data.layout import load_depth, read_index, same_aspect
from iterview.data.pairs import TRAIN_AUGMENTS, make_training_pair
from iterview.seeds import derive_seed

DISPARITY_SCALE = 6250.0


def disparity_to_zbuffer(disparity: np.ndarray, near: float = 0.5, far: float = 100.0) -> np.ndarray:
    """Official depth preprocessing at full resolution. disparity: (H, W) official scale -> z-buffer in [0, 1].

    s = D / 6250 is 1/z; a map whose nearest point is closer than `near` is rescaled so that it sits exactly
    on the near plane; s is floored at 1e-3 (z <= 1000); then the OpenGL window depth of (near, far).
    """
    s = disparity.astype(np.float32) / np.float32(DISPARITY_SCALE)
    peak = s.max()
    if peak > 1 / near:
        s = s / (peak * np.float32(near))
    s = np.maximum(s, np.float32(1e-3))
    return np.clip((s - 1 / near) / (1 / far - 1 / near), 0, 1).astype(np.float32)


def resize_shorter_side(image: Image.Image, size: int, resample: Image.Resampling) -> Image.Image:
    """torchvision Resize(size): the shorter side becomes `size`, the longer one int(size · long / short)."""
    width, height = image.size
    new_size = (size, int(size * height / width)) if width <= height else (int(size * width / height), size)
    return image.resize(new_size, resample)


def center_crop(image: Image.Image, size: int) -> Image.Image:
    """torchvision CenterCrop(size) on an image at least `size` on each side (offsets rounded half to even)."""
    width, height = image.size
    top = round((height - size) / 2.0)
    left = round((width - size) / 2.0)
    return image.crop((left, top, left + size, top + size))


def rgbd_tensor(rgb: Image.Image, zbuffer: Image.Image) -> torch.Tensor:
    """An RGB image and its z-buffer image (mode F, values in [0, 1]) of the same size -> (4, H, W) in [-1, 1]."""
    rgb_tensor = torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255).permute(2, 0, 1)
    depth_tensor = torch.from_numpy(np.array(zbuffer, dtype=np.float32))[None]
    return torch.cat([rgb_tensor, depth_tensor]) * 2 - 1


def model_input(
    image: Image.Image, disparity: np.ndarray, size: int, near: float = 0.5, far: float = 100.0
) -> torch.Tensor:
    """An image (RGB, or RGBA whose alpha is dropped after resizing) and its official-scale disparity (H, W) ->
    the model's RGBD (4, size, size) in [-1, 1]: the official loader's preprocessing (see RGBDDataset)."""
    zbuffer = Image.fromarray(disparity_to_zbuffer(disparity, near, far))
    # Alpha goes only after the resize, as in the official loader (Pillow resamples RGBA premultiplied).
    rgb = center_crop(resize_shorter_side(image, size, Image.Resampling.LANCZOS), size).convert("RGB")
    depth = center_crop(resize_shorter_side(zbuffer, size, Image.Resampling.NEAREST), size)
    return rgbd_tensor(rgb, depth)


class RGBDDataset(Dataset):
    """Official BaseDataset with z-buffer depth (near 0.5, far 100) and normalisation to [-1, 1].

    Colour: shorter side resized to `image_size` with LANCZOS, centre crop; depth: the same with NEAREST on
    the preprocessed z-buffer (disparity_to_zbuffer). Images go through `load_image`, so palette, CMYK, 16-bit
    and EXIF-rotated files are read correctly (the official loader mis-reads palette and CMYK images).

    Items: {"x_0": (4, S, S) float32 in [-1, 1], "classes": () int64 (only if labelled)}.
    `num_classes` is None for single-category data.
    """

    num_classes: int | None

    def __init__(self, root: str | Path, image_size: int, near: float = 0.5, far: float = 100.0) -> None:
        if image_size < 1:
            raise ValueError(f"image_size must be positive, got {image_size}")
        if not 0 < near < far:
            raise ValueError(f"expected 0 < near < far, got near={near}, far={far}")
        self.root = Path(root)
        self.index = read_index(self.root)
        self.image_size = image_size
        self.near = near
        self.far = far
        self.num_classes = None if self.index.labels is None else len(self.index.labels)

    def __len__(self) -> int:
        return len(self.index.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image = load_image(self.root / self.index.images[index])
        depth_path = self.root / self.index.depths[index]
        disparity = load_depth(depth_path)
        if not same_aspect(disparity.shape, (image.height, image.width)):
            raise ValueError(
                f"{depth_path}: depth of {disparity.shape[0]}x{disparity.shape[1]} (HxW) does not share the aspect "
                f"ratio of its image ({image.height}x{image.width})"
            )
        item = {"x_0": model_input(image, disparity, self.image_size, self.near, self.far)}
        label = self.index.label_of(index)
        if label is not None:
            item["classes"] = torch.tensor(label, dtype=torch.long)
        return item


class WarpPairDataset(RGBDDataset):
    """RGBDDataset plus a forward-backward-warp training pair per item, seeded per (seed, epoch, index).

    The pair of item i in epoch e depends only on (seed, e, i): any number of DataLoader workers and an exact
    training resume give the same pairs. Call `set_epoch` before iterating each epoch (with
    `persistent_workers=False`, so that the workers pick up the new epoch).

    Items add: "y" (4, S, S) in [-1, 1], "mask" (1, S, S), "mask_rgb" (1, S, S), "pose" (2,).
    """

    def __init__(
        self,
        root: str | Path,
        image_size: int,
        augments: tuple[str, ...] = TRAIN_AUGMENTS,
        std: float = 0.15,
        seed: int = 0,
        pixel_scale: float = 1.0,
    ) -> None:
        super().__init__(root, image_size)
        self.augments = tuple(augments)
        self.std = std
        self.pixel_scale = pixel_scale
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the next items' warp pairs for this epoch (each pair is fixed by (seed, epoch, index))."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = super().__getitem__(index)
        generator = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, index))
        pair = make_training_pair(item["x_0"][None], generator, self.augments, self.std, self.pixel_scale)
        item.update({key: value[0] for key, value in pair.items()})
        return item
