"""Simple warps (official SimpleRenderer) and the forward-backward warp that makes training pairs."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from iterview.geometry.mesh import Mesh

TRAIN_AUGMENTS = ("prewarp_noise", "blur", "erode_rgb")


@dataclass
class SimpleRender:
    """color: (B, 3, S, S); mask: (B, 1, S, S) bool (alpha > 0.5); depth: (B, 1, S, S) linear, far if empty."""

    color: torch.Tensor
    mask: torch.Tensor
    depth: torch.Tensor


@dataclass
class WarpResult:
    """color: (B, 3, H, W) in [0, 1]; depth: (B, 1, H, W) z-buffer (near, far); mask: (B, 1, H, W) float 0/1."""

    color: torch.Tensor
    depth: torch.Tensor
    mask: torch.Tensor


def render_simple(
    mesh: Mesh, texture: torch.Tensor, modelview: torch.Tensor, size: int, near: float = 0.1, far: float = 200.0
) -> SimpleRender:
    """Official SimpleRenderer: texture (B, 3, N, N); back faces and edge faces get alpha 0 but write depth."""
    raise NotImplementedError


def forward_backward_warp(
    rgbd: torch.Tensor,
    modelview: torch.Tensor,
    ssaa: int = 3,
    padding: int | None = None,
    near: float = 0.5,
    far: float = 100.0,
) -> WarpResult:
    """Official forward_backward_warp: rgbd (B, 4, H, W) in [0, 1], depth as z-buffer (near, far);
    modelview (B, 4, 4) the side camera. padding defaults to the image size."""
    raise NotImplementedError


def sample_training_cameras(
    batch: int, generator: torch.Generator | None = None, std: float = 0.15
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random side cameras as in training: returns modelview (B, 4, 4) and pose (B, 2) = (theta, phi)."""
    raise NotImplementedError


def make_training_pair(
    rgbd: torch.Tensor,
    generator: torch.Generator | None = None,
    augments: tuple[str, ...] = TRAIN_AUGMENTS,
    std: float = 0.15,
) -> dict[str, torch.Tensor]:
    """One G_c training pair per image. rgbd: (B, 4, H, W) in [-1, 1] (dataset x_0).
    Returns y (B, 4, H, W) in [-1, 1] (masked = -1), mask (B, 1, H, W), mask_rgb (B, 1, H, W), pose (B, 2)."""
    raise NotImplementedError
