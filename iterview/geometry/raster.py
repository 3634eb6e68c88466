"""A batched triangle rasteriser in plain PyTorch (OpenGL semantics, no OpenGL).

How it works, in the order of the code:
1. vertices go to clip space with the target camera (float32, as a vertex shader does);
2. triangles outside the frustum are dropped; those crossing the near or far plane (or leaving a wide guard band)
   are clipped into fans of pieces;
3. window coordinates are snapped to GL's sub-pixel grid (1/256 pixel, as Mesa's llvmpipe does), so coverage is
   decided by exact integer edge functions and a fill rule: a sample on an edge shared by two triangles belongs
   to exactly one of them. The integers are held in float64, exact below 2^53, which the guard band ensures;
4. triangles are cut into bands of a few sample rows; for each row the covered columns are solved exactly (one
   floor division per edge), so each covered sample becomes one (triangle, sample) candidate, none in vain;
5. the depth test is one ``scatter_reduce('amin')`` over int64 keys ``float32 depth bits << 32 | face index``:
   the nearest fragment wins and ties go to the lower face index, i.e. the earlier-drawn face, as GL's strict
   ``<`` test in draw order does;
6. the winners' perspective-correct barycentrics come from per-face planes in 2D homogeneous coordinates.

Python loops run only over chunks that bound memory, never over triangles. Tensors are laid out with their small
dimensions first (coordinate, corner, then triangle): PyTorch reduces and gathers much faster that way on a CPU.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
from dataclasses import dataclass
from types import ModuleType
from typing import Literal

import numpy as np
import torch

from iterview.geometry.cameras import perspective

SUBPIXEL_BITS = 8
_ONE = float(1 << SUBPIXEL_BITS)
# Window coordinates stay within +-2^14 pixels: fixed-point values < 2^22, edge functions < 2^47, exact in float64.
_GUARD_PIXELS = float(1 << 14)
# Clip-space planes, inside where dot((x, y, z, w), plane) >= 0: the frustum's six, then the guard band's four
# (their w coefficient depends on the image size). Triangles are clipped against near, far and the guard band.
_PLANES = ((-1, 0, 0, 1), (1, 0, 0, 1), (0, -1, 0, 1), (0, 1, 0, 1), (0, 0, 1, 1), (0, 0, -1, 1))
_PLANES += ((-1, 0, 0, 0), (1, 0, 0, 0), (0, -1, 0, 0), (0, 1, 0, 0))
_CLIPPING = slice(4, 10)
# Memory bounds: faces rasterised together, row bands and (triangle, sample) candidates held at once.
_GROUP_FACES = 1 << 16
_MAX_BANDS = 1 << 16
_MAX_CANDIDATES = 1 << 20
_MAX_GATHERED = 1 << 20  # attribute values gathered at once by interpolate()
_EMPTY_KEY = torch.iinfo(torch.int64).max
Backend = Literal["auto", "torch", "numba"]


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

    @property
    def covered(self) -> torch.Tensor:
        """(B, S, S) bool: a fragment was drawn."""
        return self.face >= 0


def rasterize(
    position: torch.Tensor,
    faces: torch.Tensor,
    modelview: torch.Tensor,
    size: int,
    fov: float = 45.0,
    near: float = 0.1,
    far: float = 200.0,
    face_mask: torch.Tensor | None = None,
    discard_back: torch.Tensor | None = None,
    backend: Backend = "auto",
    validate: bool = True,
) -> Fragments:
    """position: (B, V, 3) world; faces: (B, F, 3); modelview: (B, 4, 4); face_mask: (B, F) bool of faces
    that may be drawn. Strict '<' depth test, near-plane clipping.

    One sample per pixel at its centre, projection ``perspective(fov, near, far)``, no culling (``front`` tells
    the facing: counter-clockwise in window space), top-left fill rule in GL window space (y up).
    discard_back: (B, F) bool of faces that are not drawn where they face away from the camera, as a fragment
    shader's ``discard`` on back faces (the aggregation's back-facing padding): they write no depth.
    backend: "torch" (plain PyTorch, any device), "numba" (compiled CPU loops, the same result) or "auto" (numba
    for CPU tensors when it is installed, else torch). validate=False skips the checks of position, faces,
    modelview and size (and their device syncs), for callers that validated them once for many renders.
    """
    if validate:
        check_raster_inputs(position, faces, modelview, size)
    compiled = use_kernels(position.device, backend)
    flags = [face_mask, discard_back]
    for name, flag in zip(("face_mask", "discard_back"), flags, strict=True):
        if flag is not None and flag.shape != faces.shape[:2]:
            raise ValueError(f"{name} must be (B, F) = {tuple(faces.shape[:2])}, got {tuple(flag.shape)}")
    face_mask, discard_back = (
        torch.full(faces.shape[:2], default, device=faces.device) if flag is None else flag.to(faces.device, torch.bool)
        for flag, default in zip(flags, (True, False), strict=True)
    )
    # A few meshes at a time keep the working set in cache, which matters more than batching on a CPU.
    group = max(1, _GROUP_FACES // max(faces.shape[1], 1))
    parts = [
        _rasterize_group(
            *(t[i : i + group] for t in (position, faces, modelview, face_mask, discard_back)),
            size=size,
            fov=fov,
            near=near,
            far=far,
            compiled=compiled,
        )
        for i in range(0, len(position), group)
    ]
    if len(parts) == 1:
        return parts[0]
    return Fragments(*(torch.cat([getattr(p, name) for p in parts]) for name in ("face", "bary", "zbuffer", "front")))


def clip_coordinates(
    position: torch.Tensor, modelview: torch.Tensor, fov: float, near: float, far: float
) -> torch.Tensor:
    """Clip-space vertices P·(M·[p, 1]) in float32, as the official vertex shader computes them.
    position: (B, V, 3), modelview: (B, 4, 4) -> (B, V, 4)."""
    position = position.to(torch.float32)
    modelview = modelview.to(position)
    eye = torch.baddbmm(modelview[:, None, :3, 3], position, modelview[:, :3, :3].transpose(-1, -2))
    projection = perspective(fov, near, far).to(position.device)
    return torch.addmm(projection[:, 3], eye.reshape(-1, 3), projection[:, :3].T).reshape(*eye.shape[:2], 4)


def interpolate(
    fragments: Fragments, faces: torch.Tensor, attributes: torch.Tensor, backend: Backend = "auto"
) -> torch.Tensor:
    """Perspective-correct interpolation of per-vertex attributes (B, V, C) -> (B, S, S, C) (integer attributes
    become float32); 0 where empty. The result is channel-major underneath: ``.permute(0, 3, 1, 2)`` is free.
    backend: as in `rasterize`."""
    if not attributes.is_floating_point():
        attributes = attributes.to(torch.float32)
    batch, size = fragments.face.shape[0], fragments.face.shape[-1]
    num_vertices, channels = attributes.shape[1:]
    if use_kernels(attributes.device, backend):
        out = attributes.new_empty(channels, batch, size, size)
        kernels = _kernels()
        with kernels.running_on():
            kernels.interpolate_pixels(
                *_numpy(fragments.face.reshape(-1), fragments.bary.movedim(-1, 0).reshape(3, -1), faces, attributes),
                size * size,
                out.numpy().reshape(channels, -1),
            )
        return out.permute(1, 2, 3, 0)
    # One long gather per corner and per channel beats gathering short rows per pixel; blocks of pixels keep
    # the gathered values in cache.
    vertex = faces + _batch_offset(batch, num_vertices, faces.device)[..., None]
    face = fragments.face.reshape(batch, -1).clamp(min=0) + _batch_offset(batch, faces.shape[1], faces.device)
    corner_vertex = vertex.reshape(-1, 3).T.contiguous().index_select(1, face.reshape(-1))  # (3, B S²)
    table = attributes.reshape(-1, channels).T.contiguous()
    bary = fragments.bary.movedim(-1, 0).reshape(3, -1).to(table.dtype)  # 0 where empty
    out = torch.empty(channels, batch * size * size, dtype=table.dtype, device=table.device)
    block = max(1, _MAX_GATHERED // (3 * channels))
    for start in range(0, out.shape[1], block):
        pixels = slice(start, start + block)
        values = table.index_select(1, corner_vertex[:, pixels].reshape(-1)).reshape(channels, 3, -1)
        b = bary[:, pixels]
        torch.mul(values[:, 0], b[0], out=out[:, pixels]).addcmul_(values[:, 1], b[1]).addcmul_(values[:, 2], b[2])
    return out.reshape(channels, batch, size, size).permute(1, 2, 3, 0)


def sample_nearest(texture: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Nearest-texel, clamped lookup: texture (B, C, N, N), uv (B, S, S, 2) with v down -> (B, C, S, S).

    Texel (floor(v·N), floor(u·N)), clamped to the texture as GL_NEAREST with GL_CLAMP_TO_EDGE does.
    """
    batch, channels, rows, cols = texture.shape
    col = (uv[..., 0] * cols).floor_().clamp_(0, cols - 1)
    row = (uv[..., 1] * rows).floor_().clamp_(0, rows - 1)
    index = (row * cols + col).long().reshape(batch, 1, -1).expand(batch, channels, -1)
    return texture.reshape(batch, channels, -1).gather(2, index).reshape(batch, channels, *uv.shape[1:3])


def window_to_linear(zbuffer: torch.Tensor, near: float, far: float) -> torch.Tensor:
    """GL window depth -> linear z in float32, as the official read-back computes it (no clipping: 0 -> near,
    1 -> far up to float32 rounding, e.g. 199.9878 for (0.1, 200))."""
    ndc = zbuffer.to(torch.float32) * 2 - 1
    return (2 * near * far) / ((far + near) - ndc * (far - near))


def check_raster_inputs(position: torch.Tensor, faces: torch.Tensor, modelview: torch.Tensor, size: int) -> None:
    """The checks of `rasterize` (validate=True) on its position, faces, modelview and size."""
    if position.ndim != 3 or position.shape[-1] != 3:
        raise ValueError(f"position must be (B, V, 3), got shape {tuple(position.shape)}")
    batch = position.shape[0]
    if faces.ndim != 3 or faces.shape[0] != batch or faces.shape[-1] != 3 or faces.is_floating_point():
        raise ValueError(f"faces must be integer (B={batch}, F, 3), got {faces.dtype} {tuple(faces.shape)}")
    if modelview.shape != (batch, 4, 4):
        raise ValueError(f"modelview must be (B={batch}, 4, 4), got shape {tuple(modelview.shape)}")
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 8192:
        raise ValueError(f"size must be an integer in [1, 8192], got {size!r}")
    if faces.numel() and (faces.min() < 0 or faces.max() >= position.shape[1]):
        raise ValueError(f"faces index vertices outside [0, {position.shape[1]})")
    if not (torch.isfinite(position).all() and torch.isfinite(modelview).all()):
        raise ValueError("position and modelview must be finite (found NaN or inf)")


def _batch_offset(batch: int, stride: int, device: torch.device) -> torch.Tensor:
    """(B, 1) int64: b * stride, to make per-element indices (B, N) flat."""
    return torch.arange(batch, device=device)[:, None] * stride


def _rasterize_group(
    position: torch.Tensor,
    faces: torch.Tensor,
    modelview: torch.Tensor,
    face_mask: torch.Tensor,
    discard_back: torch.Tensor,
    size: int,
    fov: float,
    near: float,
    far: float,
    compiled: bool,
) -> Fragments:
    batch, num_faces = faces.shape[:2]
    if compiled:
        return _draw_compiled(position, faces, modelview, face_mask, discard_back, size, fov, near, far)
    clip = clip_coordinates(position, modelview, fov, near, far).reshape(-1, 4)
    vertex = faces + _batch_offset(batch, position.shape[1], faces.device)[..., None]
    corners = clip.T.index_select(1, vertex.reshape(-1, 3).T.reshape(-1)).reshape(4, 3, -1)  # (xyzw, corner, B F)
    distance = (_planes(size, clip) @ corners.reshape(4, -1)).reshape(len(_PLANES), 3, -1)
    drawn = (distance[:6].amax(1).amin(0) >= 0) & face_mask.reshape(-1)
    owner = drawn.nonzero().squeeze(1)  # flat index b * F + f of each drawn face
    crossing = (distance[_CLIPPING].amin(1).amin(0) < 0).index_select(0, owner)
    triangles, owner = _clip_triangles(corners.index_select(2, owner), owner, crossing, size)
    front = _front_facing(corners)
    bands = _row_bands(_setup_triangles(triangles, owner, front | ~discard_back.reshape(-1), num_faces, size))
    best = torch.full((batch * size * size,), _EMPTY_KEY, dtype=torch.int64, device=position.device)
    for start, stop in _chunks(bands.bands, _MAX_BANDS, split=bands.table.shape[1]):
        spans = _row_spans(bands, start, stop, size)
        for first, last in _chunks(spans.count, _MAX_CANDIDATES):
            pixel, key = _candidates(spans, first, last)
            best.scatter_reduce_(0, pixel, key, "amin")
    return _resolve(best, corners, front, batch, size)


@dataclass
class NearestFaces:
    """The compiled depth test's winners, before barycentrics. face: (B, S, S) int64, -1 where empty; zbuffer:
    (B, S, S) float32 window depth, +inf where empty; planes: (B F, 3, 4) float32 barycentric planes of each face
    (x, y and constant coefficients of the three planes and of their sum); front: (B F,) bool, counter-clockwise."""

    face: torch.Tensor
    zbuffer: torch.Tensor
    planes: torch.Tensor
    front: torch.Tensor


def nearest_faces(setup: TriangleSetup, batch: int, size: int) -> NearestFaces:
    """The depth test of `rasterize` with the compiled kernels (CPU, numba), without the per-pixel barycentrics:
    for shaders that form them as they shade. setup: `triangle_setup` of the batch's meshes."""
    kernels = _kernels()
    face = torch.full((batch, size, size), -1, dtype=torch.int64)
    zbuffer = torch.full((batch, size, size), math.inf)
    with kernels.running_on():
        kernels.draw_table(setup.table, size, *_numpy(zbuffer.view(-1), face.view(-1)))
    return NearestFaces(face=face, zbuffer=zbuffer, planes=setup.planes, front=setup.front)


@dataclass
class TriangleSetup:
    """What the compiled depth test needs of a mesh seen from a camera: table (19, T) float64, the triangles
    set up for `raster_kernels.draw_band`; planes and front per face, as in `NearestFaces`."""

    table: np.ndarray
    planes: torch.Tensor
    front: torch.Tensor


def triangle_setup(
    position: torch.Tensor,
    faces: torch.Tensor,
    modelview: torch.Tensor,
    size: int,
    fov: float,
    near: float,
    far: float,
    face_mask: torch.Tensor,
    discard_back: torch.Tensor,
) -> TriangleSetup:
    """Culling, clipping, facing and setup of the compiled depth test (`nearest_faces`, or kernels that
    depth-test band by band). Inputs as `rasterize`, already validated; face_mask and discard_back: (B, F) bool."""
    kernels = _kernels()
    batch, num_faces = faces.shape[:2]
    clip = torch.empty(*position.shape[:2], 4)  # as clip_coordinates computes it
    planes, front = torch.empty(batch * num_faces, 3, 4), torch.empty(batch * num_faces, dtype=torch.bool)
    table = np.empty((kernels.TABLE_ROWS, batch * num_faces))
    with kernels.running_on():
        matrices = (position.to(torch.float32), modelview.to(torch.float32), perspective(fov, near, far))
        kernels.clip_vertices(*_numpy(*matrices), clip.numpy())
        guard = np.float32(_guard_band(size))  # the float32 value the torch path's planes hold
        flags = _numpy(face_mask.reshape(-1), discard_back.reshape(-1))
        status = kernels.setup_faces(*_numpy(clip, faces), guard, *flags, size, *_numpy(planes, front), table)
        crossing = torch.from_numpy(status == 2).nonzero().squeeze(1)
        if len(crossing):  # rare: faces through the near plane or far outside the image
            every = torch.ones(len(crossing), dtype=torch.bool)
            pieces, owner = _clip_triangles(_face_corners(clip, faces, crossing), crossing, every, size)
            drawn_back = front | ~discard_back.reshape(-1)
            pieces_table = kernels.setup_triangles(*_numpy(pieces, owner, drawn_back), num_faces, size)
            table = np.concatenate([table, pieces_table], axis=1)
    return TriangleSetup(table=table, planes=planes, front=front)


def _draw_compiled(
    position: torch.Tensor,
    faces: torch.Tensor,
    modelview: torch.Tensor,
    face_mask: torch.Tensor,
    discard_back: torch.Tensor,
    size: int,
    fov: float,
    near: float,
    far: float,
) -> Fragments:
    """_rasterize_group with the compiled kernels: the same culling, clipping (in PyTorch: few triangles need
    it), facing, setup, depth test and barycentrics."""
    setup = triangle_setup(position, faces, modelview, size, fov, near, far, face_mask, discard_back)
    nearest = nearest_faces(setup, faces.shape[0], size)
    kernels = _kernels()
    bary = torch.empty(3, *nearest.face.shape)
    front = torch.empty(nearest.face.shape, dtype=torch.bool)
    with kernels.running_on():
        kernels.resolve_pixels(
            *_numpy(nearest.zbuffer.view(-1), nearest.face.view(-1), nearest.planes, nearest.front),
            faces.shape[1],
            size,
            *_numpy(bary.view(3, -1), front.view(-1)),
        )
    return Fragments(face=nearest.face, bary=bary.permute(1, 2, 3, 0), zbuffer=nearest.zbuffer, front=front)


def _face_corners(clip: torch.Tensor, faces: torch.Tensor, flat_faces: torch.Tensor) -> torch.Tensor:
    """The clip-space corners (4, 3, N) of the faces (B, F, 3) at flat indices b F + f (N,), of clip (B, V, 4)."""
    num_faces, num_vertices = faces.shape[1], clip.shape[1]
    vertex = faces.reshape(-1, 3).index_select(0, flat_faces) + (flat_faces // num_faces * num_vertices)[:, None]
    return clip.reshape(-1, 4).index_select(0, vertex.reshape(-1)).reshape(-1, 3, 4).permute(2, 1, 0)


def _front_facing(corners: torch.Tensor) -> torch.Tensor:
    """(4, 3, T) clip-space triangles -> (T,) bool: counter-clockwise in window space. The sign of det[(X, Y, W)_k]
    is the orientation of the visible part even for triangles that cross the near plane, and it is one answer
    for all the pieces clipping makes of a face."""
    x, y, _, w = corners.double()
    return (
        x[0] * (y[1] * w[2] - w[1] * y[2]) - y[0] * (x[1] * w[2] - w[1] * x[2]) + w[0] * (x[1] * y[2] - y[1] * x[2])
    ) > 0


def _planes(size: int, like: torch.Tensor) -> torch.Tensor:
    """The (10, 4) clip planes of _PLANES for this image size."""
    planes = torch.tensor(_PLANES, dtype=like.dtype, device=like.device)
    planes[6:, 3] = _guard_band(size)
    return planes


def _guard_band(size: int) -> float:
    """The guard band's half-width in NDC units (w = 1) for this image size."""
    return 2 * _GUARD_PIXELS / size


def _clip_triangles(
    triangles: torch.Tensor, owner: torch.Tensor, crossing: torch.Tensor, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clip the crossing (T,) triangles of (4, 3, T) against near, far and the guard band; owner (T,) follows."""
    if not crossing.any():
        return triangles, owner
    polygons, count = _clip_polygons(triangles[..., crossing].permute(2, 1, 0), _planes(size, triangles)[_CLIPPING])
    fan = torch.arange(polygons.shape[1] - 2, device=triangles.device)
    corner = torch.stack([torch.zeros_like(fan), fan + 1, fan + 2], dim=-1)  # fan around vertex 0
    pieces = polygons[:, corner]  # (T', K - 2, 3, 4)
    real = fan < (count[:, None] - 2)
    return (
        torch.cat([triangles[..., ~crossing], pieces[real].permute(2, 1, 0)], dim=2),
        torch.cat([owner[~crossing], owner[crossing][:, None].expand_as(real)[real]]),
    )


def _clip_polygons(triangles: torch.Tensor, planes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sutherland-Hodgman, batched: triangles (T, 3, 4) against planes (P, 4) (inside: dot >= 0).
    Returns polygons (T, 3 + P, 4), valid in their first count (T,) vertices."""
    polygons = triangles
    count = torch.full(triangles.shape[:1], 3, device=triangles.device)
    for plane in planes:
        slots = polygons.shape[1]
        index = torch.arange(slots, device=triangles.device)
        valid = index < count[:, None]
        following = torch.where(index + 1 < count[:, None], index + 1, 0)
        nxt = polygons.gather(1, following[..., None].expand(-1, -1, 4))
        dist, dist_next = polygons @ plane, nxt @ plane
        inside, inside_next = dist >= 0, dist_next >= 0
        crossing = valid & (inside != inside_next)
        # Interpolate from the inside vertex, so that two triangles sharing the edge get the same point.
        a = torch.where(inside[..., None], polygons, nxt)
        b = torch.where(inside[..., None], nxt, polygons)
        da, db = torch.where(inside, dist, dist_next), torch.where(inside, dist_next, dist)
        t = torch.where(crossing, da / torch.where(crossing, da - db, 1), 0)
        cut = a + t[..., None] * (b - a)
        emitted = torch.stack([polygons, cut], dim=2).reshape(len(polygons), 2 * slots, 4)
        keep = torch.stack([valid & inside, crossing], dim=2).reshape(len(polygons), 2 * slots)
        order = torch.sort((~keep).to(torch.uint8), dim=1, stable=True).indices[:, : slots + 1]
        polygons = emitted.gather(1, order[..., None].expand(-1, -1, 4))
        count = keep.sum(1)
    return polygons, count


@dataclass
class _Setup:
    """Drawn triangles in window space, one column each of `table`."""

    owner: torch.Tensor  # (T,) flat face index b * F + f
    # (17, T) float64 per triangle: 4 edge bounds (left, left, right, right) as (A, D, m), the column bound of row
    # r being floor((A + D r) / m); then the depth plane z = z0 + dzdx c + dzdy r, the pixel index of column 0 of
    # row 0 (b S² + (S - 1) S) and the face index.
    table: torch.Tensor
    row_first: torch.Tensor  # (T,) float64 first sample row (window y, up)
    rows: torch.Tensor  # (T,) int64 sample rows crossed (0 for none)


@dataclass
class _Bands:
    """The triangles of a _Setup cut into bands of up to `height` sample rows: band i < T is the first band of
    triangle i, the bands after them continue the tall triangles."""

    height: int
    band_triangle: torch.Tensor  # (N,) int64 triangle of each band
    band_row: torch.Tensor  # (N,) float64 first sample row of each band (window y, up)
    bands: torch.Tensor  # (N,) int64 rows in each band (1..height)
    table: torch.Tensor  # (17, T) the setup's table

    def band_table(self, start: int, stop: int) -> torch.Tensor:
        """(17, stop - start) table rows of bands [start, stop)."""
        if stop <= self.table.shape[1]:
            return self.table[:, start:stop]
        return self.table.index_select(1, self.band_triangle[start:stop])


def _setup_triangles(
    triangles: torch.Tensor, owner: torch.Tensor, drawn_back: torch.Tensor, num_faces: int, size: int
) -> _Setup:
    """Snap (4, 3, T) triangles to the sub-pixel grid, drop those GL does not draw and tabulate their edges, depth
    planes and rows. drawn_back: (B F,) bool by flat face index, False for back faces to discard."""
    xw, yw, zw = _window_coordinates(triangles, size)
    xf, yf = xw.round(), yw.round()
    area = (xf[1] - xf[0]) * (yf[2] - yf[0]) - (xf[2] - xf[0]) * (yf[1] - yf[0])
    keep = (area != 0) & drawn_back.index_select(0, owner)  # GL draws no zero-area triangle
    if not keep.all():
        xw, yw, zw, xf, yf, area, owner = (v[..., keep] for v in (xw, yw, zw, xf, yf, area, owner))
    # Swap two vertices of clockwise triangles: then "inside" means every edge function is >= 0.
    clockwise = area < 0
    swap = torch.stack([torch.zeros_like(clockwise), clockwise, clockwise])
    xf, yf = (torch.where(swap, v[[0, 2, 1]], v) for v in (xf, yf))
    slots, flat_bottom = _edge_slots(xf, yf)
    row_first = torch.ceil((yf.amin(0) + flat_bottom) / _ONE).clamp_(min=0)
    row_last = torch.floor(yf.amax(0) / _ONE).clamp_(max=size - 1)
    batch = torch.div(owner, num_faces, rounding_mode="floor")
    pixel_base = batch * (size * size) + (size - 1) * size
    extra = torch.stack([*_depth_plane(xw, yw, zw), pixel_base.double(), (owner - batch * num_faces).double()])
    return _Setup(
        owner=owner,
        table=torch.cat([slots.reshape(12, -1), extra]),
        row_first=row_first,
        rows=(row_last - row_first + 1).clamp_(min=0).long(),
    )


def _window_coordinates(triangles: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(4, 3, T) clip-space triangles -> float64 window x, y relative to the pixel centres (GL's half-pixel
    offset) in 1/256 pixel, and window depth in [0, 1]; each (3, T)."""
    x, y, z, w = triangles
    scale = w.reciprocal()
    shift = (size / 2 - 0.5) * _ONE
    xw = (x * scale).mul_(size / 2 * _ONE).add_(shift).double()
    yw = (y * scale).mul_(size / 2 * _ONE).add_(shift).double()
    zw = (z * scale).mul_(0.5).add_(0.5).double()
    return xw, yw, zw


def _edge_slots(xf: torch.Tensor, yf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Column bounds of counter-clockwise snapped triangles xf, yf (3, T): (A|D|m, slot, T) for the two left and
    two right slots, and (T,) 1.0 where a flat bottom edge drops the first row."""
    dx, dy = xf.roll(-1, 0) - xf, yf.roll(-1, 0) - yf  # edge k runs from vertex k to vertex k + 1
    offset = dy * xf - dx * yf  # E_k(px, py) = dx_k py - dy_k px + offset_k; sample (c, r) is at (256 c, 256 r)
    # Top-left rule in GL window space (y up): left edges (dy < 0) and top edges (dy = 0, dx < 0) own their
    # samples. E_k >= 1 - owns_k solved for the column c:
    #   left  (m = -256 dy > 0): c >= ceil((-offset - 256 dx r) / m) = floor((m - 1 - offset - 256 dx r) / m)
    #   right (m = +256 dy > 0): c <= floor((offset - 1 + 256 dx r) / m)
    left, right = dy < 0, dy > 0
    m = (dy * _ONE).abs()
    edge = torch.stack([torch.where(left, m - 1 - offset, offset - 1), torch.where(left, -dx, dx) * _ONE, m], dim=1)

    # The first and last edge of each side (a side with one edge repeats it). A flat edge only limits the rows.
    def first(side: torch.Tensor) -> torch.Tensor:
        return torch.where(side[0], edge[0], torch.where(side[1], edge[1], edge[2]))

    def last(side: torch.Tensor) -> torch.Tensor:
        return torch.where(side[2], edge[2], torch.where(side[1], edge[1], edge[0]))

    slots = torch.stack([first(left), last(left), first(right), last(right)], dim=1)
    # A flat bottom edge (dx > 0) does not own its samples, a flat top edge does.
    return slots, ((dy == 0) & (dx > 0)).any(0).double()


def _depth_plane(
    xw: torch.Tensor, yw: torch.Tensor, zw: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Window depth z = z0 + dzdx c + dzdy r per sample column c and row r: (T,) each. The plane comes from the
    unsnapped coordinates, as in llvmpipe (nearly edge-on triangles would otherwise tilt visibly)."""
    e1x, e1y, e2x, e2y = xw[1] - xw[0], yw[1] - yw[0], xw[2] - xw[0], yw[2] - yw[0]
    e1z, e2z = zw[1] - zw[0], zw[2] - zw[0]
    det = e1x * e2y - e2x * e1y
    dzdx = (e1z * e2y - e2z * e1y) / det
    dzdy = (e2z * e1x - e1z * e2x) / det
    z0 = zw[0] - dzdx * xw[0] - dzdy * yw[0]
    return z0, dzdx * _ONE, dzdy * _ONE


def _row_bands(setup: _Setup) -> _Bands:
    """Bands of `height` rows: most triangles fit one band, the few tall ones (skirts, stretched faces) take
    several, so that the row work stays dense."""
    rows = setup.rows
    height = int(min(max(rows.double().mean().ceil().item() if len(rows) else 1, 2), 16))
    extra = torch.div(rows - 1, height, rounding_mode="floor").clamp_(min=0)
    tall = torch.repeat_interleave(extra)
    index = torch.arange(1, len(tall) + 1, device=tall.device) - (torch.cumsum(extra, 0) - extra).index_select(0, tall)
    band_triangle = torch.cat([torch.arange(len(rows), device=rows.device), tall])
    band_index = torch.cat([torch.zeros_like(rows), index])
    band_row = setup.row_first.index_select(0, band_triangle) + band_index * height
    bands = (rows.index_select(0, band_triangle) - band_index * height).clamp_(max=height)
    return _Bands(height=height, band_triangle=band_triangle, band_row=band_row, bands=bands, table=setup.table)


@dataclass
class _Spans:
    """Covered columns [first, first + count) of (triangle, sample row) pairs."""

    count: torch.Tensor  # (P,) int64
    index: torch.Tensor  # (2, P) int64: flat pixel index of the first covered sample, face index
    depth: torch.Tensor  # (2, P) float32: depth at the first covered sample, depth step per column


def _row_spans(setup: _Bands, start: int, stop: int, size: int) -> _Spans:
    """Exact covered column range of every row of bands [start, stop); empty rows are dropped."""
    table = setup.band_table(start, stop)[..., None]  # (17, N, 1)
    row = setup.band_row[start:stop, None] + torch.arange(setup.height, device=table.device, dtype=table.dtype)
    bound = torch.addcmul(table[0:4], table[4:8], row).div_(table[8:12]).floor_()  # (4, N, h)
    lower = torch.maximum(bound[0], bound[1]).clamp_(min=0)
    count = torch.minimum(bound[2], bound[3]).clamp_(max=size - 1).sub_(lower).add_(1)
    count.masked_fill_(torch.arange(setup.height, device=table.device) >= setup.bands[start:stop, None], 0)
    # Slivers (skirts, stretched faces) cross many rows but cover a sample on few of them.
    kept = (count > 0).reshape(-1).nonzero().squeeze(1)
    band = torch.div(kept, setup.height, rounding_mode="floor")
    row, lower = row.reshape(-1).index_select(0, kept), lower.reshape(-1).index_select(0, kept)
    z0, dzdx, dzdy, pixel_base, face = table[12:, :, 0].index_select(1, band)
    depth = torch.stack([torch.addcmul(z0, dzdx, lower).addcmul_(dzdy, row), dzdx]).float()
    index = torch.stack([pixel_base + lower - row * size, face]).long()
    return _Spans(count=count.reshape(-1).index_select(0, kept).long(), index=index, depth=depth)


def _candidates(spans: _Spans, first: int, last: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Expand pairs [first, last) into (flat pixel index, depth-test key) per covered sample."""
    count = spans.count[first:last]
    pair = torch.repeat_interleave(count) + first
    first_sample = torch.cumsum(count, 0) - count
    local = torch.arange(len(pair), device=count.device) - first_sample.index_select(0, pair - first)
    index = spans.index.index_select(1, pair)
    depth = spans.depth.index_select(1, pair)
    z = torch.addcmul(depth[0], depth[1], local.float()).clamp_(0, 1)
    key = (z.view(torch.int32).long() << 32) | index[1]
    return index[0] + local, key


def _chunks(sizes: torch.Tensor, limit: int, split: int | None = None) -> list[tuple[int, int]]:
    """Split consecutive items into runs whose summed size stays near limit (at least one item each); no run
    crosses index `split`."""
    if split is not None and 0 < split < len(sizes):
        return _chunks(sizes[:split], limit) + [(a + split, b + split) for a, b in _chunks(sizes[split:], limit)]
    if len(sizes) == 0:
        return []
    if sizes.sum() <= limit:
        return [(0, len(sizes))]
    group = torch.div(torch.cumsum(sizes, 0) - sizes, limit, rounding_mode="floor")
    counts = torch.unique_consecutive(group, return_counts=True)[1]
    return list(itertools.pairwise([0, *torch.cumsum(counts, 0).tolist()]))


def _resolve(best: torch.Tensor, corners: torch.Tensor, front: torch.Tensor, batch: int, size: int) -> Fragments:
    """Unpack the winning keys; perspective-correct barycentrics at the pixel centres. corners: (4, 3, B F)."""
    num_faces = corners.shape[-1] // batch
    covered = best != _EMPTY_KEY
    face = torch.where(covered, best & 0xFFFFFFFF, -1)
    zbuffer = torch.where(covered, (best >> 32).to(torch.int32).view(torch.float32), 1.0)
    flat_face = (face.reshape(batch, -1).clamp(min=0) + _batch_offset(batch, num_faces, best.device)).reshape(-1)

    plane = _barycentric_planes(corners).reshape(12, -1).index_select(1, flat_face).reshape(3, 4, -1)
    centres = (torch.arange(size, device=best.device, dtype=torch.float32) + 0.5) * (2 / size) - 1
    ndc_y, ndc_x = torch.meshgrid(centres.flip(0), centres, indexing="ij")  # image row 0 is the top
    value = torch.addcmul(plane[2], plane[0], ndc_x.reshape(-1).repeat(batch))
    value.addcmul_(plane[1], ndc_y.reshape(-1).repeat(batch))  # (4, P)
    bary = (value[:3] / value[3]).clamp_(min=0)  # the common sign of value depends on facing and w
    bary = (bary / bary.sum(0)).masked_fill_(~covered, 0)
    front = front.index_select(0, flat_face) & covered
    shape = (batch, size, size)
    bary = bary.reshape(3, *shape).permute(1, 2, 3, 0)  # stays corner-major underneath, for interpolate()
    return Fragments(face=face.reshape(shape), bary=bary, zbuffer=zbuffer.reshape(shape), front=front.reshape(shape))


def _barycentric_planes(corners: torch.Tensor) -> torch.Tensor:
    """(4, 3, B F) clip-space triangles -> (3, 4, B F) float32: the x, y and constant coefficients of the three
    barycentric planes and of their sum.

    b_k ∝ (v_{k+1} × v_{k+2}) · (x, y, 1) with v = (X, Y, W): 2D homogeneous barycentrics, perspective-correct.
    The vertices of a small triangle are nearly parallel vectors whose cross products cancel: float32 would lose
    ~(S/2)²·ε, so they are formed in float64. Evaluating them near the triangle still costs ~(S/2)·ε in float32,
    as GL's own setup.
    """
    x, y, _, w = corners.double()
    x1, y1, w1, x2, y2, w2 = x.roll(-1, 0), y.roll(-1, 0), w.roll(-1, 0), x.roll(-2, 0), y.roll(-2, 0), w.roll(-2, 0)
    coefficients = torch.stack([y1 * w2 - w1 * y2, w1 * x2 - x1 * w2, x1 * y2 - y1 * x2])  # (x|y|1, k, B F)
    return torch.cat([coefficients, coefficients.sum(1, keepdim=True)], dim=1).float()


@functools.cache
def _kernels() -> ModuleType | None:
    """The compiled kernels, or None without numba (imported on first use: numba takes a while to load)."""
    try:
        from iterview.geometry import raster_kernels
    except ImportError:
        return None
    return raster_kernels


def kernel_loop(compiled: bool) -> contextlib.AbstractContextManager:
    """`raster_kernels.pytorch_on_one_thread()` where the compiled kernels run, else nothing: for loops that
    alternate kernels and small PyTorch operations."""
    return _kernels().pytorch_on_one_thread() if compiled else contextlib.nullcontext()


def kernels_for(value: object, backend: Backend = "auto") -> bool:
    """Whether `backend` runs the compiled kernels for the tensor `value` (False where it is not a tensor: the
    caller's own checks say why)."""
    return isinstance(value, torch.Tensor) and use_kernels(value.device, backend)


def use_kernels(device: torch.device, backend: Backend) -> bool:
    """Whether `backend` ("auto", "torch" or "numba") runs the compiled kernels for tensors on `device`."""
    if backend not in ("auto", "torch", "numba"):
        raise ValueError(f"backend must be 'auto', 'torch' or 'numba', got {backend!r}")
    if backend == "numba" and (device.type != "cpu" or _kernels() is None):
        raise ValueError(f"backend 'numba' needs numba installed and CPU tensors, got {device.type} tensors")
    return backend == "numba" or (backend == "auto" and device.type == "cpu" and _kernels() is not None)


def _numpy(*tensors: torch.Tensor) -> list[np.ndarray]:
    """Contiguous CPU tensors as numpy arrays sharing their memory."""
    return [t.contiguous().numpy() for t in tensors]
