"""Guidance as small wrappers: classifier-free guidance, G_c input assembly, replacement / hull guidance."""

from __future__ import annotations

import torch
from torch import nn

from iterview.diffusion.samplers import ModelFn, X0Fn


def classifier_free(model: nn.Module, classes: torch.Tensor | None, strength: float) -> ModelFn:
    """ε = (1+w)·ε(x,t,c) − w·ε(x,t,∅) in ONE batched forward pass; w <= 0 or classes None: conditional only."""
    raise NotImplementedError


def inpaint_input(
    x_t: torch.Tensor,
    y: torch.Tensor,
    mask: torch.Tensor,
    mask_rgb: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Official 10-channel G_c input: [x_t(4), mask_rgb, y_rgb·m_rgb + n·(1−m_rgb), y_d·m + n·(1−m), mask]."""
    raise NotImplementedError


def inpaint_model(
    model: nn.Module,
    y: torch.Tensor,
    mask: torch.Tensor,
    mask_rgb: torch.Tensor,
    classes: torch.Tensor | None = None,
    strength: float = 0.0,
    generator: torch.Generator | None = None,
) -> ModelFn:
    """G_c as a ModelFn: fresh hole noise at each call, CFG over the class label only."""
    raise NotImplementedError


def replacement_guidance(
    known: torch.Tensor,
    mask: torch.Tensor,
    mask_rgb: torch.Tensor,
    hull: torch.Tensor | None = None,
    w_rgb: float = 0.1,
    w_depth: float = 0.2,
    w_hull: float = 0.5,
) -> X0Fn:
    """Official replace_rgb / replace_depth / constrain_depth on the predicted x0 (all in [-1, 1])."""
    raise NotImplementedError
