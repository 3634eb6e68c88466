"""Gaussian diffusion schedule (official GaussianDiffusion quantities, float64)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class DiffusionSchedule:
    """betas and alphas_cumprod: (T,) float64; derived quantities as properties/methods."""

    betas: torch.Tensor

    @classmethod
    def linear(cls, timesteps: int = 1000) -> DiffusionSchedule:
        raise NotImplementedError

    @classmethod
    def cosine(cls, timesteps: int = 1000) -> DiffusionSchedule:
        raise NotImplementedError

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Diffuse x0 to x_t, t: (B,) in 0..T-1."""
        raise NotImplementedError

    def training_loss(self, model_fn, x0: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Official ε-MSE loss, t ~ U{0..T-1}. model_fn(x_t, t) -> ε."""
        raise NotImplementedError
