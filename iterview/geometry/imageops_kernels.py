"""Compiled CPU kernels of `imageops` (Numba): Pillow's LANCZOS resize in its fixed-point arithmetic, a few rows
at a time, without the batch-sized float64 working copies; the depth-edge and coverage masks in one pass over the
pixels. Importing this module needs numba.

The sums of integer taps × integer levels stay below 2^37, exact in float64 in any order, so the passes give
Pillow's integer levels bit for bit.
"""

from __future__ import annotations

import numba
import numpy as np

from iterview.geometry.imageops import PIL_PRECISION_BITS
from iterview.geometry.raster_kernels import element

_SCALE, _HALF = 2.0**-PIL_PRECISION_BITS, 2.0 ** (PIL_PRECISION_BITS - 1)
_ZERO, _ONE, _LEVELS = np.float32(0.0), np.float32(1.0), np.float32(255.0)
_MIN_DEPTH = np.float32(1e-6)
_ROWS = 8  # image rows the horizontal pass filters together


@numba.njit(cache=True, nogil=True, parallel=True)
def lanczos(
    image: np.ndarray,
    column_first: np.ndarray,
    column_weights: np.ndarray,
    row_first: np.ndarray,
    row_weights: np.ndarray,
    out: np.ndarray,
) -> None:
    """Resize image (B, C, H, W) float32 in [0, 1] into out (B, C, H', W') float32 as `imageops.lanczos_downsample`
    does (horizontal pass first): uint8 levels by truncation, then per pass the fixed-point sums of the filter taps,
    rounded and clipped to uint8. column_first (W',) int64: each output column's first input column;
    column_weights (W', K) float64: its integer weights × 2^22 from there (zeros past its support, and no tap
    past the last input); rows alike (H')."""
    planes, height, width = image.shape[0] * image.shape[1], image.shape[2], image.shape[3]
    flat_image, flat_out = image.reshape(planes, height, width), out.reshape(planes, out.shape[2], out.shape[3])
    columns = np.empty((planes, height, out.shape[3]))
    blocks = (height + _ROWS - 1) // _ROWS
    for block in numba.prange(planes * blocks):
        p = element(block, blocks)
        low = (block - p * blocks) * _ROWS
        _resample_rows(flat_image[p, low : low + _ROWS], column_first, column_weights, columns[p, low : low + _ROWS])
    for line in numba.prange(planes * out.shape[2]):
        p = element(line, out.shape[2])
        y = line - p * out.shape[2]
        _resample_column(columns[p], row_first[y], row_weights[y], flat_out[p, y])


@numba.njit(cache=True, nogil=True)
def _resample_rows(rows: np.ndarray, first: np.ndarray, weights: np.ndarray, out: np.ndarray) -> None:
    """The horizontal pass over a few image rows (R, W) float32: their levels (truncated as astype(uint8), in
    float32), filtered into out (R, W') levels. The levels are held column-major, so that each tap weighs the R
    rows at once."""
    count = len(rows)
    levels = np.zeros((rows.shape[1], _ROWS))
    for r in range(count):
        for x in range(rows.shape[1]):
            levels[x, r] = np.floor(min(max(rows[r, x], _ZERO), _ONE) * _LEVELS)
    total = np.empty(_ROWS)
    for x in range(out.shape[1]):
        total[:] = _HALF
        start = first[x]
        for k in range(weights.shape[1]):
            weight = weights[x, k]
            for r in range(_ROWS):
                total[r] += weight * levels[start + k, r]
        for r in range(count):
            out[r, x] = _clip8(total[r])


@numba.njit(cache=True, nogil=True)
def _resample_column(columns: np.ndarray, first: int, weights: np.ndarray, out: np.ndarray) -> None:
    """The vertical pass for one output row: the weighted rows of columns (H, W') from `first`, into out (W',)
    float32 as level / 255."""
    total = np.full(len(out), _HALF)
    for k in range(len(weights)):
        for x in range(len(out)):
            total[x] += weights[k] * columns[first + k, x]
    for x in range(len(out)):
        out[x] = np.float32(_clip8(total[x]) / 255.0)


@numba.njit(cache=True, nogil=True)
def _clip8(total: float) -> float:
    """Pillow's clip8: the fixed-point sum (half already added) shifted to an integer level in 0..255."""
    return min(max(np.floor(total * _SCALE), 0.0), 255.0)


@numba.njit(cache=True, nogil=True, parallel=True)
def depth_edge(depth: np.ndarray, atol: np.float32, rtol: np.float32, out: np.ndarray) -> None:
    """`imageops.depth_edge` of depth (P, H, W) float32 into out (P, H, W) bool: fewer than 3 of a pixel's
    8-neighbours differ from it by more than atol in depth and by more than rtol in inverse depth (depth clamped
    to >= 1e-6; float32 throughout)."""
    for line in numba.prange(out.shape[0] * out.shape[1]):
        p = element(line, out.shape[1])
        for x in range(out.shape[2]):
            out[p, line - p * out.shape[1], x] = _broken_pairs(depth[p], line - p * out.shape[1], x, atol, rtol) < 3


@numba.njit(cache=True, nogil=True)
def _broken_pairs(depth: np.ndarray, y: int, x: int, atol: np.float32, rtol: np.float32) -> int:
    """How many of pixel (y, x)'s 8-neighbours in depth (H, W) are discontinuous with it."""
    count = 0
    for dy in range(-1, 2):
        for dx in range(-1, 2):
            inside = 0 <= y + dy < depth.shape[0] and 0 <= x + dx < depth.shape[1] and (dy != 0 or dx != 0)
            if inside and _discontinuous(depth[y, x], depth[y + dy, x + dx], atol, rtol):
                count += 1
    return count


@numba.njit(cache=True, nogil=True)
def _discontinuous(first: np.float32, second: np.float32, atol: np.float32, rtol: np.float32) -> bool:
    """|d1 - d2| > atol and |1/d1 - 1/d2| > rtol, each depth clamped to >= 1e-6."""
    first, second = max(first, _MIN_DEPTH), max(second, _MIN_DEPTH)
    return abs(first - second) > atol and abs(_ONE / first - _ONE / second) > rtol


@numba.njit(cache=True, nogil=True, parallel=True)
def coverage_mask(mask: np.ndarray, ssaa: int, least: int, out: np.ndarray) -> None:
    """`imageops.coverage_mask` of mask (P, H·s, W·s) bool into out (P, H, W) bool: at least `least` of the s×s
    samples of each block set."""
    for block_row in numba.prange(out.shape[0] * out.shape[1]):
        p = element(block_row, out.shape[1])
        rows = mask[p, (block_row - p * out.shape[1]) * ssaa :]
        for x in range(out.shape[2]):
            out[p, block_row - p * out.shape[1], x] = rows[:ssaa, x * ssaa : (x + 1) * ssaa].sum() >= least
