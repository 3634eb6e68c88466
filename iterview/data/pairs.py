"""The official G_c training pair (WarpDataset, §3.7): a random side camera, pre-warp noise, the
forward-backward warp, blur and RGB erosion, all drawn from one `torch.Generator`."""

from __future__ import annotations

import torch

from iterview.geometry.cameras import look_at, orbit_eye
from iterview.geometry.imageops import erode, gaussian_blur3
from iterview.geometry.warp import WARP_ATOL, check_rgbd, forward_backward_warp

TRAIN_AUGMENTS = ("prewarp_noise", "blur", "erode_rgb")
NOISE_STD = 0.005
BLUR_PROBABILITY = 0.8
ERODE_KERNELS = (1, 3, 5, 7, 9)
TARGET_STD, RADIUS_STD = 0.05, 0.1


def sample_training_cameras(
    batch: int, generator: torch.Generator | None = None, std: float = 0.15
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random side cameras as in training: returns modelview (B, 4, 4) and pose (B, 2) = (theta, phi).

    theta, phi ~ N(0, std²); radius 1 + N(0, 0.1²); look-at target N(0, 0.05²) per axis; up +y. Drawn on the
    generator's device (CPU by default), so a seed gives the same cameras on any device.
    """
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    if not std >= 0:
        raise ValueError(f"std must be >= 0, got {std}")
    device = generator.device if generator is not None else torch.device("cpu")
    noise = torch.randn(batch, 6, generator=generator, device=device)
    theta, phi = noise[:, 0] * std, noise[:, 1] * std
    eye = orbit_eye(theta, phi, 1 + RADIUS_STD * noise[:, 2])
    return look_at(eye, TARGET_STD * noise[:, 3:]), torch.stack([theta, phi], dim=1)


def make_training_pair(
    rgbd: torch.Tensor,
    generator: torch.Generator | None = None,
    augments: tuple[str, ...] = TRAIN_AUGMENTS,
    std: float = 0.15,
    pixel_scale: float = 1.0,
) -> dict[str, torch.Tensor]:
    """One G_c training pair per image. rgbd: (B, 4, H, W) in [-1, 1] (dataset x_0).
    Returns y (B, 4, H, W) in [-1, 1] (masked = -1), mask (B, 1, H, W), mask_rgb (B, 1, H, W), pose (B, 2).

    The official WarpDataset steps, in order: a random side camera; pre-warp noise N(0, (0.005·U)²) on all four
    channels; the forward-backward warp; with probability 0.8 the warped RGB replaced by the clean RGB blurred
    (3×3 Gaussian, σ = U + 1e-3); the RGB mask eroded by a k×k square, k uniform in {1, 3, 5, 7, 9}. Without
    "erode_rgb", mask_rgb is the mask. All randomness comes from `generator` (drawn on its device).

    pixel_scale: how many official (128-px) pixels one pixel spans, e.g. 4 at 32 px. The discontinuity
    tolerances grow and the erosion radii shrink by it, so a smaller image is cut and eroded like the official
    one; 1 is the official recipe.
    """
    unknown = set(augments) - set(TRAIN_AUGMENTS)
    if unknown:
        raise ValueError(f"unknown augments {sorted(unknown)}; expected a subset of {TRAIN_AUGMENTS}")
    batch, _ = check_rgbd(rgbd, low=-1.0)
    device = generator.device if generator is not None else torch.device("cpu")

    def uniform() -> torch.Tensor:
        return torch.rand(batch, generator=generator, device=device).to(rgbd.device)

    clean = rgbd * 0.5 + 0.5
    modelview, pose = sample_training_cameras(batch, generator, std)
    warped = clean
    if "prewarp_noise" in augments:
        sigma = NOISE_STD * uniform()
        noise = torch.randn(clean.shape, generator=generator, device=device).to(rgbd)
        warped = clean + sigma[:, None, None, None] * noise
    tolerance = WARP_ATOL * pixel_scale
    warp = forward_backward_warp(warped, modelview.to(rgbd), atol=tolerance, rtol=tolerance)
    color, mask = warp.color, warp.mask
    if "blur" in augments:
        blurred = gaussian_blur3(clean[:, :3], uniform() + 1e-3)
        color = torch.where((uniform() < BLUR_PROBABILITY)[:, None, None, None], blurred, color)
    mask_rgb = mask
    if "erode_rgb" in augments:
        radius = torch.randint(len(ERODE_KERNELS), (batch,), generator=generator, device=device)
        kernel = 2 * torch.round(radius / pixel_scale).long() + 1
        mask_rgb = _erode_each(mask.bool(), kernel.tolist()).to(mask.dtype)
        color = color * mask_rgb
    y = torch.cat([color, warp.depth], dim=1) * mask * 2 - 1
    return {"y": y, "mask": mask, "mask_rgb": mask_rgb, "pose": pose.to(rgbd.device)}


def _erode_each(mask: torch.Tensor, kernels: list[int]) -> torch.Tensor:
    """Erode each image of mask (B, 1, H, W) bool by its own square kernel size."""
    out = mask.clone()
    for kernel in set(kernels):
        chosen = torch.tensor([k == kernel for k in kernels], device=mask.device)
        out[chosen] = erode(mask[chosen], kernel)
    return out
