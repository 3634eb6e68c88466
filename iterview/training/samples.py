"""Sample grids written during training: RGB and colourised depth from a few DDIM steps."""

from __future__ import annotations

import torch
from torch import nn

from iterview.diffusion.guidance import classifier_free, clip_denoised, inpaint_model
from iterview.diffusion.samplers import ddim_sample
from iterview.diffusion.schedule import DiffusionSchedule
from iterview.io import colorize_depth


@torch.no_grad()
def sample_grid(
    model: nn.Module,
    schedule: DiffusionSchedule,
    batch: dict[str, torch.Tensor],
    steps: int,
    guidance: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """One column per sample, rows RGB and depth of the samples; for G_c (batch holds y, mask, mask_rgb) the
    rows start with the masked condition and end with the target.

    batch: "x_0" (B, 4, S, S) in [-1, 1] (targets, or only the shape for G_u), optional "classes" (B,) and
    the G_c keys. Returns (3, rows·S, B·S) in [0, 1].
    """
    x0 = batch["x_0"]
    classes = batch.get("classes")
    x_T = torch.randn(x0.shape, generator=generator, device=x0.device)
    if "y" in batch:
        model_fn = inpaint_model(model, batch["y"], batch["mask"], batch["mask_rgb"], classes, guidance, generator)
    else:
        model_fn = classifier_free(model, classes, guidance)
    was_training = model.training
    model.eval()
    # Clipping x̂0 (the official sampler does not) keeps a young model's grids readable: its ε error at t ≈ 999,
    # amplified ~150× in x̂0, otherwise saturates the whole trajectory.
    sample = ddim_sample(model_fn, x_T, schedule, steps=steps, generator=generator, x0_fn=clip_denoised())
    model.train(was_training)

    def views(rgbd: torch.Tensor, mask_rgb: torch.Tensor | float = 1.0, mask: torch.Tensor | float = 1.0):
        return [(rgbd[:, :3] + 1) / 2 * mask_rgb, colorize_depth((rgbd[:, 3:] + 1) / 2) * mask]

    rows = views(sample)
    if "y" in batch:
        rows = views(batch["y"], batch["mask_rgb"], batch["mask"]) + rows + views(x0)
    return torch.cat([torch.cat(list(row), dim=2) for row in rows], dim=1)
