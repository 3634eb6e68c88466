"""RGBD image -> triangle mesh (official depth_to_mesh), batched."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

FLAG_EDGE = 1
FLAG_PADDING = 2
FLAG_ERODED = 4


@dataclass
class Mesh:
    """A batch of grid meshes, one per image.

    position: (B, V, 3) world space; uv: (B, V, 2); flag: (B, V) int64 (edge | padding | eroded bits);
    normal: (B, V, 3) world space or None; faces: (B, F, 3) int64 (official order and CCW winding);
    modelview: (B, 4, 4) the source camera; fov in degrees.
    """

    position: torch.Tensor
    uv: torch.Tensor
    flag: torch.Tensor
    faces: torch.Tensor
    modelview: torch.Tensor
    fov: float
    normal: torch.Tensor | None = None


def depth_to_mesh(
    depth: torch.Tensor,
    modelview: torch.Tensor,
    fov: float = 45.0,
    padding: int | Literal["frustum"] | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    erode_rgb: int = 0,
    compute_normals: bool = False,
) -> Mesh:
    """Official depth_to_mesh. depth: (B, N, N) linear z > 0; modelview: (B, 4, 4) world->camera."""
    raise NotImplementedError
