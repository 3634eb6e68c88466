"""RGBD image -> triangle mesh (official depth_to_mesh), batched.

The vertex grid is the image grid (plus an optional one-pixel padding ring), indexed row-major with row 0 at the
top; faces come quad by quad, two per quad, split along the shorter 3D diagonal with the official CCW winding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import Literal

import torch
import torch.nn.functional as F

from iterview.geometry.cameras import focal_length
from iterview.geometry.imageops import erode

FLAG_EDGE = 1
FLAG_PADDING = 2
FLAG_ERODED = 4

# The official 'frustum' padding pulls the ring onto the plane z_cam = -0.1, closing the view frustum.
FRUSTUM_DEPTH = 0.1


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
    """Official depth_to_mesh. depth: (B, N, N) linear z > 0; modelview: (B, 4, 4) world->camera.

    padding: None, a number of pixels P (a ring P pixels beyond the border at the border depth) or 'frustum'
    (P = 1, then the ring is pulled onto z_cam = -0.1). atol / rtol: a face is a discontinuity when its linear
    depth range exceeds atol AND its inverse-depth range exceeds rtol (a missing one counts as 0; both None:
    no test); its vertices get FLAG_EDGE. erode_rgb e > 0: vertices within e grid steps of an edge vertex get
    FLAG_ERODED. Returns V = M² vertices and F = 2(M-1)² faces with M = N (+ 2 with padding).
    """
    modelview = _validate(depth, modelview, fov, padding, atol, rtol, erode_rgb)
    points = unproject(depth, fov)
    uv = image_uv(depth.shape[-1], dtype=depth.dtype, device=depth.device).expand(*points.shape[:-1], 2)
    normal = grid_normals(points) if compute_normals else None
    is_padding = torch.zeros(points.shape[:-1], dtype=torch.bool, device=depth.device)
    if padding is not None:
        points, depth, uv, normal, is_padding = _pad_ring(points, depth, uv, normal, padding, fov)

    batch, size = depth.shape[0], depth.shape[-1]
    faces = triangulate(points)
    flag = is_padding.reshape(batch, -1).long() * FLAG_PADDING
    if atol is not None or rtol is not None:
        edge = _discontinuity_vertices(depth.reshape(batch, -1), faces, atol or 0.0, rtol or 0.0)
        flag |= edge.long() * FLAG_EDGE
        if erode_rgb > 0:
            kept = erode(~edge.reshape(batch, 1, size, size), 2 * erode_rgb + 1)
            flag |= (~kept).reshape(batch, -1).long() * FLAG_ERODED

    camera_to_world = torch.linalg.inv(modelview)
    rotation, translation = camera_to_world[:, None, :3, :3], camera_to_world[:, None, :3, 3]
    position = (rotation @ points.reshape(batch, -1, 3, 1)).squeeze(-1) + translation
    if normal is not None:
        normal = (rotation @ normal.reshape(batch, -1, 3, 1)).squeeze(-1)
    return Mesh(
        position=position,
        uv=uv.reshape(batch, -1, 2),
        flag=flag,
        faces=faces,
        modelview=modelview,
        fov=float(fov),
        normal=normal,
    )


def image_uv(size: int, dtype: torch.dtype = torch.float32, device: torch.device | None = None) -> torch.Tensor:
    """Texture coordinates of pixel centres, uv[i, j] = ((j + 0.5) / N, (i + 0.5) / N), v down. -> (N, N, 2)."""
    centres = (torch.arange(size, dtype=dtype, device=device) + 0.5) / size
    v, u = torch.meshgrid(centres, centres, indexing="ij")
    return torch.stack([u, v], dim=-1)


def unproject(depth: torch.Tensor, fov: float = 45.0) -> torch.Tensor:
    """Camera-space points of a linear depth map (OpenGL camera, row 0 at the top).

    depth: (B, N, N) z-depth > 0 -> (B, N, N, 3) with z_cam = -depth.
    """
    size = depth.shape[-1]
    rays = (image_uv(size, dtype=depth.dtype, device=depth.device) - 0.5) / focal_length(fov)
    # Image row i looks through the ray of texture row N-1-i: the top row has +y.
    rays = torch.cat([rays[..., :1], rays.flip(0)[..., 1:], -torch.ones_like(rays[..., :1])], dim=-1)
    return rays * depth[..., None]


def grid_normals(points: torch.Tensor) -> torch.Tensor:
    """Official Sobel-like unit normals of a point grid, edge-replicated borders. (B, M, M, 3) -> (B, M, M, 3).

    A fronto-parallel plane gets +z (towards the camera).
    """
    padded = F.pad(points.permute(0, 3, 1, 2), (1, 1, 1, 1), mode="replicate")
    dx = padded[..., 2:] - padded[..., :-2]  # right minus left, rows still padded
    dy = padded[..., :-2, :] - padded[..., 2:, :]  # upper minus lower, columns still padded
    e_x = (dx[..., :-2, :] + 2 * dx[..., 1:-1, :] + dx[..., 2:, :]) / 4
    e_y = (dy[..., :-2] + 2 * dy[..., 1:-1] + dy[..., 2:]) / 4
    normal = torch.linalg.cross(e_x, e_y, dim=1)
    return F.normalize(normal, dim=1).permute(0, 2, 3, 1)


def triangulate(points: torch.Tensor) -> torch.Tensor:
    """Official grid triangulation along each quad's shorter 3D diagonal. points: (B, M, M, 3) -> (B, 2(M-1)², 3).

    Quad by quad, row-major: TL-BR shorter gives (TR, TL, BR), (BL, BR, TL); otherwise (TR, TL, BL), (BL, BR, TR).
    Both are counter-clockwise seen from the camera that produced the grid.
    """
    batch, size = points.shape[0], points.shape[1]
    index = torch.arange(size * size, device=points.device).reshape(size, size)
    tl, tr, bl, br = index[:-1, :-1], index[:-1, 1:], index[1:, :-1], index[1:, 1:]
    p_tl, p_tr, p_bl, p_br = points[:, :-1, :-1], points[:, :-1, 1:], points[:, 1:, :-1], points[:, 1:, 1:]
    main_shorter = torch.linalg.vector_norm(p_tl - p_br, dim=-1) < torch.linalg.vector_norm(p_tr - p_bl, dim=-1)
    main = torch.stack([torch.stack([tr, tl, br], -1), torch.stack([bl, br, tl], -1)], dim=-2)
    anti = torch.stack([torch.stack([tr, tl, bl], -1), torch.stack([bl, br, tr], -1)], dim=-2)
    faces = torch.where(main_shorter[..., None, None], main, anti)
    return faces.reshape(batch, -1, 3)


def _pad_ring(
    points: torch.Tensor,
    depth: torch.Tensor,
    uv: torch.Tensor,
    normal: torch.Tensor | None,
    padding: int | str,
    fov: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Edge-replicate one ring around every grid, then push the ring outwards (official padding)."""

    def replicate(grid: torch.Tensor) -> torch.Tensor:  # (B, N, N, C) -> (B, N+2, N+2, C)
        return F.pad(grid.permute(0, 3, 1, 2), (1, 1, 1, 1), mode="replicate").permute(0, 2, 3, 1)

    points, uv = replicate(points), replicate(uv)
    normal = replicate(normal) if normal is not None else None
    depth = replicate(depth[..., None])[..., 0]
    size = depth.shape[-1]
    ring = torch.zeros(size, size, dtype=torch.bool, device=depth.device)
    ring[[0, -1], :] = True
    ring[:, [0, -1]] = True
    step = torch.zeros(size, dtype=depth.dtype, device=depth.device)
    step[0], step[-1] = -1.0, 1.0
    pixels = 1.0 if padding == "frustum" else float(padding)
    offset = pixels * 2 * math.tan(math.radians(fov) / 2) / (size - 2) * depth
    shift = torch.stack([step[None, :] * offset, -step[:, None] * offset, torch.zeros_like(offset)], dim=-1)
    points = points + shift
    if padding == "frustum":
        scale = torch.where(ring, FRUSTUM_DEPTH / depth, torch.ones_like(depth))
        points = points * scale[..., None]
    return points, depth, uv, normal, ring.expand_as(depth)


def _discontinuity_vertices(depth: torch.Tensor, faces: torch.Tensor, atol: float, rtol: float) -> torch.Tensor:
    """Vertices of faces whose depth range > atol AND inverse-depth range > rtol. depth: (B, V) -> bool (B, V)."""
    z = torch.gather(depth, 1, faces.reshape(faces.shape[0], -1)).reshape(faces.shape)
    inverse = 1 / z
    broken = ((z.amax(-1) - z.amin(-1)) > atol) & ((inverse.amax(-1) - inverse.amin(-1)) > rtol)
    hits = broken[..., None].expand_as(faces).reshape(faces.shape[0], -1).to(torch.int64)
    edge = torch.zeros_like(depth, dtype=torch.int64).scatter_reduce(1, faces.reshape(faces.shape[0], -1), hits, "amax")
    return edge.bool()


def _validate(
    depth: torch.Tensor,
    modelview: torch.Tensor,
    fov: float,
    padding: object,
    atol: float | None,
    rtol: float | None,
    erode_rgb: int,
) -> torch.Tensor:
    """Check depth_to_mesh's input; returns modelview broadcast to (B, 4, 4) in depth's dtype."""
    if not isinstance(depth, torch.Tensor) or not depth.is_floating_point():
        raise ValueError(f"depth must be a floating-point tensor (B, N, N), got {_describe(depth)}")
    if depth.ndim != 3 or depth.shape[1] != depth.shape[2] or depth.shape[1] < 2 or depth.shape[0] < 1:
        raise ValueError(f"depth must be a batch of square maps (B, N, N) with N >= 2, got shape {tuple(depth.shape)}")
    bad = ~(torch.isfinite(depth) & (depth > 0))
    if bad.any():
        b, i, j = (int(k) for k in bad.nonzero()[0])
        raise ValueError(
            f"depth must be linear z, finite and > 0; found {int(bad.sum())} invalid value(s), "
            f"e.g. {depth[b, i, j].item()} at (batch {b}, row {i}, column {j})"
        )
    if not isinstance(modelview, torch.Tensor) or modelview.shape[-2:] != (4, 4) or modelview.ndim not in (2, 3):
        raise ValueError(f"modelview must be a (B, 4, 4) or (4, 4) tensor, got {_describe(modelview)}")
    if modelview.ndim == 3 and modelview.shape[0] != depth.shape[0]:
        raise ValueError(f"modelview batch {modelview.shape[0]} does not match depth batch {depth.shape[0]}")
    if not torch.isfinite(modelview).all():
        raise ValueError("modelview contains NaN or inf")
    if not 0 < fov < 180:
        raise ValueError(f"fov must be in (0, 180) degrees, got {fov}")
    numeric = isinstance(padding, Real) and not isinstance(padding, bool)
    if not (padding is None or padding == "frustum" or (numeric and math.isfinite(padding) and padding >= 0)):
        raise ValueError(f"padding must be None, a number of pixels >= 0 or 'frustum', got {padding!r}")
    for name, value in (("atol", atol), ("rtol", rtol)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be None or a finite value >= 0, got {value}")
    if isinstance(erode_rgb, bool) or not isinstance(erode_rgb, int) or erode_rgb < 0:
        raise ValueError(f"erode_rgb must be an integer >= 0, got {erode_rgb!r}")
    return modelview.to(device=depth.device, dtype=depth.dtype).expand(depth.shape[0], 4, 4)


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return f"{type(value).__name__}"
