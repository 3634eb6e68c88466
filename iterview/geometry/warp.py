"""Simple warps (official SimpleRenderer) and the forward-backward warp that training pairs are made of
(the recipe around it, cameras and augmentations, is `iterview.data.pairs`)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from iterview.geometry.cameras import check_modelview, linear_to_zbuffer, orbit_camera, zbuffer_to_linear
from iterview.geometry.imageops import (
    coverage_mask,
    depth_edge,
    lanczos_downsample,
    subsample_center,
)
from iterview.geometry.mesh import FLAG_EDGE, Mesh, depth_to_mesh
from iterview.geometry.raster import (
    Backend,
    check_raster_inputs,
    interpolate,
    kernel_loop,
    kernels_for,
    rasterize,
    sample_nearest,
    triangle_setup,
    use_kernels,
    window_to_linear,
)

# Official SimpleRenderer projection and the training warp's discontinuity tolerances (§3.6).
RENDER_NEAR, RENDER_FAR = 0.1, 200.0
WARP_ATOL = WARP_RTOL = 0.02


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
    mesh: Mesh,
    texture: torch.Tensor,
    modelview: torch.Tensor,
    size: int,
    near: float = 0.1,
    far: float = 200.0,
    backend: Backend = "auto",
) -> SimpleRender:
    """Official SimpleRenderer: texture (B, 3, N, N); back faces and edge faces get alpha 0 but write depth.

    Front fragments take the nearest texel at their interpolated uv; back faces are black. The edge flag is
    interpolated across each face, so alpha is 0 where it exceeds 0.999. Empty pixels: colour 0, depth ≈ far
    (the official float32 read-back gives 199.9878 for far = 200). backend: as in `raster.rasterize`.
    """
    batch = mesh.position.shape[0]
    if texture.ndim != 4 or texture.shape[:2] != (batch, 3) or texture.shape[-1] != texture.shape[-2]:
        raise ValueError(f"texture must be (B={batch}, 3, N, N), got shape {tuple(texture.shape)}")
    return _render_simple(mesh, texture, _check_modelview(modelview, batch), size, near, far, True, backend)


def _render_simple(
    mesh: Mesh,
    texture: torch.Tensor,
    modelview: torch.Tensor,
    size: int,
    near: float,
    far: float,
    validate: bool,
    backend: Backend = "auto",
) -> SimpleRender:
    """render_simple once texture and modelview ((B, 4, 4) float32) are checked; validate: the mesh too.
    backend: as in `raster.rasterize`; "numba" shades in the same compiled pass that finishes the depth test."""
    if use_kernels(texture.device, backend):
        if validate:
            check_raster_inputs(mesh.position, mesh.faces, modelview, size)
        return _render_simple_compiled(mesh, texture.to(torch.float32), modelview, size, near, far)
    attributes = torch.cat([mesh.uv.to(torch.float32), (mesh.flag & FLAG_EDGE).to(torch.float32)[..., None]], -1)
    fragments = rasterize(mesh.position, mesh.faces, modelview, size, mesh.fov, near, far, validate=validate)
    uv, edge = interpolate(fragments, mesh.faces, attributes).split([2, 1], dim=-1)
    front = fragments.front[:, None]
    color = sample_nearest(texture, uv) * front
    mask = front & (edge.permute(0, 3, 1, 2) <= 0.999)
    return SimpleRender(color=color, mask=mask, depth=window_to_linear(fragments.zbuffer, near, far)[:, None])


def _render_simple_compiled(
    mesh: Mesh, texture: torch.Tensor, modelview: torch.Tensor, size: int, near: float, far: float
) -> SimpleRender:
    """_render_simple with the compiled kernels (CPU, numba), a mesh at a time: one pass that depth-tests a band
    of rows, then interpolates uv and the edge flag, samples the texture there and linearises the depth."""
    from iterview.geometry import raster_kernels

    batch = len(texture)
    color = torch.empty(batch, 3, size, size)
    mask = torch.empty(batch, 1, size, size, dtype=torch.bool)
    depth = torch.empty(batch, 1, size, size)
    zbuffer, face = np.empty((1, size, size), dtype=np.float32), np.empty((1, size, size), dtype=np.int64)
    drawn = torch.ones(mesh.faces.shape[:2], dtype=torch.bool)
    with raster_kernels.pytorch_on_one_thread():
        for b in range(batch):
            one = slice(b, b + 1)
            faces = mesh.faces[one]
            setup = triangle_setup(
                mesh.position[one], faces, modelview[one], size, mesh.fov, near, far, drawn[one], ~drawn[one]
            )
            uv, flag = mesh.uv[one].to(torch.float32).numpy(), mesh.flag[one].numpy()
            with raster_kernels.running_on():
                raster_kernels.draw_and_shade_simple(
                    setup.table,
                    *(t.contiguous().numpy() for t in (setup.planes, setup.front, faces)),
                    uv,
                    flag,
                    texture[one].contiguous().numpy(),
                    (near, far),
                    raster_kernels.band_count(size),
                    zbuffer,
                    face,
                    color[one].numpy(),
                    mask[one].view(1, size, size).numpy(),
                    depth[one].view(1, size, size).numpy(),
                )
    return SimpleRender(color=color, mask=mask, depth=depth)


def forward_backward_warp(
    rgbd: torch.Tensor,
    modelview: torch.Tensor,
    ssaa: int = 3,
    padding: int | None = None,
    near: float = 0.5,
    far: float = 100.0,
    atol: float = WARP_ATOL,
    rtol: float = WARP_RTOL,
) -> WarpResult:
    """Official forward_backward_warp: rgbd (B, 4, H, W) in [0, 1], depth as z-buffer (near, far);
    modelview (B, 4, 4) the side camera. padding defaults to the image size. Depth is clipped to [0, 1] by the
    linearisation, as officially (pre-warp noise may push it slightly out).

    View 0 (camera at (0, 0, 1) looking at the origin) is meshed with a padding ring and rendered into the side
    camera at ssaa× resolution; that render is downsampled, meshed again with discontinuity flags (atol, rtol)
    and rendered back. What the side camera could not see comes back as holes: mask = (at least 7 of 9 samples
    covered, for ssaa 3) AND no depth edge. Colour and depth are multiplied by the mask.
    """
    # PyTorch on one thread throughout (where the compiled kernels run): after a parallel operation its idle
    # OpenMP workers spin on the cores the kernels need (measured: 40 % less CPU time, as fast or faster).
    with kernel_loop(kernels_for(rgbd)):
        return _forward_backward_warp(rgbd, modelview, ssaa, padding, near, far, atol, rtol)


def _forward_backward_warp(
    rgbd: torch.Tensor,
    modelview: torch.Tensor,
    ssaa: int,
    padding: int | None,
    near: float,
    far: float,
    atol: float,
    rtol: float,
) -> WarpResult:
    """forward_backward_warp's checks and work."""
    batch, size = check_rgbd(rgbd, low=None)
    modelview = _check_modelview(modelview, batch)
    if isinstance(ssaa, bool) or not isinstance(ssaa, int) or ssaa < 1:
        raise ValueError(f"ssaa must be a positive integer, got {ssaa!r}")
    render_size = size * ssaa
    front = _front_camera().to(rgbd).expand(batch, 4, 4)
    color, depth = rgbd[:, :3], zbuffer_to_linear(rgbd[:, 3], near, far)

    mesh = depth_to_mesh(depth, front, padding=size if padding is None else padding)
    side = _render_simple(mesh, color, modelview, render_size, RENDER_NEAR, RENDER_FAR, validate=False)
    seen = side.mask.flatten(1).any(1)
    if not seen.all():
        raise ValueError(f"the side camera sees nothing of the image for batch element(s) {_indices(~seen)}")
    mesh = depth_to_mesh(subsample_center(side.depth[:, 0], ssaa), modelview, atol=atol, rtol=rtol)
    texture = lanczos_downsample(side.color, size, validate=False)
    back = _render_simple(mesh, texture, front, render_size, RENDER_NEAR, RENDER_FAR, validate=False)

    zbuffer = linear_to_zbuffer(subsample_center(back.depth, ssaa), near, far)
    mask = (coverage_mask(back.mask, ssaa) & depth_edge(zbuffer, atol, rtol)).to(rgbd.dtype)
    color = lanczos_downsample(back.color, size, validate=False)
    return WarpResult(color=color * mask, depth=zbuffer * mask, mask=mask)


@functools.cache
def _front_camera() -> torch.Tensor:
    """View 0's camera, at (0, 0, 1) looking at the origin: (1, 4, 4) float32 (read-only: shared by every call)."""
    return orbit_camera(torch.zeros(1), torch.zeros(1))


def check_rgbd(rgbd: torch.Tensor, low: float | None) -> tuple[int, int]:
    """Validate an RGBD batch (B, 4, N, N) with depth in [low, 1] (unchecked if low is None); returns (B, N)."""
    if not isinstance(rgbd, torch.Tensor) or not rgbd.is_floating_point() or rgbd.ndim != 4 or rgbd.shape[1] != 4:
        shape = tuple(rgbd.shape) if isinstance(rgbd, torch.Tensor) else type(rgbd).__name__
        raise ValueError(f"rgbd must be a floating-point (B, 4, H, W) tensor, got {shape}")
    if rgbd.shape[-1] != rgbd.shape[-2] or rgbd.shape[-1] < 2:
        raise ValueError(f"rgbd must be square with H = W >= 2, got H×W = {rgbd.shape[-2]}×{rgbd.shape[-1]}")
    if not torch.isfinite(rgbd).all():
        raise ValueError("rgbd contains NaN or inf")
    depth = rgbd[:, 3]
    if low is not None and (depth.min() < low or depth.max() > 1):
        raise ValueError(
            f"the depth channel must be a z-buffer in [{low:g}, 1], found [{depth.min().item():.4g}, "
            f"{depth.max().item():.4g}]"
        )
    return rgbd.shape[0], rgbd.shape[-1]


def _check_modelview(modelview: torch.Tensor, batch: int) -> torch.Tensor:
    """Validate world->camera matrices, (4, 4) or (B, 4, 4); returns (B, 4, 4) float32."""
    modelview = check_modelview(modelview, batch).to(torch.float32)
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], device=modelview.device)
    if not torch.allclose(modelview[:, 3], bottom.expand(batch, 4)):
        raise ValueError("modelview must be a rigid world->camera transform with last row (0, 0, 0, 1)")
    return modelview


def _indices(selected: torch.Tensor) -> list[int]:
    return selected.nonzero().flatten().tolist()
