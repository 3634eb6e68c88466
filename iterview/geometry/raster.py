"""A batched triangle rasteriser in plain PyTorch (OpenGL semantics, no OpenGL)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Fragments:
    """Nearest fragment per pixel. Row 0 is the top of the image.

    face: (B, S, S) int64 face index, -1 where empty; bary: (B, S, S, 3) perspective-correct barycentrics;
    zbuffer: (B, S, S) window depth in [0, 1] (1 where empty); front: (B, S, S) bool, CCW = front.
    """

    face: torch.Tensor
    bary: torch.Tensor
    zbuffer: torch.Tensor
    front: torch.Tensor


def rasterize(
    position: torch.Tensor,
    faces: torch.Tensor,
    modelview: torch.Tensor,
    size: int,
    fov: float = 45.0,
    near: float = 0.1,
    far: float = 200.0,
    face_mask: torch.Tensor | None = None,
) -> Fragments:
    """position: (B, V, 3) world; faces: (B, F, 3); modelview: (B, 4, 4); face_mask: (B, F) bool of faces
    that may be drawn (e.g. to discard back-facing padding). Strict '<' depth test, near-plane clipping."""
    raise NotImplementedError


def interpolate(fragments: Fragments, faces: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
    """Perspective-correct interpolation of per-vertex attributes (B, V, C) -> (B, S, S, C); 0 where empty."""
    raise NotImplementedError


def sample_nearest(texture: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Nearest-texel, clamped lookup: texture (B, C, N, N), uv (B, S, S, 2) with v down -> (B, C, S, S)."""
    raise NotImplementedError
