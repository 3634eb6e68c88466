"""Exponential moving average of model weights (official ema_rate 0.9999), kept in fp32 beside the model."""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_copy(model: nn.Module) -> nn.Module:
    """A frozen fp32 copy of model to hold the average; take it after any weight loading (--init-from), so the
    average starts from the loaded weights (the official trainer kept the pre-fine-tune ones)."""
    ema = copy.deepcopy(model).float().eval()
    return ema.requires_grad_(False)


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, rate: float) -> None:
    """ema ← rate·ema + (1 − rate)·model for parameters; buffers are copied."""
    ema_params = list(ema.parameters())
    params = [p.detach().to(e.dtype) for e, p in zip(ema_params, model.parameters(), strict=True)]
    torch._foreach_lerp_(ema_params, params, 1.0 - rate)
    for e, b in zip(ema.buffers(), model.buffers(), strict=True):
        e.copy_(b)
