"""Compiled CPU kernel of the grid meshing (Numba): the camera-space vertex grid, the padding ring, each quad's
diagonal and two faces, and the discontinuity flags of `mesh.depth_to_mesh`, an image at a time.

It computes what `mesh._grid` computes (`unproject`, `_pad_ring`, `_main_diagonal_shorter`, `_grid_faces`,
`_discontinuity_vertices`), in the same float32 arithmetic, without their grid-sized intermediates. Importing
this module needs numba.
"""

from __future__ import annotations

import numba
import numpy as np

from iterview.geometry.mesh import FLAG_EDGE, FLAG_PADDING, FRUSTUM_DEPTH

# Bits of a quad's corners that belong to a discontinuous face of it.
_TL, _TR, _BL, _BR = 1, 2, 4, 8
_HALF, _ONE, _FRUSTUM = np.float32(0.5), np.float32(1.0), np.float32(FRUSTUM_DEPTH)


@numba.njit(cache=True, nogil=True, parallel=True)
def grid_mesh(
    depth: np.ndarray,
    focal: np.float32,
    padded: bool,
    ring: np.float32,
    frustum: bool,
    atol: np.float32,
    rtol: np.float32,
    tested: bool,
    points: np.ndarray,
    faces: np.ndarray,
    flag: np.ndarray,
    uv: np.ndarray,
) -> None:
    """The vertex grids of depth (B, N, N) float32 linear depth: points (B, 3, M, M) camera space, faces
    (B, 2(M-1)², 3) int64, flag (B, 1, M, M) int64 (FLAG_PADDING on the ring, FLAG_EDGE on vertices of
    discontinuous faces where tested) and uv (2, M, M), with M = N (+ 2 where padded). focal: in image widths;
    ring: the padding ring's offset per unit of depth; frustum: the ring pulled onto z = -0.1."""
    size, grid = depth.shape[-1], points.shape[-1]
    rays = np.empty(size, dtype=np.float32)
    for j in range(size):  # `mesh.unproject`: (u - 0.5) / focal at the pixel centres
        rays[j] = ((np.float32(j) + _HALF) / np.float32(size) - _HALF) / focal
    for i in range(grid):
        for j in range(grid):
            source_i, source_j = _source(i, size, padded), _source(j, size, padded)
            uv[0, i, j] = (np.float32(source_j) + _HALF) / np.float32(size)
            uv[1, i, j] = (np.float32(source_i) + _HALF) / np.float32(size)
    for b in numba.prange(depth.shape[0]):
        _grid_points(depth[b], rays, padded, ring, frustum, points[b], flag[b, 0])
        _grid_faces(points[b], depth[b], padded, atol, rtol, tested, faces[b], flag[b, 0])


@numba.njit(cache=True, nogil=True)
def _source(index: int, size: int, padded: bool) -> int:
    """The image row or column of grid row or column `index` (the ring repeats the border)."""
    return min(max(index - 1, 0), size - 1) if padded else index


@numba.njit(cache=True, nogil=True)
def _grid_points(
    depth: np.ndarray,
    rays: np.ndarray,
    padded: bool,
    ring: np.float32,
    frustum: bool,
    points: np.ndarray,
    flag: np.ndarray,
) -> None:
    """Camera-space points (3, M, M) of one depth map (N, N) and their padding flags (M, M)."""
    size, grid = depth.shape[-1], points.shape[-1]
    for i in range(grid):
        source_i = _source(i, size, padded)
        step_i = -1 if padded and i == 0 else (1 if padded and i == grid - 1 else 0)
        for j in range(grid):
            source_j = _source(j, size, padded)
            step_j = -1 if padded and j == 0 else (1 if padded and j == grid - 1 else 0)
            d = depth[source_i, source_j]
            x, y, z = rays[source_j] * d, rays[size - 1 - source_i] * d, -d
            flag[i, j] = FLAG_PADDING if step_i != 0 or step_j != 0 else 0
            if flag[i, j] != 0:  # `mesh._pad_ring`: pushed outwards, then (frustum) scaled onto z = -0.1
                offset = ring * d
                x, y = x + np.float32(step_j) * offset, y + np.float32(-step_i) * offset
                if frustum:
                    scale = _FRUSTUM / d
                    x, y, z = x * scale, y * scale, z * scale
            points[0, i, j], points[1, i, j], points[2, i, j] = x, y, z


@numba.njit(cache=True, nogil=True)
def _grid_faces(
    points: np.ndarray,
    depth: np.ndarray,
    padded: bool,
    atol: np.float32,
    rtol: np.float32,
    tested: bool,
    faces: np.ndarray,
    flag: np.ndarray,
) -> None:
    """Faces (2(M-1)², 3) of one point grid (3, M, M), quad by quad as `mesh._grid_faces` orders them; where
    tested, FLAG_EDGE into flag (M, M) on the vertices of faces whose depth (of the image (N, N), the ring
    repeating its border) ranges over more than atol AND whose inverse depth ranges over more than rtol."""
    size, grid = depth.shape[-1], points.shape[-1]
    quads = grid - 1
    corners = np.zeros((quads, quads), dtype=np.uint8)
    for i in range(quads):
        for j in range(quads):
            tl, tr, bl, br = i * grid + j, i * grid + j + 1, (i + 1) * grid + j, (i + 1) * grid + j + 1
            main = _shorter_main_diagonal(points, i, j)
            face = 2 * (i * quads + j)
            faces[face, 0], faces[face, 1], faces[face, 2] = tr, tl, br if main else bl
            faces[face + 1, 0], faces[face + 1, 1], faces[face + 1, 2] = bl, br, tl if main else tr
            if tested:
                top, bottom = _source(i, size, padded), _source(i + 1, size, padded)
                left, right = _source(j, size, padded), _source(j + 1, size, padded)
                quad = depth[top, left], depth[top, right], depth[bottom, left], depth[bottom, right]
                corners[i, j] = _broken_corners(quad, main, atol, rtol)
    if tested:
        for i in range(grid):
            for j in range(grid):
                broken = (
                    (i < quads and j < quads and (corners[i, j] & _TL) != 0)
                    or (i < quads and j > 0 and (corners[i, j - 1] & _TR) != 0)
                    or (i > 0 and j < quads and (corners[i - 1, j] & _BL) != 0)
                    or (i > 0 and j > 0 and (corners[i - 1, j - 1] & _BR) != 0)
                )
                if broken:
                    flag[i, j] |= FLAG_EDGE


@numba.njit(cache=True, nogil=True)
def _shorter_main_diagonal(points: np.ndarray, i: int, j: int) -> bool:
    """Whether quad (i, j)'s TL-BR diagonal is shorter than its TR-BL one (a tie takes TR-BL), in float32."""
    main, anti = np.float32(0.0), np.float32(0.0)
    for c in range(3):
        along = points[c, i, j] - points[c, i + 1, j + 1]
        across = points[c, i, j + 1] - points[c, i + 1, j]
        main += along * along
        anti += across * across
    return np.sqrt(main) < np.sqrt(anti)


@numba.njit(cache=True, nogil=True)
def _broken_corners(
    quad: tuple[np.float32, np.float32, np.float32, np.float32], main: bool, atol: np.float32, rtol: np.float32
) -> int:
    """Corner bits of a quad of depths (TL, TR, BL, BR) that belong to one of its discontinuous faces: (TR, TL,
    BR) and (BL, BR, TL) for a TL-BR diagonal, else (TR, TL, BL) and (BL, BR, TR)."""
    tl, tr, bl, br = quad
    first = _discontinuous(tr, tl, br if main else bl, atol, rtol)
    second = _discontinuous(bl, br, tl if main else tr, atol, rtol)
    bits = (_TL | _TR | (_BR if main else _BL)) if first else 0
    return bits | ((_BL | _BR | (_TL if main else _TR)) if second else 0)


@numba.njit(cache=True, nogil=True)
def _discontinuous(a: np.float32, b: np.float32, c: np.float32, atol: np.float32, rtol: np.float32) -> bool:
    """A face of corner depths a, b, c: depth range > atol and inverse-depth range > rtol (float32)."""
    ia, ib, ic = _ONE / a, _ONE / b, _ONE / c
    return max(a, b, c) - min(a, b, c) > atol and max(ia, ib, ic) - min(ia, ib, ic) > rtol
