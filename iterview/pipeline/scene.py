"""Generated scenes on disk without pickle: npz of plain arrays + JSON cameras."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class Scene:
    """rgbd: (V, 4, H, W) in [-1, 1], depth channel = z-buffer for (near, far); modelviews: (V, 4, 4)."""

    rgbd: torch.Tensor
    modelviews: torch.Tensor
    fov: float = 45.0
    near: float = 0.6
    far: float = 5.0
    label: int | None = None

    def save(self, path: str | Path) -> Path:
        """Atomically write `<path>.npz` (arrays) and `<path>.json` (cameras, metadata)."""
        raise NotImplementedError

    @classmethod
    def load(cls, path: str | Path) -> Scene:
        raise NotImplementedError
