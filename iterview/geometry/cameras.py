"""Cameras: OpenGL look-at / perspective matrices, orbit cameras and depth conversions.

Conventions (official ivid): camera looks down -z, +y up, image row 0 is the top; matrices are
math layout (p_cam = M @ [p_world, 1]); tensors are batched first: (..., 4, 4).
"""

from __future__ import annotations

import math

import torch

DEFAULT_FOV = 45.0


def focal_length(fov: float = DEFAULT_FOV) -> float:
    """Focal length in units of image width: 0.5 / tan(fov/2)."""
    return 0.5 / math.tan(math.radians(fov) / 2)


def _as_tensor(value: torch.Tensor | float, like: torch.Tensor | None = None) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.to(torch.float32) if not value.is_floating_point() else value
    device = like.device if like is not None else None
    return torch.tensor(value, dtype=torch.float32, device=device)


def look_at(eye: torch.Tensor, target: torch.Tensor, up: torch.Tensor | None = None) -> torch.Tensor:
    """World->camera matrices (glm.lookAt). eye, target: (..., 3); up defaults to +y. Returns (..., 4, 4)."""
    eye, target = torch.broadcast_tensors(_as_tensor(eye), _as_tensor(target, eye))
    if up is None:
        up = torch.tensor([0.0, 1.0, 0.0], dtype=eye.dtype, device=eye.device)
    up = up.to(eye).expand_as(eye)
    f = torch.nn.functional.normalize(target - eye, dim=-1)
    s = torch.nn.functional.normalize(torch.linalg.cross(f, up, dim=-1), dim=-1)
    u = torch.linalg.cross(s, f, dim=-1)
    rotation = torch.stack([s, u, -f], dim=-2)
    translation = -(rotation @ eye.unsqueeze(-1))
    top = torch.cat([rotation, translation], dim=-1)
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=eye.dtype, device=eye.device).expand(*eye.shape[:-1], 1, 4)
    return torch.cat([top, bottom], dim=-2)


def perspective(fov: float, near: float, far: float) -> torch.Tensor:
    """OpenGL projection matrix (aspect 1, NDC z in [-1, 1]). Returns (4, 4) float32."""
    if not 0 < near < far:
        raise ValueError(f"expected 0 < near < far, got near={near}, far={far}")
    cot = 1.0 / math.tan(math.radians(fov) / 2)
    matrix = torch.zeros(4, 4)
    matrix[0, 0] = cot
    matrix[1, 1] = cot
    matrix[2, 2] = -(far + near) / (far - near)
    matrix[2, 3] = -2 * far * near / (far - near)
    matrix[3, 2] = -1.0
    return matrix


def orbit_eye(
    yaw: torch.Tensor | float, pitch: torch.Tensor | float, radius: torch.Tensor | float = 1.0
) -> torch.Tensor:
    """Eye position r·(cos p·sin y, sin p, cos p·cos y): positive yaw is on +x, positive pitch above."""
    yaw, pitch = torch.broadcast_tensors(_as_tensor(yaw), _as_tensor(pitch))
    radius = _as_tensor(radius, yaw)
    direction = torch.stack([pitch.cos() * yaw.sin(), pitch.sin(), pitch.cos() * yaw.cos()], dim=-1)
    return radius.unsqueeze(-1) * direction


def orbit_camera(
    yaw: torch.Tensor | float,
    pitch: torch.Tensor | float,
    radius: torch.Tensor | float = 1.0,
    target: torch.Tensor | None = None,
) -> torch.Tensor:
    """Camera at r·(cos p·sin y, sin p, cos p·cos y) looking at target (origin). Returns (..., 4, 4)."""
    eye = orbit_eye(yaw, pitch, radius)
    target = torch.zeros_like(eye) if target is None else target.to(eye)
    return look_at(eye, target)


def camera_center(modelview: torch.Tensor) -> torch.Tensor:
    """World-space camera centre: translation of inverse(modelview). (..., 4, 4) -> (..., 3)."""
    rotation = modelview[..., :3, :3]
    translation = modelview[..., :3, 3:]
    return -(rotation.transpose(-1, -2) @ translation).squeeze(-1)


def linear_to_zbuffer(z: torch.Tensor, near: float, far: float) -> torch.Tensor:
    """Official project_depth: (1/n - 1/clip(z, n, f)) / (1/n - 1/f), in [0, 1]."""
    return (1 / near - 1 / z.clamp(near, far)) / (1 / near - 1 / far)


def zbuffer_to_linear(d: torch.Tensor, near: float, far: float) -> torch.Tensor:
    """Official linearize_depth: n·f / (f - (f - n)·clip(d, 1e-6, 1 - 1e-6))."""
    return near * far / (far - (far - near) * d.clamp(1e-6, 1 - 1e-6))


def check_modelview(modelview: torch.Tensor, batch: int) -> torch.Tensor:
    """Validate world->camera matrices for a batch of `batch`: (4, 4) or (B, 4, 4), finite. Returns them as
    (B, 4, 4) (an expanded view, same dtype and device)."""
    if not isinstance(modelview, torch.Tensor) or modelview.shape[-2:] != (4, 4) or modelview.ndim not in (2, 3):
        found = f"shape {tuple(modelview.shape)}" if isinstance(modelview, torch.Tensor) else type(modelview).__name__
        raise ValueError(f"modelview must be (B={batch}, 4, 4) or (4, 4), got {found}")
    if modelview.ndim == 3 and modelview.shape[0] != batch:
        raise ValueError(f"modelview batch {modelview.shape[0]} does not match the batch {batch}")
    if not torch.isfinite(modelview).all():
        raise ValueError("modelview contains NaN or inf")
    return modelview.expand(batch, 4, 4)
