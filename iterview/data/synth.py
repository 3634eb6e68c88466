"""Procedural 3D scenes rendered with exact depth: a dataset that needs no download, with ground truth."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

CATEGORIES = ("sphere", "box", "cylinder")


@dataclass
class SynthScene:
    """Analytic primitives (a textured object in front of a textured background), ray-cast exactly."""

    category: int

    def render(self, modelview: torch.Tensor, size: int, fov: float = 45.0) -> tuple[torch.Tensor, torch.Tensor]:
        """modelview: (V, 4, 4) -> rgb (V, 3, S, S) in [0, 1], linear depth (V, 1, S, S) along -z."""
        raise NotImplementedError


def random_scene(generator: torch.Generator, category: int | None = None) -> SynthScene:
    """Draw one scene (and its category when None)."""
    raise NotImplementedError


def write_synth_dataset(out_dir: str | Path, count: int, image_size: int = 64, seed: int = 0) -> Path:
    """Write `count` front views in the official ImageNet-style layout (class folders -> labels),
    depth saved as official-scale disparity (fp16, key arr_0). Resumable."""
    raise NotImplementedError
