"""RGBD image -> triangle mesh (official depth_to_mesh), batched.

The vertex grid is the image grid (plus an optional one-pixel padding ring), indexed row-major with row 0 at the
top; faces come quad by quad, two per quad, split along the shorter 3D diagonal with the official CCW winding.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from numbers import Real
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from iterview.geometry.cameras import check_modelview, focal_length, zbuffer_to_linear
from iterview.geometry.imageops import erode
from iterview.geometry.inference import OFFICIAL_GEOMETRY, InferenceGeometry
from iterview.geometry.raster import Backend, use_kernels

FLAG_EDGE = 1
FLAG_PADDING = 2
FLAG_ERODED = 4

# The official 'frustum' padding pulls the ring onto the plane z_cam = -0.1, closing the view frustum.
FRUSTUM_DEPTH = 0.1
# Official meshing: 'frustum' skirts while sampling (§6.2), numeric padding 32 px when re-fusing saved scenes (§6.5).
SAMPLING_PADDING = "frustum"
FUSION_PADDING = 32


@dataclass
class Mesh:
    """A batch of grid meshes, one per image.

    position: (B, V, 3) world space; uv: (B, V, 2) in [0, 1], v down (one grid shared by the batch: an
    expanded view, so copy it before writing in place); flag: (B, V) int64 (edge | padding | eroded bits);
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
    backend: Backend = "auto",
) -> Mesh:
    """Official depth_to_mesh. depth: (B, N, N) linear z > 0; modelview: (B, 4, 4) world->camera.

    padding: None, a number of pixels P (a ring P pixels beyond the border at the border depth) or 'frustum'
    (P = 1, then the ring is pulled onto z_cam = -0.1). atol / rtol: a face is a discontinuity when its linear
    depth range exceeds atol AND its inverse-depth range exceeds rtol (a missing one counts as 0; both None:
    no test); its vertices get FLAG_EDGE. erode_rgb e > 0: vertices within e grid steps of an edge vertex get
    FLAG_ERODED. Returns V = M² vertices and F = 2(M-1)² faces with M = N (+ 2 with padding). backend: as in
    `raster.rasterize` ("numba" builds float32 grids, their padding ring, faces and flags in one compiled pass per
    image).
    """
    modelview = _validate(depth, modelview, fov, padding, atol, rtol, erode_rgb)
    compiled = use_kernels(depth.device, backend) and depth.dtype == torch.float32
    points, faces, flag, uv = (_grid_compiled if compiled else _grid)(depth, fov, padding, atol, rtol)
    if erode_rgb > 0 and (atol is not None or rtol is not None):
        flag |= ~erode((flag & FLAG_EDGE) == 0, 2 * erode_rgb + 1) * FLAG_ERODED

    batch = depth.shape[0]
    camera_to_world = torch.linalg.inv(modelview)
    rotation, translation = camera_to_world[:, :3, :3], camera_to_world[:, :3, 3:]
    position = (rotation @ points.flatten(2) + translation).transpose(1, 2)
    normal = None
    if compute_normals:  # from the image's own points, edge-replicated onto a padding ring
        normal = grid_normals(points if padding is None else points[..., 1:-1, 1:-1])
        normal = normal if padding is None else F.pad(normal, (1, 1, 1, 1), mode="replicate")
        normal = (rotation @ normal.flatten(2)).transpose(1, 2).contiguous()
    return Mesh(
        position=position.contiguous(),
        uv=uv.flatten(1).T.expand(batch, -1, 2),
        flag=flag.flatten(1),
        faces=faces,
        modelview=modelview,
        fov=float(fov),
        normal=normal,
    )


def _grid(
    depth: torch.Tensor, fov: float, padding: float | str | None, atol: float | None, rtol: float | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The vertex grid of depth_to_mesh in camera space: points (B, 3, M, M), faces (B, F, 3), flag (B, 1, M, M)
    int64 (padding and edge bits) and uv (2, M, M)."""
    # Grids stay in image layout (B, C, M, M) until the end: contiguous planes keep the element-wise work fast.
    points = unproject(depth, fov)
    uv = image_uv(depth.shape[-1], dtype=depth.dtype, device=depth.device)
    depth = depth[:, None]
    if padding is not None:
        points, depth, uv = _pad_ring(points, depth, uv, padding, fov)
    main_diagonal = _main_diagonal_shorter(points)
    faces = _grid_faces(main_diagonal)
    batch, size = depth.shape[0], depth.shape[-1]
    flag = torch.zeros(batch, 1, size, size, dtype=torch.int64, device=depth.device)
    if padding is not None:
        flag[..., [0, -1], :] = FLAG_PADDING
        flag[..., :, [0, -1]] = FLAG_PADDING
    if atol is not None or rtol is not None:
        flag |= _discontinuity_vertices(depth, main_diagonal, atol or 0.0, rtol or 0.0) * FLAG_EDGE
    return points, faces, flag, uv


def _grid_compiled(
    depth: torch.Tensor, fov: float, padding: float | str | None, atol: float | None, rtol: float | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """_grid with the compiled kernel (CPU, numba): the same float32 arithmetic in one pass per image."""
    from iterview.geometry import mesh_kernels, raster_kernels

    batch, size = depth.shape[0], depth.shape[-1] + (0 if padding is None else 2)
    points = torch.empty(batch, 3, size, size)
    faces = torch.empty(batch, 2 * (size - 1) ** 2, 3, dtype=torch.int64)
    flag = torch.empty(batch, 1, size, size, dtype=torch.int64)
    uv = torch.empty(2, size, size)
    ring = 0.0 if padding is None else _ring_offset(padding, fov, depth.shape[-1])
    tolerances = np.float32(atol or 0.0), np.float32(rtol or 0.0), atol is not None or rtol is not None
    with raster_kernels.running_on():
        mesh_kernels.grid_mesh(
            depth.contiguous().numpy(),
            np.float32(focal_length(fov)),
            padding is not None,
            np.float32(ring),
            padding == "frustum",
            *tolerances,
            *(t.numpy() for t in (points, faces, flag, uv)),
        )
    return points, faces, flag, uv


def rgbd_to_mesh(
    rgbd: torch.Tensor,
    modelview: torch.Tensor,
    geometry: InferenceGeometry = OFFICIAL_GEOMETRY,
    padding: int | Literal["frustum"] | None = SAMPLING_PADDING,
) -> tuple[Mesh, torch.Tensor]:
    """Official meshing of generated views. rgbd: (B, 4, N, N) in [-1, 1], depth channel = z-buffer of the
    geometry's (near, far); modelview: (B, 4, 4). Returns the mesh (with normals, discontinuities and erosion
    by the geometry's atol, rtol, erode_rgb) and its texture (B, 3, N, N) = rgb·0.5 + 0.5, unclipped as in the
    official code."""
    g = geometry
    x = rgbd * 0.5 + 0.5
    depth = zbuffer_to_linear(x[:, 3], g.near, g.far)
    mesh = depth_to_mesh(depth, modelview, g.fov, padding, g.atol, g.rtol, g.erode_rgb, compute_normals=True)
    return mesh, x[:, :3]


def map_mesh(mesh: Mesh, fn: Callable[[torch.Tensor], torch.Tensor]) -> Mesh:
    """Apply fn to every batched tensor of a mesh (e.g. to slice or expand the batch)."""
    tensors = {k: getattr(mesh, k) for k in ("position", "uv", "flag", "faces", "modelview", "normal")}
    return replace(mesh, **{k: fn(v) for k, v in tensors.items() if v is not None})


def stack_meshes(meshes: Sequence[Mesh]) -> Mesh:
    """Meshes of equal vertex and face counts and field of view as one batch, in their order."""
    if len(meshes) == 1:
        return meshes[0]
    names = ("position", "uv", "flag", "faces", "modelview") + (("normal",) if meshes[0].normal is not None else ())
    return replace(meshes[0], **{name: torch.cat([getattr(mesh, name) for mesh in meshes]) for name in names})


def image_uv(size: int, dtype: torch.dtype = torch.float32, device: torch.device | None = None) -> torch.Tensor:
    """Texture coordinates of pixel centres, (u, v)[i, j] = ((j + 0.5) / N, (i + 0.5) / N), v down. -> (2, N, N)."""
    centres = (torch.arange(size, dtype=dtype, device=device) + 0.5) / size
    v, u = torch.meshgrid(centres, centres, indexing="ij")
    return torch.stack([u, v])


def unproject(depth: torch.Tensor, fov: float = 45.0) -> torch.Tensor:
    """Camera-space points of a linear depth map (OpenGL camera, row 0 at the top).

    depth: (B, N, N) z-depth > 0 -> (B, 3, N, N) with z_cam = -depth.
    """
    size = depth.shape[-1]
    rays = (image_uv(size, dtype=depth.dtype, device=depth.device)[0, 0] - 0.5) / focal_length(fov)
    # Image row i looks through the ray of texture row N-1-i: the top row has +y.
    return torch.stack([rays * depth, rays.flip(0)[:, None] * depth, -depth], dim=1)


def grid_normals(points: torch.Tensor) -> torch.Tensor:
    """Official Sobel-like unit normals of a point grid, edge-replicated borders. (B, 3, M, M) -> (B, 3, M, M).

    A fronto-parallel plane gets +z (towards the camera).
    """
    padded = F.pad(points, (1, 1, 1, 1), mode="replicate")
    dx = padded[..., 2:] - padded[..., :-2]  # right minus left, rows still padded
    dy = padded[..., :-2, :] - padded[..., 2:, :]  # upper minus lower, columns still padded
    e_x = (dx[..., :-2, :] + 2 * dx[..., 1:-1, :] + dx[..., 2:, :]) / 4
    e_y = (dy[..., :-2] + 2 * dy[..., 1:-1] + dy[..., 2:]) / 4
    (ax, ay, az), (bx, by, bz) = e_x.unbind(1), e_y.unbind(1)
    normal = torch.stack([ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx], dim=1)
    return normal / (normal * normal).sum(1, keepdim=True).sqrt().clamp_min(1e-12)


def _main_diagonal_shorter(points: torch.Tensor) -> torch.Tensor:
    """Official diagonal choice per quad: |TL - BR| < |TR - BL|, a tie takes TR-BL. (B, 3, M, M) -> (B, M-1, M-1)."""
    main = points[..., :-1, :-1] - points[..., 1:, 1:]
    anti = points[..., :-1, 1:] - points[..., 1:, :-1]
    return (main * main).sum(1).sqrt() < (anti * anti).sum(1).sqrt()


def _grid_faces(main_diagonal: torch.Tensor) -> torch.Tensor:
    """Faces of a vertex grid given each quad's diagonal. main_diagonal: (B, M-1, M-1) bool -> (B, 2(M-1)², 3).

    Quad by quad, row-major: TL-BR gives (TR, TL, BR), (BL, BR, TL); TR-BL gives (TR, TL, BL), (BL, BR, TR).
    Both are counter-clockwise seen from the camera that produced the grid.
    """
    batch, size = main_diagonal.shape[0], main_diagonal.shape[-1] + 1
    index = torch.arange(size * size, device=main_diagonal.device).reshape(size, size)
    tl, tr, bl, br = index[:-1, :-1], index[:-1, 1:], index[1:, :-1], index[1:, 1:]
    main = torch.stack([tr, tl, br, bl, br, tl], dim=-1)
    anti = torch.stack([tr, tl, bl, bl, br, tr], dim=-1)
    return torch.where(main_diagonal[..., None], main, anti).reshape(batch, -1, 3)


def _pad_ring(
    points: torch.Tensor, depth: torch.Tensor, uv: torch.Tensor, padding: float | str, fov: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Edge-replicate one ring around every (B, C, N, N) grid, then push the ring outwards (official padding)."""
    points, depth = F.pad(points, (1, 1, 1, 1), mode="replicate"), F.pad(depth, (1, 1, 1, 1), mode="replicate")
    uv = F.pad(uv[None], (1, 1, 1, 1), mode="replicate")[0]
    size = depth.shape[-1]
    step = torch.zeros(size, dtype=depth.dtype, device=depth.device)
    step[0], step[-1] = -1.0, 1.0
    offset = _ring_offset(padding, fov, size - 2) * depth[:, 0]
    points = points + torch.stack([step * offset, -step[:, None] * offset, torch.zeros_like(offset)], dim=1)
    if padding == "frustum":
        scale = torch.full_like(depth, FRUSTUM_DEPTH) / depth
        scale[..., 1:-1, 1:-1] = 1.0
        points = points * scale
    return points, depth, uv


def _ring_offset(padding: float | str, fov: float, image_size: int) -> float:
    """How far the padding ring moves outwards per unit of depth: `padding` pixels (1 for "frustum") of an
    image_size-pixel image at fov."""
    pixels = 1.0 if padding == "frustum" else float(padding)
    return pixels * 2 * math.tan(math.radians(fov) / 2) / image_size


def _discontinuity_vertices(depth: torch.Tensor, main_diagonal: torch.Tensor, atol: float, rtol: float) -> torch.Tensor:
    """Vertices of faces whose depth range > atol AND inverse-depth range > rtol.

    depth: (B, 1, M, M); main_diagonal: (B, M-1, M-1) -> bool (B, 1, M, M). Works on the grid: each quad's two
    faces are (TR, TL, BR) + (BL, BR, TL) or (TR, TL, BL) + (BL, BR, TR).
    """
    main_diagonal = main_diagonal[:, None]

    def face_ranges(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tl, tr, bl, br = values[..., :-1, :-1], values[..., :-1, 1:], values[..., 1:, :-1], values[..., 1:, 1:]
        first = (tr, tl, torch.where(main_diagonal, br, bl))  # (TR, TL, BR) or (TR, TL, BL)
        second = (bl, br, torch.where(main_diagonal, tl, tr))  # (BL, BR, TL) or (BL, BR, TR)
        return tuple(_max3(*face) - _min3(*face) for face in (first, second))

    (first_z, second_z), (first_inverse, second_inverse) = face_ranges(depth), face_ranges(1 / depth)
    first, second = (first_z > atol) & (first_inverse > rtol), (second_z > atol) & (second_inverse > rtol)
    both = first | second
    # Corner membership: TL-BR quads have TL, BR in both faces; TR-BL quads have TR, BL in both.
    tl = torch.where(main_diagonal, both, first)
    tr = torch.where(main_diagonal, first, both)
    bl = torch.where(main_diagonal, second, both)
    br = torch.where(main_diagonal, both, second)
    return F.pad(tl, (0, 1, 0, 1)) | F.pad(tr, (1, 0, 0, 1)) | F.pad(bl, (0, 1, 1, 0)) | F.pad(br, (1, 0, 1, 0))


def _max3(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return torch.maximum(torch.maximum(a, b), c)


def _min3(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return torch.minimum(torch.minimum(a, b), c)


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
    modelview = check_modelview(modelview, depth.shape[0])
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
    return modelview.to(device=depth.device, dtype=depth.dtype).clone()


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return f"{type(value).__name__}"
