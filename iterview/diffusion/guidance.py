"""Guidance as small wrappers: classifier-free guidance, G_c / SR input assembly, replacement / hull guidance."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from iterview.diffusion.samplers import ModelFn, X0Fn
from iterview.diffusion.schedule import Generators, randn_like

# Any callable (x, t, classes) -> ε: an ADMUNet, or a toy model in tests.
Network = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def classifier_free(
    model: Network, classes: torch.Tensor | None, strength: float, window: tuple[int, int] | None = None
) -> ModelFn:
    """ε = (1+w)·ε(x,t,c) − w·ε(x,t,∅) in ONE batched forward pass; w <= 0 or classes None: conditional only.

    classes: (B,) long, −1 = null. The official code runs the two terms as two passes; batching them is the
    same maths at half the kernel launches. window: (t_low, t_high), guide only at network timesteps in it
    (inclusive; all rows share one t, as in the samplers) and run the conditional model alone elsewhere."""
    if classes is None or strength <= 0:
        return lambda x, t: model(x, t, classes)
    both = torch.cat([classes, torch.full_like(classes, -1)])

    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if window is not None and not window[0] <= int(t[0]) <= window[1]:
            return model(x, t, classes)
        eps_cond, eps_null = model(torch.cat([x, x]), torch.cat([t, t]), both).chunk(2)
        return (1 + strength) * eps_cond - strength * eps_null

    return guided


def inpaint_input(
    x_t: torch.Tensor,
    y: torch.Tensor,
    mask: torch.Tensor,
    mask_rgb: torch.Tensor,
    generator: Generators = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Official 10-channel G_c input: [x_t(4), mask_rgb, y_rgb·m_rgb + n·(1−m_rgb), y_d·m + n·(1−m), mask].

    x_t, y: (B, 4, H, W) in [−1, 1]; mask, mask_rgb: (B, 1, H, W) in {0, 1}. The hole fill n is fresh N(0, 1)
    noise from `generator` (RGB drawn before depth, as officially), or `noise` (B, 4, H, W) if given.
    Returns (B, 10, H, W)."""
    if noise is None:
        noise = torch.cat([randn_like(y[:, :3], generator), randn_like(y[:, 3:], generator)], dim=1)
    rgb = y[:, :3] * mask_rgb + noise[:, :3] * (1 - mask_rgb)
    depth = y[:, 3:] * mask + noise[:, 3:] * (1 - mask)
    return torch.cat([x_t, mask_rgb, rgb, depth, mask], dim=1)


def inpaint_model(
    model: Network,
    y: torch.Tensor,
    mask: torch.Tensor,
    mask_rgb: torch.Tensor,
    classes: torch.Tensor | None = None,
    strength: float = 0.0,
    generator: Generators = None,
    window: tuple[int, int] | None = None,
) -> ModelFn:
    """G_c as a ModelFn: fresh hole noise at each call, CFG over the class label only (both terms see the same
    image condition, as officially) within the timestep window (see `classifier_free`). y, mask, mask_rgb as
    in `inpaint_input`."""
    guided = classifier_free(model, classes, strength, window)
    return lambda x, t: guided(inpaint_input(x, y, mask, mask_rgb, generator), t)


def superres_input(x_t: torch.Tensor, y_low: torch.Tensor) -> torch.Tensor:
    """Official 8-channel SR input [x_t, bilinear-upsampled y_low]. x_t: (B, 4, H, W); y_low: (B, 4, H/s, W/s)
    with integer s (2 officially), in [−1, 1]. Returns (B, 8, H, W)."""
    scale = x_t.shape[-1] // y_low.shape[-1]
    upsampled = F.interpolate(y_low, scale_factor=scale, mode="bilinear", align_corners=False)
    return torch.cat([x_t, upsampled], dim=1)


def superres_model(
    model: Network, y_low: torch.Tensor, classes: torch.Tensor | None = None, strength: float = 0.0
) -> ModelFn:
    """The SR model as a ModelFn conditioned on the low-resolution RGBD y_low, with CFG over the label."""
    guided = classifier_free(model, classes, strength)
    return lambda x, t: guided(superres_input(x, y_low), t)


def replacement_guidance(
    known: torch.Tensor,
    mask: torch.Tensor,
    mask_rgb: torch.Tensor,
    hull: torch.Tensor | None = None,
    w_rgb: float = 0.1,
    w_depth: float = 0.2,
    w_hull: float = 0.5,
) -> X0Fn:
    """Official replace_rgb / replace_depth / constrain_depth on the predicted x0 (all in [-1, 1]).

    known: (B, 4, H, W) aggregated RGBD condition; mask, mask_rgb: (B, 1, H, W) in {0, 1}; hull: (B, 1, H, W)
    free-space hull depth or None. Known RGB is pulled by w_rgb (skipped at the last step, t_prev < 0, as
    officially), known depth by w_depth (every step), and unknown depth is pushed behind the hull by w_hull."""

    def guide(x0: torch.Tensor, t: int, t_prev: int) -> torch.Tensor:
        rgb, depth = x0[:, :3], x0[:, 3:]
        if t_prev >= 0:
            rgb = (w_rgb * known[:, :3] + (1 - w_rgb) * rgb) * mask_rgb + rgb * (1 - mask_rgb)
        depth = (w_depth * known[:, 3:] + (1 - w_depth) * depth) * mask + depth * (1 - mask)
        if hull is not None:
            depth = depth * mask + (w_hull * torch.maximum(depth, hull) + (1 - w_hull) * depth) * (1 - mask)
        return torch.cat([rgb, depth], dim=1)

    return guide


def clip_denoised(x0_fn: X0Fn | None = None) -> X0Fn:
    """Clip the predicted x0 to [-1, 1] before `x0_fn` (guided-diffusion's clip_denoised). The official samplers
    do not clip and trained models need not; a model trained for minutes predicts ε at high noise so roughly
    (amplified ~150× in x0 near t = 999) that unclipped trajectories leave the data range."""

    def clipped(x0: torch.Tensor, t: int, t_prev: int) -> torch.Tensor:
        x0 = x0.clamp(-1, 1)
        return x0 if x0_fn is None else x0_fn(x0, t, t_prev)

    return clipped
