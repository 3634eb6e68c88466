"""Samplers as plain functions over a model_fn(x, t) -> ε, where t is (B,) network timesteps (0..T-1).

An optional x0_fn(x0, t, t_prev) -> x0 lets guidance (replacement, depth hull) edit the predicted x0.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from iterview.diffusion.schedule import DiffusionSchedule

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
X0Fn = Callable[[torch.Tensor, int, int], torch.Tensor]


def ddpm_sample(
    model_fn: ModelFn,
    x_T: torch.Tensor,
    schedule: DiffusionSchedule,
    generator: torch.Generator | None = None,
    callback: Callable[[dict], None] | None = None,
    progress: bool = False,
) -> torch.Tensor:
    raise NotImplementedError


def ddim_sample(
    model_fn: ModelFn,
    x_T: torch.Tensor,
    schedule: DiffusionSchedule,
    steps: int = 50,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    x0_fn: X0Fn | None = None,
    callback: Callable[[dict], None] | None = None,
    progress: bool = False,
) -> torch.Tensor:
    raise NotImplementedError


def dpmpp_2m_sample(
    model_fn: ModelFn,
    x_T: torch.Tensor,
    schedule: DiffusionSchedule,
    steps: int = 20,
    generator: torch.Generator | None = None,
    x0_fn: X0Fn | None = None,
    callback: Callable[[dict], None] | None = None,
    progress: bool = False,
) -> torch.Tensor:
    raise NotImplementedError
