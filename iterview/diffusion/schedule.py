"""Gaussian diffusion schedule (official GaussianDiffusion quantities, float64)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Generators = torch.Generator | Sequence[torch.Generator] | None


def randn(
    shape: Sequence[int],
    generator: Generators = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Standard normal noise of `shape` from one generator, or from one generator per batch row (dim 0), so that
    a row's draws never depend on its batch-mates. Generators must live on `device`."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)
    if len(generator) != shape[0]:
        raise ValueError(f"expected one generator per batch row ({shape[0]}), got {len(generator)}")
    row = (1, *shape[1:])
    return torch.cat([torch.randn(row, generator=g, device=device, dtype=dtype) for g in generator])


def randn_like(x: torch.Tensor, generator: Generators = None) -> torch.Tensor:
    """Standard normal noise shaped like x (see `randn` for per-row generators)."""
    return randn(x.shape, generator, x.device, x.dtype)


def _gather(table: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """table[t] cast to like's dtype (the official `extract(...).float()`), shaped (B, 1, ..., 1)."""
    return table.to(t.device)[t].to(like.dtype).reshape(-1, *[1] * (like.dim() - 1))


@dataclass
class DiffusionSchedule:
    """betas and alphas_cumprod: (T,) float64; derived quantities as attributes.

    All quantities are computed in numpy float64 exactly as the official code does (bit-identical), and the
    samplers cast each gathered coefficient to float32 before use, which reproduces official trajectories exactly.
    """

    betas: torch.Tensor
    alphas_cumprod: torch.Tensor = field(init=False, repr=False)
    alphas_cumprod_prev: torch.Tensor = field(init=False, repr=False)
    sqrt_alphas_cumprod: torch.Tensor = field(init=False, repr=False)
    sqrt_one_minus_alphas_cumprod: torch.Tensor = field(init=False, repr=False)
    sqrt_recip_alphas_cumprod: torch.Tensor = field(init=False, repr=False)
    sqrt_recipm1_alphas_cumprod: torch.Tensor = field(init=False, repr=False)
    posterior_variance: torch.Tensor = field(init=False, repr=False)
    posterior_log_variance_clipped: torch.Tensor = field(init=False, repr=False)
    posterior_mean_coef1: torch.Tensor = field(init=False, repr=False)
    posterior_mean_coef2: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        betas = np.asarray(torch.as_tensor(self.betas, dtype=torch.float64).cpu(), dtype=np.float64)
        if betas.ndim != 1 or len(betas) < 2 or not ((betas > 0) & (betas <= 1)).all():
            raise ValueError(f"betas must be a 1-D sequence (T >= 2) in (0, 1], found shape {betas.shape}")
        alphas = 1.0 - betas
        ac = np.cumprod(alphas)
        if ac[-1] <= 0:
            raise ValueError("betas reach 1, so alphas_cumprod vanishes and x0 cannot be predicted; use more timesteps")
        ac_prev = np.append(1.0, ac[:-1])
        posterior_variance = betas * (1.0 - ac_prev) / (1.0 - ac)
        quantities = {
            "betas": betas,
            "alphas_cumprod": ac,
            "alphas_cumprod_prev": ac_prev,
            "sqrt_alphas_cumprod": np.sqrt(ac),
            "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - ac),
            "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / ac),
            "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / ac - 1),
            "posterior_variance": posterior_variance,
            # The variance is 0 at t = 0; the official code clips its log by reusing the t = 1 value. math.log is
            # correctly rounded where numpy's SIMD log may be 1 ulp off, depending on the CPU.
            "posterior_log_variance_clipped": np.array(
                [math.log(v) for v in [posterior_variance[1], *posterior_variance[1:]]]
            ),
            "posterior_mean_coef1": betas * np.sqrt(ac_prev) / (1.0 - ac),
            "posterior_mean_coef2": (1.0 - ac_prev) * np.sqrt(alphas) / (1.0 - ac),
        }
        for name, value in quantities.items():
            setattr(self, name, torch.from_numpy(value))

    @property
    def num_timesteps(self) -> int:
        """T, the number of diffusion steps."""
        return len(self.betas)

    @classmethod
    def linear(cls, timesteps: int = 1000) -> DiffusionSchedule:
        """Official linear β from 1e-4 to 0.02, rescaled by 1000/T."""
        scale = 1000 / timesteps
        # numpy's linspace, not torch's: the two differ in the last bits and official values are pinned exactly.
        return cls(torch.from_numpy(np.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=np.float64)))

    @classmethod
    def cosine(cls, timesteps: int = 1000) -> DiffusionSchedule:
        """Nichol & Dhariwal cosine ᾱ with offset 0.008, β capped at 0.999 (official option, unused by configs)."""

        def alpha_bar(s: float) -> float:
            return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = [min(1 - alpha_bar((i + 1) / timesteps) / alpha_bar(i / timesteps), 0.999) for i in range(timesteps)]
        return cls(torch.tensor(betas, dtype=torch.float64))

    @classmethod
    def from_name(cls, name: str, timesteps: int = 1000) -> DiffusionSchedule:
        """The official `beta_schedule` option: "linear" or "cosine"."""
        if name not in ("linear", "cosine"):
            raise ValueError(f'beta_schedule must be "linear" or "cosine", found {name!r}')
        return getattr(cls, name)(timesteps)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Diffuse x0 to x_t, t: (B,) in 0..T-1. x0, noise: (B, ...) → (B, ...)."""
        return (
            _gather(self.sqrt_alphas_cumprod, t, x0) * x0 + _gather(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise
        )

    def training_loss(
        self,
        model_fn: ModelFn,
        x0: torch.Tensor,
        generator: torch.Generator | None = None,
        min_snr_gamma: float | None = None,
    ) -> torch.Tensor:
        """Official ε-MSE loss (mean over all elements), t ~ U{0..T-1}. model_fn(x_t, t) -> ε. Returns a scalar.

        min_snr_gamma: weight each sample by min(SNR, γ) / SNR (Min-SNR-γ, Hang et al. 2023), which spends the
        training on the noisy steps that decide the layout; None is the official unweighted loss.
        """
        t = torch.randint(0, self.num_timesteps, (x0.shape[0],), generator=generator, device=x0.device)
        noise = randn_like(x0, generator)
        return self.eps_loss(model_fn(self.q_sample(x0, t, noise), t), noise, t, min_snr_gamma)

    def eps_loss(
        self,
        eps: torch.Tensor,
        noise: torch.Tensor,
        t: torch.Tensor,
        min_snr_gamma: float | None = None,
        depth_weight: float = 1.0,
    ) -> torch.Tensor:
        """ε-MSE of a prediction eps against the noise that made x_t (both (B, C, ...); t: (B,)), in float32, mean
        over all elements; with min_snr_gamma each sample is weighted by min(SNR, γ) / SNR. depth_weight weighs
        the last (depth) channel against the others, the channel weights averaging 1. Returns a scalar."""
        error = (eps.float() - noise.float()).square()
        if depth_weight != 1.0:
            weights = torch.ones(error.shape[1], device=error.device)
            weights[-1] = depth_weight
            error = error * (weights / weights.mean()).view(-1, *[1] * (error.ndim - 2))
        if min_snr_gamma is None:
            return error.mean()
        snr = self.alphas_cumprod / (1 - self.alphas_cumprod)
        weight = (snr.clamp(max=min_snr_gamma) / snr).to(t.device)[t].float()
        return (error.flatten(1).mean(1) * weight).mean()
