"""Small image operations matching the official PIL / OpenCV calls."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def lanczos_downsample(image: torch.Tensor, size: int) -> torch.Tensor:
    """PIL LANCZOS resize of uint8-quantised colour. image: (B, C, H, W) in [0, 1] -> (B, C, size, size)."""
    raise NotImplementedError


def gaussian_blur3(image: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """cv2.GaussianBlur 3x3 with reflect-101 border. image: (B, C, H, W); sigma: (B,)."""
    raise NotImplementedError


def erode(mask: torch.Tensor, kernel: int) -> torch.Tensor:
    """cv2.erode with a kernel×kernel square; the border does not erode. mask: (B, 1, H, W) bool -> bool.

    Even kernels use cv2's anchor (kernel // 2), so the window reaches one step further up and left.
    """
    if kernel < 1:
        raise ValueError(f"expected an erosion kernel size >= 1, got {kernel}")
    if kernel == 1:
        return mask.clone()
    before, after = kernel // 2, kernel - 1 - kernel // 2
    # Erosion is a max-pool of the complement; padding the complement with 0 makes the outside count as "set".
    holes = F.pad((~mask).to(torch.float32), (before, after, before, after), value=0.0)
    return F.max_pool2d(holes, kernel, stride=1) == 0


def depth_edge(depth: torch.Tensor, atol: float, rtol: float) -> torch.Tensor:
    """Official depth_edge: True where a pixel has fewer than 3 discontinuous neighbour pairs.
    depth: (B, 1, H, W) -> bool (B, 1, H, W)."""
    raise NotImplementedError
