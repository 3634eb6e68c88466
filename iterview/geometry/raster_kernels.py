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


@numba.njit(cache=True, nogil=True)
def draw_triangles(
    table: np.ndarray, row_first: np.ndarray, rows: np.ndarray, size: int, depth: np.ndarray, face: np.ndarray
) -> None:
    """Depth-test every covered sample of the triangles into depth (B S²,) float32 (+inf where empty) and face
    (B S²,) int64. table: (17, T) float64 as `raster._Setup.table`; row_first: (T,) float64; rows: (T,) int64.

    The nearest fragment wins; equal depths go to the lower face index (GL's strict '<' in draw order).
    """
    for t in range(table.shape[1]):
        z0, dzdx, dzdy, base = table[12, t], table[13, t], table[14, t], table[15, t]
        index = np.int64(table[16, t])
        step = np.float32(dzdx)
        for k in range(rows[t]):
            row = row_first[t] + k
            lower = max(
                math.floor((table[0, t] + table[4, t] * row) / table[8, t]),
                math.floor((table[1, t] + table[5, t] * row) / table[9, t]),
                0.0,
            )
            upper = min(
                math.floor((table[2, t] + table[6, t] * row) / table[10, t]),
                math.floor((table[3, t] + table[7, t] * row) / table[11, t]),
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
