"""Compiled CPU kernel of the aggregation (Numba): one source view shaded and composited pixel by pixel.

It computes what `aggregate.shade_view` followed by `aggregate.Compositor.add` computes, in the same float32
arithmetic, without the full-image intermediate tensors. Importing this module needs numba.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from iterview.geometry.raster_kernels import draw_band, pixel_barycentrics, spread

# The constants of `aggregate`, as the float32 values the PyTorch path compares and multiplies with.
_ANGLE_FALLOFF = np.float32(20.0)
_MIN_WEIGHT = np.float32(1e-4)
_ERODED_FACTOR = np.float32(1e-8)
_WEAK_WEIGHT = np.float32(1e-16)
_STRONG_DEPTH = np.float32(1e-14)
_STRONG_COLOR = np.float32(1e-6)
_WEAK_DEPTH_WEIGHT = np.float32(1e-8)
_HULL_LIMIT = np.float32(2e-8)
_ZERO, _ONE, _TINY = np.float32(0.0), np.float32(1.0), np.float32(1e-30)
_EDGE_LEVEL, _PADDING_LEVEL = np.float32(0.999), np.float32(0.001)
# exp(-20·acos(0.89)) = 7.7e-5: below this cosine the weight is the 1e-4 floor, with a wide margin.
_FLOOR_COSINE = np.float32(0.89)


@numba.njit(cache=True, nogil=True)
def _view_weight(values: np.ndarray, centre: np.ndarray) -> np.float32:
    """The official weight of a front fragment; values: uv (2), edge, padding, eroded, normal (3), position (3).
    Shortcuts that give the same float32 value: edges and padding are weak whatever the angle, and beyond the
    angle where exp(-20·angle) < 1e-4 the floor holds."""
    if values[3] > _PADDING_LEVEL or values[2] > _EDGE_LEVEL:
        return _WEAK_WEIGHT
    tx, ty, tz = centre[0] - values[8], centre[1] - values[9], centre[2] - values[10]
    nx, ny, nz = values[5], values[6], values[7]
    lengths = max(math.sqrt(tx * tx + ty * ty + tz * tz) * math.sqrt(nx * nx + ny * ny + nz * nz), _TINY)
    cosine = min(max((tx * nx + ty * ny + tz * nz) / lengths, _ZERO), _ONE)
    weight = _MIN_WEIGHT
    if cosine >= _FLOOR_COSINE:
        weight = max(np.float32(math.exp(math.acos(cosine) * -_ANGLE_FALLOFF)), _MIN_WEIGHT)
    if values[4] >= _EDGE_LEVEL:
        weight = weight * _ERODED_FACTOR
    return max(weight, _WEAK_WEIGHT)


@numba.njit(cache=True, nogil=True, parallel=True)
def draw_and_composite(
    table: np.ndarray,
    planes: np.ndarray,
    front: np.ndarray,
    faces: np.ndarray,
    attributes: np.ndarray,
    texture: np.ndarray,
    centre: np.ndarray,
    face: np.ndarray,
    zbuffer: np.ndarray,
    color: np.ndarray,
    depth: np.ndarray,
    count_color: np.ndarray,
    count_depth: np.ndarray,
    bands: int,
) -> None:
    """Depth-test one view and composite its nearest fragments into the accumulators in place, band of rows by
    band: the thread that depth-tests a band shades it while its buffers are in cache, and bands are dealt out
    spread over the image (`spread`), whose rows differ in cost.

    table: (19, T) the view's triangles (`raster_kernels.setup_triangles`); planes: (3, 4, B F) and front (B F,)
    per face; faces: (B, F, 3); attributes: (B, V, 11) uv, edge, padding, eroded, normal, position; texture:
    (B, 3, N, N); centre: (B, 3) the view's camera centre. face (B, S, S) int64 and zbuffer (B, S, S) float32:
    scratch for the depth test. Accumulators: color (B, 4, S²) Σ rgb·w, Σ w; depth (B, 2, S²) Σ d·w_d, Σ w_d;
    count_color, count_depth (B, S²) int32.
    """
    batch, size = face.shape[0], face.shape[-1]
    flat_face, flat_zbuffer = face.reshape(-1), zbuffer.reshape(-1)
    for part in numba.prange(bands):
        band = spread(part, bands)
        low, high = band * size // bands, (band + 1) * size // bands - 1  # sample rows, window y up
        for b in range(batch):
            for row in range(size - 1 - high, size - low):
                face[b, row, :] = -1
                zbuffer[b, row, :] = np.inf
        draw_band(table, low, high, size, flat_zbuffer, flat_face)
        for b in range(batch):
            for row in range(size - 1 - high, size - low):
                _composite_row(
                    b,
                    row,
                    face,
                    zbuffer,
                    planes,
                    front,
                    faces,
                    attributes,
                    texture,
                    centre,
                    color,
                    depth,
                    count_color,
                    count_depth,
                )


@numba.njit(cache=True, nogil=True)
def _composite_row(
    b: int,
    row: int,
    face: np.ndarray,
    zbuffer: np.ndarray,
    planes: np.ndarray,
    front: np.ndarray,
    faces: np.ndarray,
    attributes: np.ndarray,
    texture: np.ndarray,
    centre: np.ndarray,
    color: np.ndarray,
    depth: np.ndarray,
    count_color: np.ndarray,
    count_depth: np.ndarray,
) -> None:
    """Composite image row `row` of batch element b (see draw_and_composite)."""
    size, texels, num_faces = face.shape[-1], texture.shape[-1], faces.shape[1]
    values = np.empty(attributes.shape[2], dtype=np.float32)
    half = np.float32(2.0 / size)
    y = (np.float32(size - 1 - row) + np.float32(0.5)) * half - _ONE
    for column in range(size):
        f = face[b, row, column]
        flat = b * num_faces + f
        if f < 0 or not front[flat]:
            continue  # weight 0: nothing is added
        x = (np.float32(column) + np.float32(0.5)) * half - _ONE
        w0, w1, w2 = pixel_barycentrics(planes, flat, x, y)
        v0, v1, v2 = faces[b, f, 0], faces[b, f, 1], faces[b, f, 2]
        for c in range(values.shape[0]):
            values[c] = attributes[b, v0, c] * w0 + attributes[b, v1, c] * w1 + attributes[b, v2, c] * w2
        weight = _view_weight(values, centre[b])
        u = min(max(math.floor(values[0] * np.float32(texels)), 0), texels - 1)
        v = min(max(math.floor(values[1] * np.float32(texels)), 0), texels - 1)
        strong = weight > _STRONG_DEPTH
        depth_weight = _ONE if strong else _WEAK_DEPTH_WEIGHT
        p = row * size + column
        if weight > _STRONG_COLOR:
            count_color[b, p] += 1
        if strong:
            count_depth[b, p] += 1
        weighted_depth = zbuffer[b, row, column] * depth_weight
        stored = depth[b, 1, p]
        if not strong and _ZERO < stored < _HULL_LIMIT:  # only weak samples so far: keep the farthest
            if not weighted_depth > depth[b, 0, p]:
                continue
            for k in range(3):
                color[b, k, p] = texture[b, k, v, u] * weight
            color[b, 3, p] = weight
            depth[b, 0, p], depth[b, 1, p] = weighted_depth, depth_weight
            continue
        for k in range(3):
            color[b, k, p] += texture[b, k, v, u] * weight
        color[b, 3, p] += weight
        depth[b, 0, p] += weighted_depth
        depth[b, 1, p] += depth_weight
