"""Small image operations matching the official PIL / OpenCV calls, batched and device-agnostic."""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator
from types import ModuleType

import numpy as np
import PIL
import torch
import torch.nn.functional as F

from iterview.geometry.raster import Backend, use_kernels

_PILLOW_MAJOR = int(PIL.__version__.split(".")[0])
# Pillow's 8-bit resampler keeps filter weights as integers with 22 fractional bits (Resample.c).
PIL_PRECISION_BITS = 22
_LANCZOS_SUPPORT = 3.0
_LANCZOS_BYTES = 8 << 20  # float64 working copy of the images resampled at once


def lanczos_downsample(
    image: torch.Tensor, size: int, validate: bool = True, backend: Backend = "auto"
) -> torch.Tensor:
    """PIL LANCZOS resize of uint8-quantised colour. image: (B, C, H, W) in [0, 1] -> (B, C, size, size).

    Bit-exact with the official `Image.fromarray((clip(x, 0, 1) * 255).astype(uint8)).resize(..., LANCZOS) / 255`:
    truncating quantisation, PIL's fixed-point weights, two separable passes each rounded to uint8.
    Returns multiples of 1/255 in image's dtype. validate=False skips the input checks (and the device sync of
    the finiteness test), for images the caller rendered itself. backend: as in `raster.rasterize` ("numba" runs
    Pillow's integer arithmetic compiled, for float32 images).
    """
    if image.ndim != 4 or not image.is_floating_point():
        raise ValueError(f"expected a floating-point image batch (B, C, H, W), got {image.dtype} {tuple(image.shape)}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    if validate and not torch.isfinite(image).all():
        raise ValueError("image contains NaN or inf")
    # Pillow 13 runs the vertical pass first when the height shrinks by more than twice the width; earlier
    # versions always go horizontal first. Both agree on the square images of the pipeline.
    height, width = image.shape[-2:]
    vertical_first = _PILLOW_MAJOR >= 13 and height - size > 0 and height - size > 2 * (width - size)
    if use_kernels(image.device, backend) and image.dtype == torch.float32 and not vertical_first:
        return _lanczos_compiled(image, size)
    # A few images at a time: the float64 working copies of a whole batch would be mapped afresh (and page-faulted)
    # on every call, 2-3x slower per image on a CPU.
    chunk = max(1, _LANCZOS_BYTES // (8 * image[0].numel()))
    if len(image) > chunk:
        return torch.cat([lanczos_downsample(part, size, validate=False) for part in image.split(chunk)])
    # float32 like the official numpy arrays, truncation like astype(uint8) (a floor: the values are >= 0);
    # float64 sums of these integer products stay exact, which keeps the fixed-point arithmetic exact on devices
    # without integer matmul.
    levels = image.to(torch.float32).clamp(0, 1).mul_(255).floor_().to(torch.float64)
    rows = _pil_lanczos_weights(image.shape[-2], size).to(image.device)
    columns = _pil_lanczos_weights(image.shape[-1], size).to(image.device)
    row_bands, column_bands = _lanczos_bands(image.shape[-2], size), _lanczos_bands(image.shape[-1], size)
    if not vertical_first:
        levels = _pil_round(
            _resample_rows(_pil_round(_resample_columns(levels, columns, column_bands)), rows, row_bands)
        )
    else:
        levels = _pil_round(
            _resample_columns(_pil_round(_resample_rows(levels, rows, row_bands)), columns, column_bands)
        )
    return (levels / 255).to(image.dtype)


def _lanczos_compiled(image: torch.Tensor, size: int) -> torch.Tensor:
    """lanczos_downsample (horizontal pass first) with the compiled kernel (CPU, numba)."""
    out = torch.empty(*image.shape[:-2], size, size)
    filters = (*_lanczos_taps(image.shape[-1], size), *_lanczos_taps(image.shape[-2], size))
    with _compiled() as kernels:
        kernels.lanczos(image.contiguous().numpy(), *filters, out.numpy())
    return out


@functools.lru_cache(maxsize=32)
def _lanczos_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The LANCZOS weights (out, in) as each output's first input (out,) int64 and its K taps from there
    (out, K) float64, zero past its support; the window starts early enough to end within the input."""
    weights = _pil_lanczos_weights(in_size, out_size)
    used = weights != 0
    first = torch.where(used.any(1), used.int().argmax(1), 0)
    last = torch.where(used.any(1), in_size - 1 - used.flip(1).int().argmax(1), 0)
    taps = int((last - first).max()) + 1
    first = first.clamp(max=in_size - taps)
    window = first[:, None] + torch.arange(taps)
    return first.numpy(), weights.gather(1, window).contiguous().numpy()


def _resample_columns(levels: torch.Tensor, weights: torch.Tensor, bands: Bands) -> torch.Tensor:
    """levels (..., H, W_in) @ weights.T for the banded weights (W_out, W_in): a block of outputs at a time, each
    with only the inputs under its filters (sums of integers, exact in float64 in any order)."""
    return torch.cat([levels[..., lo:hi] @ weights[out, lo:hi].T for out, lo, hi in bands], dim=-1)


def _resample_rows(levels: torch.Tensor, weights: torch.Tensor, bands: Bands) -> torch.Tensor:
    """weights (H_out, H_in) @ levels (..., H_in, W), banded as `_resample_columns`."""
    return torch.cat([weights[out, lo:hi] @ levels[..., lo:hi, :] for out, lo, hi in bands], dim=-2)


Bands = list[tuple[slice, int, int]]


@functools.lru_cache(maxsize=32)
def _lanczos_bands(in_size: int, out_size: int, block: int = 16) -> Bands:
    """(outputs, first input, end input) per block of `block` outputs of the LANCZOS weights (out, in)."""
    used = _pil_lanczos_weights(in_size, out_size) != 0
    bands = []
    for start in range(0, out_size, block):
        columns = used[start : start + block].any(0).nonzero()
        lo, hi = (int(columns[0]), int(columns[-1]) + 1) if len(columns) else (0, 0)
        bands.append((slice(start, start + block), lo, hi))
    return bands


def _pil_round(accumulated: torch.Tensor) -> torch.Tensor:
    """Pillow's clip8: add one half, shift out the fraction (a floor), clamp to 0..255."""
    return torch.floor((accumulated + 2 ** (PIL_PRECISION_BITS - 1)) / 2**PIL_PRECISION_BITS).clamp(0, 255)


def _sinc(x: float) -> float:
    return 1.0 if x == 0.0 else math.sin(x * math.pi) / (x * math.pi)


@functools.lru_cache(maxsize=32)
def _pil_lanczos_weights(in_size: int, out_size: int) -> torch.Tensor:
    """Pillow's precompute_coeffs + normalize_coeffs_8bpc for LANCZOS as a dense (out, in) float64 matrix of
    integers (weights × 2^22). Plain Python floats follow the C double arithmetic operation for operation."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = _LANCZOS_SUPPORT * filterscale
    inv_filterscale = 1.0 / filterscale
    weights = torch.zeros(out_size, in_size, dtype=torch.float64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size)
        taps = []
        for x in range(xmin, xmax):
            t = (x - center + 0.5) * inv_filterscale
            taps.append(_sinc(t) * _sinc(t / 3) if -_LANCZOS_SUPPORT <= t < _LANCZOS_SUPPORT else 0.0)
        total = 0.0
        for w in taps:  # sequential like the C loop (Python >= 3.12's sum() compensates)
            total += w
        for x, w in zip(range(xmin, xmax), taps, strict=True):
            w = (w / total if total != 0.0 else w) * 2**PIL_PRECISION_BITS
            weights[xx, x] = int(w - 0.5) if w < 0 else int(w + 0.5)
    return weights


def gaussian_blur3(image: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """cv2.GaussianBlur 3x3 with reflect-101 border. image: (B, C, H, W); sigma: (B,) > 0, one per image."""
    if image.ndim != 4 or not image.is_floating_point() or min(image.shape[-2:]) < 2:
        raise ValueError(
            f"expected a floating-point image batch (B, C, H, W) with H, W >= 2, got {image.dtype} {tuple(image.shape)}"
        )
    # The B kernels are built on the CPU in double, like cv2, so every device blurs with the same weights.
    sigma = torch.as_tensor(sigma).to(device="cpu", dtype=torch.float64).reshape(-1)
    if sigma.shape[0] != image.shape[0] or not (torch.isfinite(sigma) & (sigma > 0)).all():
        raise ValueError(f"sigma must hold {image.shape[0]} finite values > 0, got {sigma.tolist()}")
    # cv2.getGaussianKernel: exp(-t²/2σ²) at t = -1, 0, 1, normalised in double, then cast to the image type.
    taps = torch.exp(-0.5 / sigma[:, None] ** 2 * torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64))
    kernel = (taps * (1 / taps.sum(-1, keepdim=True))).to(device=image.device, dtype=image.dtype)
    kernel = kernel[:, :, None, None, None]  # (B, 3, 1, 1, 1) against (B, C, H, W)
    padded = F.pad(image, (1, 1, 1, 1), mode="reflect")  # torch's "reflect" is cv2's BORDER_REFLECT_101
    rows = kernel[:, 0] * padded[..., :-2] + kernel[:, 1] * padded[..., 1:-1] + kernel[:, 2] * padded[..., 2:]
    return kernel[:, 0] * rows[..., :-2, :] + kernel[:, 1] * rows[..., 1:-1, :] + kernel[:, 2] * rows[..., 2:, :]


def erode(mask: torch.Tensor, kernel: int) -> torch.Tensor:
    """cv2.erode with a kernel×kernel square; the border does not erode. mask: (B, C, H, W) bool -> bool.

    Even kernels use cv2's anchor (kernel // 2), so the window reaches one step further up and left.
    """
    if mask.dtype != torch.bool or mask.ndim != 4:
        raise ValueError(f"expected a bool mask (B, C, H, W), got {mask.dtype} {tuple(mask.shape)}")
    if isinstance(kernel, bool) or not isinstance(kernel, int) or kernel < 1:
        raise ValueError(f"expected an erosion kernel size >= 1, got {kernel!r}")
    if kernel == 1:
        return mask.clone()
    before, after = kernel // 2, kernel - 1 - kernel // 2
    # Erosion is a max-pool of the complement; padding the complement with 0 makes the outside count as "set".
    # Separable: a square max-pool is a row max-pool of a column max-pool.
    holes = F.pad((~mask).to(torch.float32), (before, after, before, after), value=0.0)
    return F.max_pool2d(F.max_pool2d(holes, (kernel, 1), stride=1), (1, kernel), stride=1) == 0


def depth_edge(depth: torch.Tensor, atol: float, rtol: float, backend: Backend = "auto") -> torch.Tensor:
    """Official depth_edge: True where a pixel has fewer than 3 discontinuous neighbour pairs.
    depth: (B, 1, H, W) -> bool (B, 1, H, W).

    A pair of 8-neighbours is discontinuous when |d1 - d2| > atol AND |1/d1 - 1/d2| > rtol, with d clamped to
    >= 1e-6; each pixel counts the pairs it belongs to (0 to 8). backend: as in `raster.rasterize`.
    """
    if depth.ndim != 4 or not depth.is_floating_point():
        raise ValueError(f"expected a floating-point depth batch (B, 1, H, W), got {depth.dtype} {tuple(depth.shape)}")
    if use_kernels(depth.device, backend) and depth.dtype == torch.float32:
        out = torch.empty(depth.shape, dtype=torch.bool)
        with _compiled() as kernels:
            kernels.depth_edge(_planes(depth)[0], np.float32(atol), np.float32(rtol), _planes(out)[0])
        return out
    depth = depth.clamp_min(1e-6)
    inverse = 1 / depth
    height, width = depth.shape[-2:]
    count = torch.zeros(depth.shape, dtype=torch.int32, device=depth.device)
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        first = (slice(None), slice(None), slice(0, height - dy), slice(max(-dx, 0), width - max(dx, 0)))
        second = (slice(None), slice(None), slice(dy, height), slice(max(dx, 0), width - max(-dx, 0)))
        broken = ((depth[first] - depth[second]).abs() > atol) & ((inverse[first] - inverse[second]).abs() > rtol)
        count[first] += broken
        count[second] += broken
    return count < 3


def subsample_center(x: torch.Tensor, ssaa: int) -> torch.Tensor:
    """The official centre sample of each ssaa×ssaa block (offset (ssaa-1)//2). (..., H·s, W·s) -> (..., H, W)."""
    _check_blocks(x, ssaa)
    offset = (ssaa - 1) // 2
    return x[..., offset::ssaa, offset::ssaa]


def coverage_mask(mask: torch.Tensor, ssaa: int, threshold: float = 0.75, backend: Backend = "auto") -> torch.Tensor:
    """True where more than threshold·s² samples of an s×s block are set. (..., H·s, W·s) bool -> (..., H, W).
    backend: as in `raster.rasterize`."""
    _check_blocks(mask, ssaa)
    height, width = mask.shape[-2] // ssaa, mask.shape[-1] // ssaa
    if use_kernels(mask.device, backend) and mask.dtype == torch.bool:
        out = torch.empty(*mask.shape[:-2], height, width, dtype=torch.bool)
        with _compiled() as kernels:  # count > threshold·s² <=> count >= floor(threshold·s²) + 1
            kernels.coverage_mask(_planes(mask)[0], ssaa, math.floor(threshold * ssaa * ssaa) + 1, _planes(out)[0])
        return out
    blocks = mask.reshape(*mask.shape[:-2], height, ssaa, width, ssaa)
    return blocks.sum((-3, -1)) > threshold * ssaa * ssaa


@contextlib.contextmanager
def _compiled() -> Iterator[ModuleType]:
    """The compiled kernels of this module, run on PyTorch's thread count."""
    from iterview.geometry import imageops_kernels, raster_kernels

    with raster_kernels.running_on():
        yield imageops_kernels


def _planes(*images: torch.Tensor) -> list[np.ndarray]:
    """(..., H, W) CPU tensors as contiguous (P, H, W) numpy arrays (sharing memory where already contiguous)."""
    return [image.contiguous().view(-1, *image.shape[-2:]).numpy() for image in images]


def _check_blocks(x: torch.Tensor, ssaa: int) -> None:
    if isinstance(ssaa, bool) or not isinstance(ssaa, int) or ssaa < 1:
        raise ValueError(f"ssaa must be a positive integer, got {ssaa!r}")
    if x.ndim < 2 or x.shape[-1] % ssaa or x.shape[-2] % ssaa:
        raise ValueError(f"expected (..., H·{ssaa}, W·{ssaa}), got shape {tuple(x.shape)}")
