"""Compiled CPU kernel of the aggregation (Numba): source views shaded and composited pixel by pixel, in turn.

It computes what `aggregate.shade_view` followed by `aggregate.Compositor.add` computes for each view, in the same
float32 arithmetic, without the full-image intermediate tensors. Importing this module needs numba.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from iterview.geometry.mesh import FLAG_EDGE, FLAG_ERODED, FLAG_PADDING
from iterview.geometry.raster_kernels import (
    band_rows,
    clear_rows,
    draw_listed,
    element,
    pixel_barycentrics,
    spread,
    texel,
)

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
def _view_weight(
    corners: np.ndarray, w0: np.float32, w1: np.float32, w2: np.float32, cx: np.float32, cy: np.float32, cz: np.float32
) -> np.float32:
    """The official weight of a front fragment of barycentrics w0, w1, w2 on a face whose corners (3, 11) hold
    uv (2), edge, padding, eroded, normal (3), position (3). Shortcuts that give the same float32 value: edges and
    padding are weak whatever the angle (their normal and position are not even interpolated), and beyond the
    angle where exp(-20·angle) < 1e-4 the floor holds."""
    if _mix(corners, 3, w0, w1, w2) > _PADDING_LEVEL or _mix(corners, 2, w0, w1, w2) > _EDGE_LEVEL:
        return _WEAK_WEIGHT
    nx, ny, nz = _mix(corners, 5, w0, w1, w2), _mix(corners, 6, w0, w1, w2), _mix(corners, 7, w0, w1, w2)
    tx, ty, tz = (
        cx - _mix(corners, 8, w0, w1, w2),
        cy - _mix(corners, 9, w0, w1, w2),
        cz - _mix(corners, 10, w0, w1, w2),
    )
    lengths = max(math.sqrt(tx * tx + ty * ty + tz * tz) * math.sqrt(nx * nx + ny * ny + nz * nz), _TINY)
    cosine = min(max((tx * nx + ty * ny + tz * nz) / lengths, _ZERO), _ONE)
    weight = _MIN_WEIGHT
    if cosine >= _FLOOR_COSINE:
        weight = max(np.float32(math.exp(math.acos(cosine) * -_ANGLE_FALLOFF)), _MIN_WEIGHT)
    if _mix(corners, 4, w0, w1, w2) >= _EDGE_LEVEL:
        weight = weight * _ERODED_FACTOR
    return max(weight, _WEAK_WEIGHT)


@numba.njit(cache=True, nogil=True)
def _mix(corners: np.ndarray, channel: int, w0: np.float32, w1: np.float32, w2: np.float32) -> np.float32:
    """Channel `channel` of a face's corners (3, C) interpolated with barycentrics w0, w1, w2."""
    return corners[0, channel] * w0 + corners[1, channel] * w1 + corners[2, channel] * w2


@numba.njit(cache=True, nogil=True, parallel=True)
def draw_and_composite(
    table: np.ndarray,
    starts: np.ndarray,
    triangles: np.ndarray,
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
    """Depth-test views one after the other and composite each one's nearest fragments into the accumulators
    in place, band of rows by band: the thread that takes a band runs every view over it, so the band's
    accumulators stay in cache, and bands are dealt out spread over the image (`spread`), whose rows differ in
    cost.

    The views' meshes are stacked as one batch, view-major: element n = v·B + b is view v seen from target b.
    table: (19, T) their triangles (`raster_kernels.setup_triangles`), listed by view and band in starts and
    triangles (`raster_kernels.bin_triangles`); planes: (N F, 3, 4) and front (N F,) per face; faces: (N, F, 3);
    attributes: (N, V, 11) (`shading_attributes`); texture: (N, 3, M, M); centre: (N, 3) the views' camera
    centres. face (B, S, S) int64 and zbuffer (B, S, S) float32: scratch for the depth test. Accumulators: color
    (B, 4, S²) Σ rgb·w, Σ w; depth (B, 2, S²) Σ d·w_d, Σ w_d; count_color, count_depth
    (B, S²) int32.
    """
    batch, size = face.shape[0], face.shape[-1]
    views = (len(starts) - 1) // bands
    flat_face, flat_zbuffer = face.reshape(-1), zbuffer.reshape(-1)
    for part in numba.prange(bands):
        band = spread(part, bands)
        low, high = band_rows(band, size, bands)  # sample rows, window y up
        for view in range(views):
            clear_rows(face, zbuffer, size - 1 - high, size - low)
            listed = triangles[starts[view * bands + band] : starts[view * bands + band + 1]]
            draw_listed(table, listed, low, high, size, view * batch * size * size, flat_zbuffer, flat_face)
            for b in range(batch):
                for row in range(size - 1 - high, size - low):
                    _composite_row(
                        view * batch + b,
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
    n: int,
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
    """Composite image row `row` of target b from stacked element n (see draw_and_composite)."""
    size, texels, num_faces = face.shape[-1], texture.shape[-1], faces.shape[1]
    corners = np.empty((3, 11), dtype=np.float32)
    half = np.float32(2.0 / size)
    y = (np.float32(size - 1 - row) + np.float32(0.5)) * half - _ONE
    last = -1
    for column in range(size):
        f = face[b, row, column]
        flat = n * num_faces + f
        if f < 0 or not front[flat]:
            continue  # weight 0: nothing is added
        if f != last:  # neighbouring pixels mostly share their face
            for k in range(3):
                vertex = faces[n, f, k]
                for c in range(11):
                    corners[k, c] = attributes[n, vertex, c]
            last = f
        x = (np.float32(column) + np.float32(0.5)) * half - _ONE
        w0, w1, w2 = pixel_barycentrics(planes, flat, x, y)
        weight = _view_weight(corners, w0, w1, w2, centre[n, 0], centre[n, 1], centre[n, 2])
        u, v = texel(_mix(corners, 0, w0, w1, w2), texels), texel(_mix(corners, 1, w0, w1, w2), texels)
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
                color[b, k, p] = texture[n, k, v, u] * weight
            color[b, 3, p] = weight
            depth[b, 0, p], depth[b, 1, p] = weighted_depth, depth_weight
            continue
        for k in range(3):
            color[b, k, p] += texture[n, k, v, u] * weight
        color[b, 3, p] += weight
        depth[b, 0, p] += weighted_depth
        depth[b, 1, p] += depth_weight


@numba.njit(cache=True, nogil=True, parallel=True)
def shading_attributes(uv: np.ndarray, flag: np.ndarray, normal: np.ndarray, position: np.ndarray) -> np.ndarray:
    """The shader's per-vertex inputs (N, V, 11) float32 of meshes' uv (N, V, 2), flag (N, V), normal and
    position (N, V, 3): uv, edge, padding and eroded bits (0 or 1), normal, position (`aggregate._shading_inputs`)."""
    count = flag.shape[1]
    attributes = np.empty((flag.shape[0], count, 11), dtype=np.float32)
    for t in numba.prange(flag.size):
        n = element(t, count)
        vertex = t - n * count
        bits = flag[n, vertex]
        attributes[n, vertex, 0], attributes[n, vertex, 1] = uv[n, vertex, 0], uv[n, vertex, 1]
        attributes[n, vertex, 2] = _ONE if bits & FLAG_EDGE else _ZERO
        attributes[n, vertex, 3] = _ONE if bits & FLAG_PADDING else _ZERO
        attributes[n, vertex, 4] = _ONE if bits & FLAG_ERODED else _ZERO
        for c in range(3):
            attributes[n, vertex, 5 + c], attributes[n, vertex, 8 + c] = normal[n, vertex, c], position[n, vertex, c]
    return attributes


@numba.njit(cache=True, nogil=True, parallel=True)
def padding_faces(faces: np.ndarray, flag: np.ndarray) -> np.ndarray:
    """(N, F) bool: the faces (N, F, 3) with a corner whose flag (N, V) has the padding bit, which the shader
    discards where they face away."""
    num_faces, flat_faces = faces.shape[1], faces.reshape(-1, 3)
    touching = np.empty(len(flat_faces), dtype=np.bool_)
    for t in numba.prange(len(flat_faces)):
        n = element(t, num_faces)
        corners = flag[n, flat_faces[t, 0]] | flag[n, flat_faces[t, 1]] | flag[n, flat_faces[t, 2]]
        touching[t] = corners & FLAG_PADDING != 0
    return touching.reshape(faces.shape[:2])
