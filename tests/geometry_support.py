"""Shared by the rasteriser, warp, training-pair and aggregation tests: fixtures, a smooth test scene and the
issue-2 acceptance check of renders against the official reference data."""

from __future__ import annotations

import json
import re

import torch
from safetensors.torch import load_file

from iterview.geometry.cameras import linear_to_zbuffer

AGREEMENT = 0.99
COLOR_TOLERANCE = 2 / 255
DEPTH_TOLERANCE = 1e-3


def load_warping(reference):
    """The official warping reference arrays."""
    return load_file(reference / "warping" / "warping.safetensors")


def load_warping_meta(reference) -> dict:
    """warping.json: `image_size`, `fov_degrees`, every camera's parameters and every array's shape."""
    return json.loads((reference / "warping" / "warping.json").read_text())


def indices(arrays: dict, pattern: str) -> list[int]:
    """The sorted numbers N of the stored arrays whose name matches `pattern` with N at `(\\d+)`, e.g.
    `source(\\d+)_modelview`: which views, cameras or targets this reference set holds."""
    return sorted({int(m[1]) for key in arrays if (m := re.fullmatch(pattern, key))})


def size_of(arrays: dict, key: str) -> int:
    """The side of a stored square H×W×C image."""
    height, width = arrays[key].shape[:2]
    assert height == width, key
    return height


def to_image(array: torch.Tensor) -> torch.Tensor:
    """A reference array (H, W, C) -> (1, C, H, W)."""
    return array.permute(2, 0, 1)[None]


def assert_agrees(mask, ref_mask, color=None, ref_color=None, depth=None, ref_depth=None) -> None:
    """Masks agree on >= 99 % of pixels; on pixels both call valid, colour is within 2/255 and depth (z-buffer
    units) within 1e-3 on >= 99 % of them. All arguments are (B, C, H, W) tensors."""
    mask, ref_mask = mask.cpu().bool(), ref_mask.bool()
    agree = (mask == ref_mask).float().mean().item()
    assert agree >= AGREEMENT, f"masks agree on {agree:.4f} of the pixels"
    both = (mask & ref_mask)[:, 0]
    assert both.any(), "no pixel is valid in both"
    for name, ours, ref, tolerance in (
        ("colour", color, ref_color, COLOR_TOLERANCE),
        ("depth", depth, ref_depth, DEPTH_TOLERANCE),
    ):
        if ours is None:
            continue
        error = (ours.cpu().float() - ref.float()).abs().amax(1)[both]
        good = (error <= tolerance).float().mean().item()
        assert good >= AGREEMENT, (
            f"{name} within {tolerance:.2g} on {good:.4f} of the valid pixels (max error {error.max():.3g})"
        )


def smooth_scene(size, seed, edge=True):
    """A random RGBD image in [0, 1] (z-buffer 0.5 / 100): a bumpy backdrop, optionally a box in front."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    a = torch.rand(6, generator=g)
    depth = 1.2 + 0.05 * torch.sin(2 * x * a[0] + 3 * y * a[1] + a[2] * 6)  # gentle: no face is an edge
    if edge:
        box = ((x - a[3] + 0.5).abs() < 0.3) & ((y - a[4] + 0.5).abs() < 0.25)
        depth = torch.where(box, 0.8 + 0.1 * a[5], depth)
    phase = torch.rand(3, 1, 1, generator=g) * 6
    color = 0.5 + 0.35 * torch.sin(1.5 * x + phase) * torch.cos(1.2 * y - phase)
    return torch.cat([color, linear_to_zbuffer(depth, 0.5, 100)[None]])[None]
