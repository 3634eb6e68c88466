"""Cameras: OpenGL look-at / perspective matrices, orbit cameras and depth conversions.

Conventions (official ivid): camera looks down -z, +y up, image row 0 is the top; matrices are
math layout (p_cam = M @ [p_world, 1]); tensors are batched first: (..., 4, 4).
"""

from __future__ import annotations

import torch

DEFAULT_FOV = 45.0


def focal_length(fov: float = DEFAULT_FOV) -> float:
    """Focal length in units of image width: 0.5 / tan(fov/2)."""
    raise NotImplementedError


def look_at(eye: torch.Tensor, target: torch.Tensor, up: torch.Tensor | None = None) -> torch.Tensor:
    """World->camera matrices. eye, target: (..., 3); up defaults to +y. Returns (..., 4, 4)."""
    raise NotImplementedError


def perspective(fov: float, near: float, far: float) -> torch.Tensor:
    """OpenGL projection matrix (aspect 1). Returns (4, 4) float32."""
    raise NotImplementedError


def orbit_camera(
    yaw: torch.Tensor | float,
    pitch: torch.Tensor | float,
    radius: torch.Tensor | float = 1.0,
    target: torch.Tensor | None = None,
) -> torch.Tensor:
    """Camera at r·(cos p·sin y, sin p, cos p·cos y) looking at target (origin). Returns (..., 4, 4)."""
    raise NotImplementedError


def camera_center(modelview: torch.Tensor) -> torch.Tensor:
    """World-space camera centre: translation of inverse(modelview). (..., 4, 4) -> (..., 3)."""
    raise NotImplementedError


def linear_to_zbuffer(z: torch.Tensor, near: float, far: float) -> torch.Tensor:
    """Official project_depth: (1/n - 1/clip(z, n, f)) / (1/n - 1/f), in [0, 1]."""
    raise NotImplementedError


def zbuffer_to_linear(d: torch.Tensor, near: float, far: float) -> torch.Tensor:
    """Official linearize_depth: n·f / (f - (f - n)·clip(d, 1e-6, 1 - 1e-6))."""
    raise NotImplementedError
