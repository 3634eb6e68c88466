"""Aggregation compositor (official AggregationRenderer) and inference conditions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from iterview.geometry.mesh import Mesh


@dataclass
class AggregateRender:
    """color: (B, 3, S, S); depth: (B, 1, S, S) linear (near where empty); mask_color, mask_depth: bool."""

    color: torch.Tensor
    depth: torch.Tensor
    mask_color: torch.Tensor
    mask_depth: torch.Tensor


@dataclass
class Conditions:
    """Inference conditions at image size, all (B, C, H, W): color in [0, 1] (masked by mask_rgb);
    depth z-buffer (near, far) in [0, 1] (masked by mask); mask, mask_rgb float 0/1; depth_convex unmasked."""

    color: torch.Tensor
    depth: torch.Tensor
    mask: torch.Tensor
    mask_rgb: torch.Tensor
    depth_convex: torch.Tensor


def aggregate_render(
    meshes: Sequence[Mesh],
    textures: Sequence[torch.Tensor],
    modelview: torch.Tensor,
    size: int,
    near: float = 0.01,
    far: float = 200.0,
) -> AggregateRender:
    """Blend every source view's mesh (each textures[i]: (B, 3, N, N)) into the target cameras (B, 4, 4)."""
    raise NotImplementedError


def aggregate_conditions(
    meshes: Sequence[Mesh],
    textures: Sequence[torch.Tensor],
    modelview: torch.Tensor,
    image_size: int,
    ssaa: int = 3,
    near: float = 0.6,
    far: float = 5.0,
    atol: float = 0.03,
    rtol: float = 0.03,
    erode_rgb: int = 3,
    renderer_near: float = 0.01,
    renderer_far: float = 200.0,
) -> Conditions:
    """Official aggregate_conditions (§3.8) for target cameras modelview (B, 4, 4)."""
    raise NotImplementedError
