"""Compiled CPU kernels of the rasteriser (Numba): the per-fragment and per-pixel loops of `raster`.

They compute what the plain PyTorch passes of `raster` compute, with the same results (the exact column bounds,
stepped from row to row in integers; float32 depth steps, float32 barycentrics), but walk each triangle's rows and
columns directly instead of materialising (triangle, sample) candidates, and touch each pixel once. Importing this
module needs numba; `raster` falls back to its PyTorch path without it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import importlib.metadata
import math
import os
import threading
from collections.abc import Iterator

import numba
import numpy as np
import torch

from iterview.geometry.mesh import FLAG_EDGE

_ONE = 256.0  # sub-pixel units per pixel (`raster.SUBPIXEL_BITS`)
_LOCK = threading.RLock()
_taken_threads: int | None = None  # PyTorch's thread count while pytorch_on_one_thread() holds it
# glibc's mallopt parameters (malloc.h) and the values keep_freed_memory() sets.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_TRIM_BYTES, _MMAP_BYTES = 1 << 30, 32 << 20  # 32 MB is the largest mmap threshold glibc takes


def keep_freed_memory() -> bool:
    """Let glibc keep freed memory for reuse instead of handing it back to the system after every call.

    The geometry allocates its buffers afresh on every call (a few MB each), and by default glibc maps large
    blocks anew and trims the heap after them, so every call pays a page fault per 4 KB: ~1,400 faults, 15–33 % of
    a forward-backward warp's time on a 2-core VM (measured). With an mmap threshold of 32 MB and a trim threshold
    of 1 GB the same pages serve every call. A no-op where the process set glibc's MALLOC_MMAP_THRESHOLD_ or
    MALLOC_TRIM_THRESHOLD_ itself, and off glibc. Returns whether it applied the setting."""
    if any(name in os.environ for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        mallopt = libc.mallopt
    except (OSError, TypeError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_BYTES))


keep_freed_memory()


def use_tbb_if_installed() -> bool:
    """Run the kernels on numba's TBB threading layer where the tbb package is installed, else on its workqueue
    layer; never on its OpenMP one. Returns whether TBB's library was found. A no-op where the process set
    NUMBA_THREADING_LAYER itself.

    PyTorch runs its own OpenMP pool: numba's 'omp' layer would start a second one, whose spinning threads slowed
    every PyTorch operation after a kernel about 5x (measured), and GNU OpenMP does not survive the fork of a
    DataLoader worker. The workqueue layer's threads sleep between kernels, and on a virtual machine waking them
    took as long as a small kernel: a forward-backward warp of one image took a median 17-20 ms on it against
    10 ms on TBB (measured, 2 cores). pip puts TBB's library in the environment's lib folder, where the dynamic
    loader does not look (numba issue 6108), so it is loaded here by path before numba looks for it by name."""
    if "NUMBA_THREADING_LAYER" in os.environ:
        return False
    numba.config.THREADING_LAYER, numba.config.THREADING_LAYER_PRIORITY = "default", ["tbb", "workqueue", "omp"]
    try:
        files = importlib.metadata.files("tbb") or []
    except importlib.metadata.PackageNotFoundError:
        return False
    libraries = [file for file in files if file.name == "libtbb.so.12"]
    for library in libraries:
        with contextlib.suppress(OSError):
            ctypes.CDLL(str(library.locate()), mode=ctypes.RTLD_GLOBAL)
    return bool(libraries)


use_tbb_if_installed()


# Rows of the per-triangle table: the column bounds (A, D, m) of the first and last left and right edge (12),
# first and last sample row (window y, up), the depth plane (z0, dz/dcolumn, dz/drow), the pixel index of column 0
# of row 0 and the face index.
TABLE_ROWS = 19
Corner = tuple[np.float32, np.float32, np.float32, np.float32]  # clip-space x, y, z, w


@numba.njit(cache=True, nogil=True, parallel=True)
def clip_vertices(position: np.ndarray, modelview: np.ndarray, projection: np.ndarray, clip: np.ndarray) -> None:
    """`raster.clip_coordinates` into clip (B, V, 4) float32: position (B, V, 3) float32 through modelview
    (B, 4, 4) and projection (4, 4), each row's three products summed in order, then its constant added (the
    order of the PyTorch path's matrix products, bit for bit)."""
    vertices = position.shape[1]
    for v in numba.prange(position.shape[0] * vertices):
        b = element(v, vertices)
        x, y, z = position[b, v - b * vertices, 0], position[b, v - b * vertices, 1], position[b, v - b * vertices, 2]
        eye = _affine(modelview[b], 0, x, y, z), _affine(modelview[b], 1, x, y, z), _affine(modelview[b], 2, x, y, z)
        for row in range(4):
            clip[b, v - b * vertices, row] = _affine(projection, row, *eye)


@numba.njit(cache=True, nogil=True)
def _affine(matrix: np.ndarray, row: int, x: np.float32, y: np.float32, z: np.float32) -> np.float32:
    """Row `row` of a (4, 4) float32 matrix applied to (x, y, z, 1): ((x m0 + y m1) + z m2) + m3."""
    return matrix[row, 3] + ((x * matrix[row, 0] + y * matrix[row, 1]) + z * matrix[row, 2])


@numba.njit(cache=True, nogil=True, parallel=True)
def setup_faces(
    clip: np.ndarray,
    faces: np.ndarray,
    guard: np.float32,
    face_mask: np.ndarray,
    discard_back: np.ndarray,
    size: int,
    planes: np.ndarray,
    front: np.ndarray,
    table: np.ndarray,
) -> np.ndarray:
    """Culling, facing and setup of the faces (B, F, 3) of clip-space vertices (B, V, 4), in one pass.

    Fills planes (B F, 3, 4) and front (B F,) (`_face_planes`) and the table (19, B F) that `draw_table` and
    `draw_listed` depth-test, as `raster._setup_triangles` (a face not drawn as it is gets no rows). Returns
    each face's status (B F,) int8 against the planes of `raster._PLANES` (the guard band's at |x|, |y| = guard·w):
    0 not drawn (face_mask (B F,) False, or outside the frustum), 1 drawn as it is, 2 to be drawn once clipped
    against near, far and the guard band (`setup_triangles`). discard_back: (B F,) faces not drawn where they
    face away."""
    num_faces, flat_faces = faces.shape[1], faces.reshape(-1, 3)
    status = np.zeros(len(flat_faces), dtype=np.int8)
    for t in numba.prange(len(flat_faces)):
        b = element(t, num_faces)
        c0 = _corner(clip, b, flat_faces[t, 0])
        c1, c2 = _corner(clip, b, flat_faces[t, 1]), _corner(clip, b, flat_faces[t, 2])
        _face_planes(c0, c1, c2, t, planes, front)
        table[12, t], table[13, t] = 0.0, -1.0
        outside0, crossing0 = _plane_tests(c0, guard)
        outside1, crossing1 = _plane_tests(c1, guard)
        outside2, crossing2 = _plane_tests(c2, guard)
        if not face_mask[t] or outside0 & outside1 & outside2:
            continue
        status[t] = 2 if crossing0 or crossing1 or crossing2 else 1
        if status[t] == 1 and (front[t] or not discard_back[t]):
            _setup_column(c0, c1, c2, b, t - b * num_faces, size, table, t)
    return status


@numba.njit(cache=True, nogil=True)
def _corner(clip: np.ndarray, b: int, vertex: int) -> Corner:
    """Vertex `vertex` of batch element b of clip (B, V, 4)."""
    return clip[b, vertex, 0], clip[b, vertex, 1], clip[b, vertex, 2], clip[b, vertex, 3]


@numba.njit(cache=True, nogil=True)
def _plane_tests(corner: Corner, guard: np.float32) -> tuple[int, bool]:
    """(bit p set where the corner is outside frustum plane p, whether it is outside near, far or the guard band).
    Each distance is formed as the dot product with the plane's 0 and ±1 coefficients rounds it: w - x, x + w,
    ..., guard·w - x."""
    x, y, z, w = corner
    band = guard * w
    outside = (w - x < 0) | (x + w < 0) << 1 | (w - y < 0) << 2 | (y + w < 0) << 3 | (z + w < 0) << 4 | (w - z < 0) << 5
    return outside, z + w < 0 or w - z < 0 or band - x < 0 or x + band < 0 or band - y < 0 or y + band < 0


@numba.njit(cache=True, nogil=True)
def element(index: int, count: int) -> int:
    """index // count for a non-negative index: the batch element of a flat index over elements of `count`
    items (an unsigned division: numba's floor division of signed integers costs several times more)."""
    return np.int64(np.uint64(index) // np.uint64(count))


@numba.njit(cache=True, nogil=True)
def _face_planes(c0: Corner, c1: Corner, c2: Corner, t: int, planes: np.ndarray, front: np.ndarray) -> None:
    """Of face t with clip-space corners c0, c1, c2: planes[t] (3, 4) float32, the x, y and constant coefficients
    of the three 2D homogeneous barycentric planes and of their sum (formed in float64 as
    `raster._barycentric_planes`), and front[t], counter-clockwise in window space."""
    x0, y0, w0 = np.float64(c0[0]), np.float64(c0[1]), np.float64(c0[3])
    x1, y1, w1 = np.float64(c1[0]), np.float64(c1[1]), np.float64(c1[3])
    x2, y2, w2 = np.float64(c2[0]), np.float64(c2[1]), np.float64(c2[3])
    plane0 = y1 * w2 - w1 * y2, w1 * x2 - x1 * w2, x1 * y2 - y1 * x2  # corner k: from corners k + 1, k + 2
    plane1 = y2 * w0 - w2 * y0, w2 * x0 - x2 * w0, x2 * y0 - y2 * x0
    plane2 = y0 * w1 - w0 * y1, w0 * x1 - x0 * w1, x0 * y1 - y0 * x1
    for c in range(3):
        planes[t, c, 0], planes[t, c, 1], planes[t, c, 2] = plane0[c], plane1[c], plane2[c]
        planes[t, c, 3] = plane0[c] + plane1[c] + plane2[c]
    front[t] = x0 * (y1 * w2 - w1 * y2) - y0 * (x1 * w2 - w1 * x2) + w0 * (x1 * y2 - y1 * x2) > 0


def draw_table(table: np.ndarray, size: int, depth: np.ndarray, face: np.ndarray) -> None:
    """Depth-test the triangles of `setup_triangles` into depth (B S²,) float32 (+inf where empty) and face (B S²,)
    int64, as the candidates' depth test of the torch path: the nearest fragment wins; equal depths go to the
    lower face index (GL's strict '<' in draw order)."""
    _draw_table(table, size, band_count(size), depth, face)


def band_count(size: int) -> int:
    """How many bands of rows a kernel deals out for an image of `size` rows: four per thread it runs on, so
    that bands of unequal cost even out."""
    return min(size, 4 * numba.get_num_threads())


def setup_triangles(
    triangles: np.ndarray, owner: np.ndarray, drawn_back: np.ndarray, num_faces: int, size: int
) -> np.ndarray:
    """The table (19, T) of the (4, 3, T) float32 clip-space triangles (the pieces of clipped faces), as
    `setup_faces` sets up whole faces. owner: (T,) flat face index b F + f; drawn_back: (B F,) False for faces to
    discard where back-facing."""
    table = np.empty((TABLE_ROWS, triangles.shape[2]))
    _setup_table(triangles, owner, drawn_back, num_faces, size, table)
    return table


@numba.njit(cache=True, nogil=True, parallel=True)
def _setup_table(
    triangles: np.ndarray, owner: np.ndarray, drawn_back: np.ndarray, num_faces: int, size: int, table: np.ndarray
) -> None:
    """Fill table (19, T) for the triangles (see setup_triangles)."""
    for t in numba.prange(triangles.shape[2]):
        table[12, t], table[13, t] = 0.0, -1.0
        if drawn_back[owner[t]]:
            c0, c1, c2 = _piece_corner(triangles, 0, t), _piece_corner(triangles, 1, t), _piece_corner(triangles, 2, t)
            b = element(owner[t], num_faces)
            _setup_column(c0, c1, c2, b, owner[t] - b * num_faces, size, table, t)


@numba.njit(cache=True, nogil=True)
def _piece_corner(triangles: np.ndarray, k: int, t: int) -> Corner:
    """Corner k of triangle t of triangles (4, 3, T)."""
    return triangles[0, k, t], triangles[1, k, t], triangles[2, k, t], triangles[3, k, t]


@numba.njit(cache=True, nogil=True)
def _setup_column(c0: Corner, c1: Corner, c2: Corner, b: int, face: int, size: int, table: np.ndarray, t: int) -> None:
    """Column t of the table for the triangle of clip-space corners c0, c1, c2 of face `face` of batch element b:
    snapped to the sub-pixel grid as `raster._setup_triangles` (a zero-area triangle gets no rows)."""
    half, shift = np.float32(size / 2 * _ONE), np.float32((size / 2 - 0.5) * _ONE)
    xw0, yw0, zw0 = _window(c0, half, shift)
    xw1, yw1, zw1 = _window(c1, half, shift)
    xw2, yw2, zw2 = _window(c2, half, shift)
    x0, x1, x2, y0, y1, y2 = np.rint(xw0), np.rint(xw1), np.rint(xw2), np.rint(yw0), np.rint(yw1), np.rint(yw2)
    area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    if area == 0:
        return  # GL draws no zero-area triangle
    if area < 0:  # clockwise: swap two vertices, then "inside" means every edge function is >= 0
        x1, x2, y1, y2 = x2, x1, y2, y1
    flat_bottom = _edge_bounds((x0, x1, x2), (y0, y1, y2), table, t)
    table[12, t] = max(math.ceil((min(y0, y1, y2) + flat_bottom) / _ONE), 0.0)
    table[13, t] = min(math.floor(max(y0, y1, y2) / _ONE), size - 1.0)
    table[14, t], table[15, t], table[16, t] = _depth_plane(xw0, yw0, zw0, xw1, yw1, zw1, xw2, yw2, zw2)
    table[17, t] = b * size * size + (size - 1) * size
    table[18, t] = face


@numba.njit(cache=True, nogil=True)
def _window(corner: Corner, half: np.float32, shift: np.float32) -> tuple[float, float, float]:
    """Float64 window x, y (1/256 pixel, relative to the pixel centres) and depth of a clip-space corner,
    computed in float32 as `raster._window_coordinates`."""
    x, y, z, w = corner
    scale = np.float32(1.0) / w
    return (
        np.float64(x * scale * half + shift),
        np.float64(y * scale * half + shift),
        np.float64(z * scale * np.float32(0.5) + np.float32(0.5)),
    )


@numba.njit(cache=True, nogil=True)
def _edge_bounds(xf: tuple[float, float, float], yf: tuple[float, float, float], table: np.ndarray, t: int) -> float:
    """Column bounds of a counter-clockwise snapped triangle, as `raster._edge_slots`, into rows 0-11 of column t
    of the table: A, D, m for the first and last left and right edge, the column bound of row r being
    floor((A + D r) / m). Returns 1.0 where a flat bottom edge drops the first row, else 0.0."""
    (x0, x1, x2), (y0, y1, y2) = xf, yf
    edges = _edge(x0, y0, x1, y1), _edge(x1, y1, x2, y2), _edge(x2, y2, x0, y0)  # edge k: corner k to k + 1
    dy0, dy1, dy2 = y1 - y0, y2 - y1, y0 - y2
    slots = (
        0 if dy0 < 0 else (1 if dy1 < 0 else 2),  # the first and last left edge
        2 if dy2 < 0 else (1 if dy1 < 0 else 0),
        0 if dy0 > 0 else (1 if dy1 > 0 else 2),  # the first and last right edge
        2 if dy2 > 0 else (1 if dy1 > 0 else 0),
    )
    for slot in range(4):
        a, d, m = edges[slots[slot]]
        table[slot, t], table[4 + slot, t], table[8 + slot, t] = a, d, m
    flat_bottom = (dy0 == 0 and x1 > x0) or (dy1 == 0 and x2 > x1) or (dy2 == 0 and x0 > x2)
    return 1.0 if flat_bottom else 0.0


@numba.njit(cache=True, nogil=True)
def _edge(x: float, y: float, x_next: float, y_next: float) -> tuple[float, float, float]:
    """(A, D, m) of the snapped edge from (x, y) to (x_next, y_next), as `raster._edge_slots`."""
    dx, dy = x_next - x, y_next - y
    offset = dy * x - dx * y
    m = abs(dy * _ONE)
    if dy < 0:
        return m - 1 - offset, -dx * _ONE, m
    return offset - 1, dx * _ONE, m


@numba.njit(cache=True, nogil=True)
def _depth_plane(
    x0: float, y0: float, z0: float, x1: float, y1: float, z1: float, x2: float, y2: float, z2: float
) -> tuple[float, float, float]:
    """(z at sample (0, 0), dz per column, dz per row) of window depth, from the unsnapped window coordinates
    as `raster._depth_plane`."""
    e1x, e1y, e2x, e2y, e1z, e2z = x1 - x0, y1 - y0, x2 - x0, y2 - y0, z1 - z0, z2 - z0
    det = e1x * e2y - e2x * e1y
    dzdx = (e1z * e2y - e2z * e1y) / det
    dzdy = (e2z * e1x - e1z * e2x) / det
    return z0 - dzdx * x0 - dzdy * y0, dzdx * _ONE, dzdy * _ONE


@numba.njit(cache=True, nogil=True, parallel=True)
def _draw_table(table: np.ndarray, size: int, parts: int, depth: np.ndarray, face: np.ndarray) -> None:
    """Depth-test every triangle of the table. The sample rows are cut into `parts` bands that threads take
    whole, so none writes another's pixels; each walks all triangles over its band."""
    for part in numba.prange(parts):
        low, high = band_rows(part, size, parts)
        draw_band(table, low, high, size, depth, face)


@numba.njit(cache=True, nogil=True)
def draw_band(table: np.ndarray, low: int, high: int, size: int, depth: np.ndarray, face: np.ndarray) -> None:
    """Depth-test every triangle of the table over sample rows [low, high] (window y, up) only."""
    for t in range(table.shape[1]):
        first, last = max(table[12, t], low), min(table[13, t], high)
        if first <= last:
            _draw_rows(table, t, first, last, size, 0, depth, face)


@numba.njit(cache=True, nogil=True)
def draw_listed(
    table: np.ndarray,
    triangles: np.ndarray,
    low: int,
    high: int,
    size: int,
    offset: int,
    depth: np.ndarray,
    face: np.ndarray,
) -> None:
    """Depth-test the listed triangles (indices into the table) over sample rows [low, high] only, into the
    pixels of their table's pixel index less `offset`."""
    for t in triangles:
        first, last = max(table[12, t], low), min(table[13, t], high)
        if first <= last:
            _draw_rows(table, t, first, last, size, offset, depth, face)


@numba.njit(cache=True, nogil=True, parallel=True)
def bin_triangles(
    table: np.ndarray, size: int, batch: int, views: int, bands: int, parts: int
) -> tuple[np.ndarray, np.ndarray]:
    """List the drawn triangles of a table by view and band of sample rows (`band_rows`), in table order.

    The table's pixel index (row 17) names the flat batch element n of each triangle, and view v holds elements
    v·batch .. v·batch + batch - 1. Returns starts (views·bands + 1,) int64 and triangles (N,) int64: the
    triangles of view v crossing band k are triangles[starts[v·bands + k] : starts[v·bands + k + 1]]. The table
    is cut into `parts` that are counted and listed in parallel, each into its own share of every list."""
    keys, count, view_pixels = views * bands, table.shape[1], np.float64(size * size * batch)
    counts = np.zeros((keys, parts), dtype=np.int64)
    for part in numba.prange(parts):
        for t in range(part * count // parts, (part + 1) * count // parts):
            if table[12, t] <= table[13, t]:
                key = int(table[17, t] / view_pixels) * bands
                for band in range(_band_of(table[12, t], size, bands), _band_of(table[13, t], size, bands) + 1):
                    counts[key + band, part] += 1
    offsets = np.cumsum(counts.reshape(-1)) - counts.reshape(-1)  # key-major: each list in table order
    triangles = np.empty(counts.sum(), dtype=np.int64)
    for part in numba.prange(parts):
        filled = offsets.reshape(keys, parts)[:, part].copy()
        for t in range(part * count // parts, (part + 1) * count // parts):
            if table[12, t] <= table[13, t]:
                key = int(table[17, t] / view_pixels) * bands
                for band in range(_band_of(table[12, t], size, bands), _band_of(table[13, t], size, bands) + 1):
                    triangles[filled[key + band]] = t
                    filled[key + band] += 1
    starts = np.empty(keys + 1, dtype=np.int64)
    starts[:keys] = offsets.reshape(keys, parts)[:, 0]
    starts[keys] = len(triangles)
    return starts, triangles


@numba.njit(cache=True, nogil=True)
def band_rows(band: int, size: int, bands: int) -> tuple[int, int]:
    """The sample rows [low, high] (window y, up) of band `band` of `bands` over `size` rows."""
    return band * size // bands, (band + 1) * size // bands - 1


@numba.njit(cache=True, nogil=True)
def _band_of(row: float, size: int, bands: int) -> int:
    """The band (`band_rows`) that holds sample row `row` (an integer in float64): floor((row·bands + bands - 1)
    / size), exact in float64, whose quotient is either a whole number or at least 1 / size away from one."""
    return int((row * bands + bands - 1) / size)


@numba.njit(cache=True, nogil=True)
def _draw_rows(
    table: np.ndarray, t: int, first: float, last: float, size: int, offset: int, depth: np.ndarray, face: np.ndarray
) -> None:
    """Depth-test the covered samples of rows [first, last] of triangle t of the table into the pixels of its
    pixel index less `offset`. The column bounds step from row to row in exact integers (`_edge_walk`): no
    division per row."""
    z0, dzdx, dzdy, base, index = (
        table[14, t],
        table[15, t],
        table[16, t],
        table[17, t] - offset,
        np.int64(table[18, t]),
    )
    step = np.float32(dzdx)
    left_first, left_last = _edge_walk(table, t, 0, first), _edge_walk(table, t, 1, first)
    right_first, right_last = _edge_walk(table, t, 2, first), _edge_walk(table, t, 3, first)
    for k in range(int(last - first) + 1):
        row = first + k
        lower = max(left_first[0], left_last[0], 0)
        upper = min(right_first[0], right_last[0], size - 1)
        start = np.float32(z0 + dzdx * lower + dzdy * row)
        pixel = np.int64(base + lower - row * size)
        for offset in range(upper - lower + 1):
            z = min(max(start + step * np.float32(offset), np.float32(0.0)), np.float32(1.0))
            p = pixel + offset
            if z < depth[p] or (z == depth[p] and index < face[p]):
                depth[p] = z
                face[p] = index
        left_first, left_last = _next_row(left_first), _next_row(left_last)
        right_first, right_last = _next_row(right_first), _next_row(right_last)


@numba.njit(cache=True, nogil=True)
def _edge_walk(table: np.ndarray, t: int, slot: int, row: float) -> tuple[int, int, int, int, int]:
    """The column bound floor((A + D row) / m) of edge `slot` of triangle t (A, D, m: integers held in float64)
    as an exact integer walk: (quotient, remainder, quotient step, remainder step, m)."""
    a, d, m = np.int64(table[slot, t]), np.int64(table[4 + slot, t]), np.int64(table[8 + slot, t])
    n = a + d * np.int64(row)
    quotient, step = n // m, d // m
    return quotient, n - quotient * m, step, d - step * m, m


@numba.njit(cache=True, nogil=True)
def _next_row(walk: tuple[int, int, int, int, int]) -> tuple[int, int, int, int, int]:
    """An `_edge_walk` one row on: floor((A + D (row + 1)) / m)."""
    quotient, remainder, step, remainder_step, m = walk
    quotient, remainder = quotient + step, remainder + remainder_step
    if remainder >= m:
        return quotient + 1, remainder - m, step, remainder_step, m
    return quotient, remainder, step, remainder_step, m


@numba.njit(cache=True, nogil=True, parallel=True)
def resolve_pixels(
    depth: np.ndarray,
    face: np.ndarray,
    planes: np.ndarray,
    front_table: np.ndarray,
    num_faces: int,
    size: int,
    bary: np.ndarray,
    front: np.ndarray,
) -> None:
    """Finish draw_table's buffers in place: face -1 and depth 1 where empty; bary (3, B S²) float32
    perspective-correct barycentrics at the pixel centres (0 where empty); front (B S²,) bool.
    planes: (B F, 3, 4) float32 x, y and constant coefficients of the three 2D homogeneous barycentric planes and
    of their sum; front_table: (B F,) bool."""
    for image_row in numba.prange(face.shape[0] // size):  # rows of all batch elements: no division per pixel
        b, row = image_row // size, image_row % size
        y = _ndc(size - 1 - row, size)
        for column in range(size):
            p, f = image_row * size + column, face[image_row * size + column]
            if f < 0:
                depth[p] = 1.0
                bary[0, p] = bary[1, p] = bary[2, p] = 0.0
                front[p] = False
                continue
            flat = b * num_faces + f
            bary[0, p], bary[1, p], bary[2, p] = pixel_barycentrics(planes, flat, _ndc(column, size), y)
            front[p] = front_table[flat]


@numba.njit(cache=True, nogil=True, parallel=True)
def draw_and_shade_simple(
    table: np.ndarray,
    planes: np.ndarray,
    front_table: np.ndarray,
    faces: np.ndarray,
    uv: np.ndarray,
    flag: np.ndarray,
    texture: np.ndarray,
    near_far: tuple[float, float],
    bands: int,
    zbuffer: np.ndarray,
    face: np.ndarray,
    color: np.ndarray,
    mask: np.ndarray,
    depth: np.ndarray,
) -> None:
    """The official SimpleRenderer, band of rows by band: the depth test of the table (`setup_faces`), then the
    shading of the band while it is in cache, as `warp.render_simple` computes it from `resolve_pixels`,
    `interpolate_pixels`, `raster.sample_nearest` and `raster.window_to_linear`. zbuffer (B, S, S) float32 and
    face (B, S, S) int64: scratch; color (B, 3, S, S): the nearest texel (clamped) at the interpolated uv of
    front fragments, 0 elsewhere; mask (B, S, S): front fragments whose interpolated edge flag (bit FLAG_EDGE of
    flag) is <= 0.999; depth (B, S, S): linear depth of the (near, far) projection, far where empty.
    planes, front_table: per face as in resolve_pixels; faces: (B, F, 3); uv: (B, V, 2) float32; flag: (B, V)
    int64; texture: (B, 3, N, M)."""
    size = face.shape[-1]
    flat_zbuffer, flat_face = zbuffer.reshape(-1), face.reshape(-1)
    for part in numba.prange(bands):
        low, high = band_rows(spread(part, bands), size, bands)  # sample rows, window y up
        clear_rows(face, zbuffer, size - 1 - high, size - low)
        draw_band(table, low, high, size, flat_zbuffer, flat_face)
        for b in range(face.shape[0]):
            for row in range(size - 1 - high, size - low):
                _shade_simple_row(b, row, planes, front_table, faces, uv, flag, texture, zbuffer, face, color, mask)
                _linear_row(zbuffer[b, row], near_far, depth[b, row])


@numba.njit(cache=True, nogil=True)
def clear_rows(face: np.ndarray, zbuffer: np.ndarray, first: int, stop: int) -> None:
    """Empty image rows [first, stop) of every batch element of the depth test's buffers (B, S, S)."""
    for b in range(face.shape[0]):
        for row in range(first, stop):
            face[b, row, :] = -1
            zbuffer[b, row, :] = np.inf


@numba.njit(cache=True, nogil=True)
def _shade_simple_row(
    b: int,
    row: int,
    planes: np.ndarray,
    front_table: np.ndarray,
    faces: np.ndarray,
    uv: np.ndarray,
    flag: np.ndarray,
    texture: np.ndarray,
    depth: np.ndarray,
    face: np.ndarray,
    color: np.ndarray,
    mask: np.ndarray,
) -> None:
    """Shade image row `row` of batch element b (see draw_and_shade_simple)."""
    size, num_faces, rows, cols = face.shape[-1], faces.shape[1], texture.shape[2], texture.shape[3]
    y = _ndc(size - 1 - row, size)
    for column in range(size):
        f = face[b, row, column]
        flat = b * num_faces + f
        if f < 0 or not front_table[flat]:
            if f < 0:
                depth[b, row, column] = 1.0
            color[b, 0, row, column] = color[b, 1, row, column] = color[b, 2, row, column] = 0.0
            mask[b, row, column] = False
            continue
        w0, w1, w2 = pixel_barycentrics(planes, flat, _ndc(column, size), y)
        v0, v1, v2 = faces[b, f, 0], faces[b, f, 1], faces[b, f, 2]
        u = uv[b, v0, 0] * w0 + uv[b, v1, 0] * w1 + uv[b, v2, 0] * w2
        v = uv[b, v0, 1] * w0 + uv[b, v1, 1] * w1 + uv[b, v2, 1] * w2
        edge = _edge_flag(flag[b, v0]) * w0 + _edge_flag(flag[b, v1]) * w1 + _edge_flag(flag[b, v2]) * w2
        texel_column, texel_row = texel(u, cols), texel(v, rows)
        for c in range(3):
            color[b, c, row, column] = texture[b, c, texel_row, texel_column]
        mask[b, row, column] = edge <= np.float32(0.999)


@numba.njit(cache=True, nogil=True)
def _edge_flag(flag: int) -> np.float32:
    """A vertex's FLAG_EDGE bit as a float32 0 or 1, the attribute the SimpleRenderer interpolates."""
    return np.float32(flag & FLAG_EDGE)


@numba.njit(cache=True, nogil=True)
def _linear_row(zbuffer: np.ndarray, near_far: tuple[float, float], out: np.ndarray) -> None:
    """`raster.window_to_linear` of a row of window depths, in its float32 arithmetic (PyTorch divides a number
    by a tensor as the number times the tensor's reciprocal)."""
    near, far = near_far
    numerator, total, span = np.float32(2 * near * far), np.float32(far + near), np.float32(far - near)
    for column in range(len(zbuffer)):
        ndc = zbuffer[column] * np.float32(2.0) - np.float32(1.0)
        out[column] = numerator * (np.float32(1.0) / (total - ndc * span))


@numba.njit(cache=True, nogil=True)
def texel(coordinate: np.float32, count: int) -> int:
    """The texel floor(coordinate · count) clamped to [0, count - 1], as GL_NEAREST with GL_CLAMP_TO_EDGE does
    (an integer floor: numba's math.floor of a float32 is a library call, 5 % of a composited fragment's time)."""
    scaled = min(max(coordinate * np.float32(count), np.float32(-1.0)), np.float32(count))
    index = int(scaled)  # toward zero
    return min(max(index - 1 if index > scaled else index, 0), count - 1)


@numba.njit(cache=True, nogil=True)
def spread(index: int, count: int) -> int:
    """The index-th of a permutation of range(count) that spreads any run of consecutive indices over the whole
    range (a step coprime with count near count / golden ratio): prange hands each thread a run of consecutive
    iterations, and bands of image rows differ in cost (an empty sky, a dense object)."""
    step = max(1, int(count * 0.6180339887))
    while math.gcd(step, count) != 1:
        step += 1
    return index * step % count


@numba.njit(cache=True, nogil=True)
def _ndc(index: int, size: int) -> np.float32:
    """NDC coordinate (float32) of the centre of pixel `index` along an axis of `size` pixels (window space)."""
    return (np.float32(index) + np.float32(0.5)) * np.float32(2.0 / size) - np.float32(1.0)


@numba.njit(cache=True, nogil=True)
def pixel_barycentrics(
    planes: np.ndarray, flat: int, x: np.float32, y: np.float32
) -> tuple[np.float32, np.float32, np.float32]:
    """Perspective-correct barycentrics of face `flat` at NDC (x, y) from its planes (B F, 3, 4), clamped at 0
    and normalised, in float32."""
    total = planes[flat, 2, 3] + planes[flat, 0, 3] * x + planes[flat, 1, 3] * y
    b0 = max((planes[flat, 2, 0] + planes[flat, 0, 0] * x + planes[flat, 1, 0] * y) / total, np.float32(0.0))
    b1 = max((planes[flat, 2, 1] + planes[flat, 0, 1] * x + planes[flat, 1, 1] * y) / total, np.float32(0.0))
    b2 = max((planes[flat, 2, 2] + planes[flat, 0, 2] * x + planes[flat, 1, 2] * y) / total, np.float32(0.0))
    norm = b0 + b1 + b2
    return b0 / norm, b1 / norm, b2 / norm


@numba.njit(cache=True, nogil=True, parallel=True)
def interpolate_pixels(
    face: np.ndarray, bary: np.ndarray, faces: np.ndarray, attributes: np.ndarray, pixels: int, out: np.ndarray
) -> None:
    """out (C, B S²) = Σ_k bary_k · attribute of corner k of each pixel's face, 0 where empty.
    face: (B S²,) int64; bary: (3, B S²) float32; faces: (B, F, 3) int64; attributes: (B, V, C) float32."""
    channels = attributes.shape[2]
    for p in numba.prange(face.shape[0]):
        f = face[p]
        if f < 0:
            for c in range(channels):
                out[c, p] = 0.0
            continue
        b = p // pixels
        v0, v1, v2 = faces[b, f, 0], faces[b, f, 1], faces[b, f, 2]
        w0, w1, w2 = bary[0, p], bary[1, p], bary[2, p]
        for c in range(channels):
            out[c, p] = attributes[b, v0, c] * w0 + attributes[b, v1, c] * w1 + attributes[b, v2, c] * w2


@contextlib.contextmanager
def running_on(threads: int | None = None) -> Iterator[None]:
    """Run the kernels called inside on `threads` threads (default: PyTorch's count; at most the cores numba
    found), or on those an enclosing `pytorch_on_one_thread()` took. One caller at a time: the workqueue
    threading layer does not take concurrent launches."""
    threads = torch.get_num_threads() if threads is None else threads
    with _LOCK:
        numba.set_num_threads(max(1, min(_taken_threads or threads, numba.config.NUMBA_NUM_THREADS)))
        yield


@contextlib.contextmanager
def pytorch_on_one_thread() -> Iterator[None]:
    """For loops of kernels with small PyTorch operations between them: the kernels inside take PyTorch's
    threads and PyTorch runs on one meanwhile. After each parallel operation PyTorch's idle OpenMP workers spin
    for milliseconds, taking the cores from the next kernel's threads: at two threads this makes the 26-view
    fusion frame 1.5x faster (measured), and the forward-backward warp (meshing and resampling compiled too) as
    fast with 40 % less CPU time. Nested uses keep the outermost one's counts."""
    global _taken_threads
    with _LOCK:
        if _taken_threads is not None:
            yield
            return
        _taken_threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(_taken_threads)
            _taken_threads = None
