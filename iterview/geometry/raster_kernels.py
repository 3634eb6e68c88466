"""Compiled CPU kernels of the rasteriser (Numba): the per-fragment and per-pixel loops of `raster`.

They compute what the plain PyTorch passes of `raster` compute, in the same arithmetic (exact float64 column
bounds, float32 depth steps, float32 barycentrics), but walk each triangle's rows and columns directly instead of
materialising (triangle, sample) candidates, and touch each pixel once. Importing this module needs numba; `raster`
falls back to its PyTorch path without it.
"""

from __future__ import annotations

import math

import numba
import numpy as np

_ONE = 256.0  # sub-pixel units per pixel (`raster.SUBPIXEL_BITS`)


@numba.njit(cache=True, nogil=True)
def face_planes(corners: np.ndarray, planes: np.ndarray, front: np.ndarray) -> None:
    """Per face of corners (4, 3, B F) float32 clip space: planes (3, 4, B F) float32, the x, y and constant
    coefficients of the three 2D homogeneous barycentric planes and of their sum (formed in float64 as
    `raster._barycentric_planes`), and front (B F,) bool, counter-clockwise in window space."""
    for t in range(corners.shape[2]):
        total_x = total_y = total_1 = 0.0
        for k in range(3):
            k1, k2 = (k + 1) % 3, (k + 2) % 3
            x1, y1, w1 = np.float64(corners[0, k1, t]), np.float64(corners[1, k1, t]), np.float64(corners[3, k1, t])
            x2, y2, w2 = np.float64(corners[0, k2, t]), np.float64(corners[1, k2, t]), np.float64(corners[3, k2, t])
            cx, cy, c1 = y1 * w2 - w1 * y2, w1 * x2 - x1 * w2, x1 * y2 - y1 * x2
            planes[0, k, t], planes[1, k, t], planes[2, k, t] = cx, cy, c1
            total_x, total_y, total_1 = total_x + cx, total_y + cy, total_1 + c1
        planes[0, 3, t], planes[1, 3, t], planes[2, 3, t] = total_x, total_y, total_1
        x0, y0, w0 = np.float64(corners[0, 0, t]), np.float64(corners[1, 0, t]), np.float64(corners[3, 0, t])
        x1, y1, w1 = np.float64(corners[0, 1, t]), np.float64(corners[1, 1, t]), np.float64(corners[3, 1, t])
        x2, y2, w2 = np.float64(corners[0, 2, t]), np.float64(corners[1, 2, t]), np.float64(corners[3, 2, t])
        front[t] = x0 * (y1 * w2 - w1 * y2) - y0 * (x1 * w2 - w1 * x2) + w0 * (x1 * y2 - y1 * x2) > 0


@numba.njit(cache=True, nogil=True)
def draw_triangles(
    triangles: np.ndarray,
    owner: np.ndarray,
    drawn_back: np.ndarray,
    num_faces: int,
    size: int,
    depth: np.ndarray,
    face: np.ndarray,
) -> None:
    """Set up and depth-test the (4, 3, T) float32 clip-space triangles into depth (B S²,) float32 (+inf where
    empty) and face (B S²,) int64, as `raster._setup_triangles` and the candidates' depth test of the torch path.
    owner: (T,) flat face index b F + f; drawn_back: (B F,) False for faces to discard where back-facing.
    The nearest fragment wins; equal depths go to the lower face index (GL's strict '<' in draw order).
    """
    xw, yw, zw, xf, yf = np.empty(3), np.empty(3), np.empty(3), np.empty(3), np.empty(3)
    edge, bounds = np.empty((3, 3)), np.empty((3, 4))
    half, shift = np.float32(size / 2 * _ONE), np.float32((size / 2 - 0.5) * _ONE)
    for t in range(triangles.shape[2]):
        for k in range(3):
            scale = np.float32(1.0) / triangles[3, k, t]
            xw[k] = np.float64(triangles[0, k, t] * scale * half + shift)
            yw[k] = np.float64(triangles[1, k, t] * scale * half + shift)
            zw[k] = np.float64(triangles[2, k, t] * scale * np.float32(0.5) + np.float32(0.5))
            xf[k], yf[k] = np.rint(xw[k]), np.rint(yw[k])
        area = (xf[1] - xf[0]) * (yf[2] - yf[0]) - (xf[2] - xf[0]) * (yf[1] - yf[0])
        if area == 0 or not drawn_back[owner[t]]:
            continue  # GL draws no zero-area triangle
        if area < 0:  # clockwise: swap two vertices, then "inside" means every edge function is >= 0
            xf[1], xf[2], yf[1], yf[2] = xf[2], xf[1], yf[2], yf[1]
        flat_bottom = _edge_bounds(xf, yf, edge, bounds)
        row_first = max(math.ceil((min(yf[0], yf[1], yf[2]) + flat_bottom) / _ONE), 0.0)
        row_last = min(math.floor(max(yf[0], yf[1], yf[2]) / _ONE), size - 1.0)
        batch = owner[t] // num_faces
        base = np.float64(batch * size * size + (size - 1) * size)
        plane = _depth_plane(xw, yw, zw)
        _draw_rows(bounds, row_first, row_last, plane, base, owner[t] - batch * num_faces, size, depth, face)


@numba.njit(cache=True, nogil=True)
def _edge_bounds(xf: np.ndarray, yf: np.ndarray, edge: np.ndarray, bounds: np.ndarray) -> float:
    """Column bounds of a counter-clockwise snapped triangle, as `raster._edge_slots`: bounds (A|D|m, slot) for
    the first and last left and right edge, the column bound of row r being floor((A + D r) / m); edge (3, 3)
    is scratch. Returns 1.0 where a flat bottom edge drops the first row, else 0.0."""
    flat_bottom = 0.0
    left_first = left_last = right_first = right_last = -1
    for k in range(3):
        dx, dy = xf[(k + 1) % 3] - xf[k], yf[(k + 1) % 3] - yf[k]
        offset = dy * xf[k] - dx * yf[k]
        m = abs(dy * _ONE)
        edge[0, k] = m - 1 - offset if dy < 0 else offset - 1
        edge[1, k] = (-dx if dy < 0 else dx) * _ONE
        edge[2, k] = m
        if dy < 0:
            left_last = k
            left_first = k if left_first < 0 else left_first
        if dy > 0:
            right_last = k
            right_first = k if right_first < 0 else right_first
        if dy == 0 and dx > 0:
            flat_bottom = 1.0
    for slot, k in enumerate((left_first, left_last, right_first, right_last)):
        bounds[0, slot], bounds[1, slot], bounds[2, slot] = edge[0, k], edge[1, k], edge[2, k]
    return flat_bottom


@numba.njit(cache=True, nogil=True)
def _depth_plane(xw: np.ndarray, yw: np.ndarray, zw: np.ndarray) -> tuple[float, float, float]:
    """(z0, dzdx, dzdy) of window depth per sample, from the unsnapped coordinates as `raster._depth_plane`."""
    e1x, e1y, e2x, e2y = xw[1] - xw[0], yw[1] - yw[0], xw[2] - xw[0], yw[2] - yw[0]
    e1z, e2z = zw[1] - zw[0], zw[2] - zw[0]
    det = e1x * e2y - e2x * e1y
    dzdx = (e1z * e2y - e2z * e1y) / det
    dzdy = (e2z * e1x - e1z * e2x) / det
    return zw[0] - dzdx * xw[0] - dzdy * yw[0], dzdx * _ONE, dzdy * _ONE


@numba.njit(cache=True, nogil=True)
def _draw_rows(
    bounds: np.ndarray,
    row_first: float,
    row_last: float,
    plane: tuple[float, float, float],
    base: float,
    index: int,
    size: int,
    depth: np.ndarray,
    face: np.ndarray,
) -> None:
    """Depth-test the covered samples of rows [row_first, row_last] of one triangle (see draw_triangles)."""
    z0, dzdx, dzdy = plane
    step = np.float32(dzdx)
    for k in range(int(row_last - row_first) + 1):
        row = row_first + k
        lower = max(
            math.floor((bounds[0, 0] + bounds[1, 0] * row) / bounds[2, 0]),
            math.floor((bounds[0, 1] + bounds[1, 1] * row) / bounds[2, 1]),
            0.0,
        )
        upper = min(
            math.floor((bounds[0, 2] + bounds[1, 2] * row) / bounds[2, 2]),
            math.floor((bounds[0, 3] + bounds[1, 3] * row) / bounds[2, 3]),
            size - 1.0,
        )
        start = np.float32(z0 + dzdx * lower + dzdy * row)
        pixel = np.int64(base + lower - row * size)
        for column in range(np.int64(upper - lower) + 1):
            z = min(max(start + step * np.float32(column), np.float32(0.0)), np.float32(1.0))
            p = pixel + column
            if z < depth[p] or (z == depth[p] and index < face[p]):
                depth[p] = z
                face[p] = index


@numba.njit(cache=True, nogil=True)
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
    """Finish draw_triangles' buffers in place: face -1 and depth 1 where empty; bary (3, B S²) float32
    perspective-correct barycentrics at the pixel centres (0 where empty); front (B S²,) bool.
    planes: (3, 4, B F) float32 x, y and constant coefficients of the three 2D homogeneous barycentric planes and
    of their sum; front_table: (B F,) bool."""
    pixels = size * size
    half = np.float32(2.0 / size)
    for p in range(face.shape[0]):
        f = face[p]
        if f < 0:
            depth[p] = 1.0
            bary[0, p] = bary[1, p] = bary[2, p] = 0.0
            front[p] = False
            continue
        flat = (p // pixels) * num_faces + f
        row, column = (p % pixels) // size, p % size
        x = (np.float32(column) + np.float32(0.5)) * half - np.float32(1.0)
        y = (np.float32(size - 1 - row) + np.float32(0.5)) * half - np.float32(1.0)
        total = planes[2, 3, flat] + planes[0, 3, flat] * x + planes[1, 3, flat] * y
        b0 = max((planes[2, 0, flat] + planes[0, 0, flat] * x + planes[1, 0, flat] * y) / total, np.float32(0.0))
        b1 = max((planes[2, 1, flat] + planes[0, 1, flat] * x + planes[1, 1, flat] * y) / total, np.float32(0.0))
        b2 = max((planes[2, 2, flat] + planes[0, 2, flat] * x + planes[1, 2, flat] * y) / total, np.float32(0.0))
        norm = b0 + b1 + b2
        bary[0, p], bary[1, p], bary[2, p] = b0 / norm, b1 / norm, b2 / norm
        front[p] = front_table[flat]


@numba.njit(cache=True, nogil=True)
def interpolate_pixels(
    face: np.ndarray, bary: np.ndarray, faces: np.ndarray, attributes: np.ndarray, pixels: int, out: np.ndarray
) -> None:
    """out (C, B S²) = Σ_k bary_k · attribute of corner k of each pixel's face, 0 where empty.
    face: (B S²,) int64; bary: (3, B S²) float32; faces: (B, F, 3) int64; attributes: (B, V, C) float32."""
    channels = attributes.shape[2]
    for p in range(face.shape[0]):
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
