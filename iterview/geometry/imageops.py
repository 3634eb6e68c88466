"""Small image operations matching the official PIL / OpenCV calls."""

from __future__ import annotations

import torch


def lanczos_downsample(image: torch.Tensor, size: int) -> torch.Tensor:
    """PIL LANCZOS resize of uint8-quantised colour. image: (B, C, H, W) in [0, 1] -> (B, C, size, size)."""
    raise NotImplementedError


def gaussian_blur3(image: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """cv2.GaussianBlur 3x3 with reflect-101 border. image: (B, C, H, W); sigma: (B,)."""
    raise NotImplementedError


def erode(mask: torch.Tensor, kernel: int) -> torch.Tensor:
    """cv2.erode with a kernel×kernel square; the border does not erode. mask: (B, 1, H, W) bool."""
    raise NotImplementedError


def depth_edge(depth: torch.Tensor, atol: float, rtol: float) -> torch.Tensor:
    """Official depth_edge: True where a pixel has fewer than 3 discontinuous neighbour pairs.
    depth: (B, 1, H, W) -> bool (B, 1, H, W)."""
    raise NotImplementedError
