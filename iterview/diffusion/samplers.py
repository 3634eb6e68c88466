"""Samplers as plain functions over a model_fn(x, t) -> ε, where t is (B,) network timesteps (0..T-1).

Every sampler has the same signature, `(model_fn, x, schedule, steps, generator=None, x0_fn=None,
callback=None, progress=False)`: x is the noise x_T (B, C, H, W), the result x_0. An optional
x0_fn(x0, t, t_prev) -> x0 lets guidance (replacement, depth hull, clipping) edit the predicted x0. Its t and
t_prev are network timesteps too; t_prev = -1 marks the last step, whose result is the clean sample. callback
gets {"i", "t", "t_prev", "x", "pred_x0"} after every step.

Numerics follow the official samplers: the float64 schedule coefficients are gathered and cast to float32 per
step, and every update runs in float32 in the official order, which reproduces official trajectories exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from iterview.diffusion.schedule import DiffusionSchedule, Generators, ModelFn, randn_like

__all__ = [
    "ModelFn",
    "StepOutput",
    "X0Fn",
    "ddim_sample",
    "ddim_step",
    "ddim_timesteps",
    "ddpm_sample",
    "ddpm_step",
    "dpmpp_2m_sample",
    "dpmpp_3m_sample",
    "dpmpp_timesteps",
    "unipc_sample",
]

X0Fn = Callable[[torch.Tensor, int, int], torch.Tensor]
Callback = Callable[[dict], None]


@dataclass
class StepOutput:
    """One sampler step: x is the sample at t_prev, pred_x0 the (guided) clean-data prediction used."""

    x: torch.Tensor
    pred_x0: torch.Tensor


def _coef(table: torch.Tensor, t: int) -> torch.Tensor:
    # A 0-d float32 CPU tensor: official `extract(...).float()`; CPU scalars broadcast onto any device.
    return table[t].float()


def _alpha_bar(schedule: DiffusionSchedule, t: int) -> torch.Tensor:
    return _coef(schedule.alphas_cumprod, t) if t >= 0 else torch.tensor(1.0)


def _timestep_batch(x: torch.Tensor, t: int) -> torch.Tensor:
    return torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)


def _predict_x0(schedule: DiffusionSchedule, x: torch.Tensor, eps: torch.Tensor, t: int) -> torch.Tensor:
    return _coef(schedule.sqrt_recip_alphas_cumprod, t) * x - _coef(schedule.sqrt_recipm1_alphas_cumprod, t) * eps


def ddim_timesteps(steps: int, num_timesteps: int = 1000) -> list[tuple[int, int]]:
    """Official DDIM (t, t_prev) pairs as network timesteps, noisiest first: jump = T // steps, pairs
    (jump·(i+1) − 1, jump·i − 1) for i = steps−1 … 0. E.g. 50 steps: (999, 979), …, (19, −1)."""
    if not 1 <= steps <= num_timesteps:
        raise ValueError(f"DDIM steps must be in 1..{num_timesteps}, found {steps}")
    jump = num_timesteps // steps
    return [(jump * (i + 1) - 1, jump * i - 1) for i in reversed(range(steps))]


def ddpm_step(
    schedule: DiffusionSchedule,
    x: torch.Tensor,
    eps: torch.Tensor,
    t: int,
    noise: torch.Tensor | None = None,
    x0_fn: X0Fn | None = None,
) -> StepOutput:
    """Official ancestral step x_t → x_{t−1} with the fixed posterior variance. noise: like x (unused at t = 0)."""
    x0 = _predict_x0(schedule, x, eps, t)
    if x0_fn is not None:
        x0 = x0_fn(x0, t, t - 1)
    mean = _coef(schedule.posterior_mean_coef1, t) * x0 + _coef(schedule.posterior_mean_coef2, t) * x
    if t > 0:
        mean = mean + torch.exp(0.5 * _coef(schedule.posterior_log_variance_clipped, t)) * noise
    return StepOutput(mean, x0)


def ddim_step(
    schedule: DiffusionSchedule,
    x: torch.Tensor,
    eps: torch.Tensor,
    t: int,
    t_prev: int,
    eta: float = 0.0,
    noise: torch.Tensor | None = None,
    x0_fn: X0Fn | None = None,
) -> StepOutput:
    """Official DDIM step x_t → x_{t_prev} (t_prev = −1: clean). noise: like x, needed only if eta > 0."""
    c1, c2 = _coef(schedule.sqrt_recip_alphas_cumprod, t), _coef(schedule.sqrt_recipm1_alphas_cumprod, t)
    x0 = c1 * x - c2 * eps
    if x0_fn is not None:
        x0 = x0_fn(x0, t, t_prev)
    # ε is re-derived from x0 even without guidance: the official order, kept for bit-exact trajectories.
    eps = (c1 * x - x0) / c2
    alpha_bar, alpha_bar_prev = _alpha_bar(schedule, t), _alpha_bar(schedule, t_prev)
    sigma = eta * torch.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar)) * torch.sqrt(1 - alpha_bar / alpha_bar_prev)
    x_prev = torch.sqrt(alpha_bar_prev) * x0 + torch.sqrt(1 - alpha_bar_prev - sigma**2) * eps
    if eta > 0 and t_prev >= 0:
        x_prev = x_prev + sigma * noise
    return StepOutput(x_prev, x0)


def ddpm_sample(
    model_fn: ModelFn,
    x: torch.Tensor,
    schedule: DiffusionSchedule,
    steps: int | None = None,
    generator: Generators = None,
    x0_fn: X0Fn | None = None,
    callback: Callback | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Official DDPM over all T steps (T model calls; steps: None or T, as the official sampler walks every
    step). x: (B, C, H, W) noise → x_0 (B, C, H, W)."""
    if steps is not None and steps != schedule.num_timesteps:
        raise ValueError(f"DDPM walks all {schedule.num_timesteps} steps, got steps={steps} (use DDIM for fewer)")
    for t in tqdm(range(schedule.num_timesteps - 1, -1, -1), desc="DDPM", disable=not progress, leave=False):
        eps = model_fn(x, _timestep_batch(x, t))
        out = ddpm_step(schedule, x, eps, t, randn_like(x, generator) if t > 0 else None, x0_fn)
        x = out.x
        if callback is not None:
            callback({"i": schedule.num_timesteps - 1 - t, "t": t, "t_prev": t - 1, "x": x, "pred_x0": out.pred_x0})
    return x


def ddim_sample(
    model_fn: ModelFn,
    x: torch.Tensor,
    schedule: DiffusionSchedule,
    steps: int = 50,
    generator: Generators = None,
    x0_fn: X0Fn | None = None,
    callback: Callback | None = None,
    progress: bool = False,
    eta: float = 0.0,
) -> torch.Tensor:
    """Official DDIM with `steps` model calls on the official timestep pairs (η = 0 deterministic; the generator
    is drawn from only when eta > 0). x: (B, C, H, W) noise → x_0."""
    pairs = ddim_timesteps(steps, schedule.num_timesteps)
    for i, (t, t_prev) in enumerate(tqdm(pairs, desc="DDIM", disable=not progress, leave=False)):
        eps = model_fn(x, _timestep_batch(x, t))
        noise = randn_like(x, generator) if eta > 0 and t_prev >= 0 else None
        out = ddim_step(schedule, x, eps, t, t_prev, eta, noise, x0_fn)
        x = out.x
        if callback is not None:
            callback({"i": i, "t": t, "t_prev": t_prev, "x": x, "pred_x0": out.pred_x0})
    return x


def _log_snr(schedule: DiffusionSchedule) -> torch.Tensor:
    """λ_t = log(α_t / σ_t), (T,) float64, decreasing in t."""
    return 0.5 * (torch.log(schedule.alphas_cumprod) - torch.log1p(-schedule.alphas_cumprod))


def dpmpp_timesteps(schedule: DiffusionSchedule, steps: int) -> list[int]:
    """Network timesteps the fast solver evaluates, noisiest (T−1) first, last 0: `steps` points uniform in
    log-SNR λ = log(α/σ), each rounded to the nearest integer timestep (duplicates near t = 0 dropped, so very
    large `steps` give slightly fewer). Uniform-λ steps crowd the low-noise end, where the ODE is stiff."""
    if not 2 <= steps <= schedule.num_timesteps:
        raise ValueError(f"solver steps must be in 2..{schedule.num_timesteps}, found {steps}")
    lam = _log_snr(schedule)
    targets = torch.linspace(lam[-1].item(), lam[0].item(), steps, dtype=torch.float64)
    nearest = (lam[None, :] - targets[:, None]).abs().argmin(dim=1).tolist()
    return list(dict.fromkeys(nearest))


def _solver_tables(schedule: DiffusionSchedule) -> tuple[list[float], list[float], list[float]]:
    """α_t = √ᾱ_t, σ_t = √(1 − ᾱ_t) and λ_t = log(α_t / σ_t) per network timestep, as Python floats (float64)."""
    return (
        schedule.sqrt_alphas_cumprod.tolist(),
        schedule.sqrt_one_minus_alphas_cumprod.tolist(),
        _log_snr(schedule).tolist(),
    )


def _data_prediction(
    model_fn: ModelFn, x: torch.Tensor, t: int, t_next: int, alpha: float, sigma: float, x0_fn: X0Fn | None
) -> torch.Tensor:
    """The (guided) x0 prediction at x_t: one model call, then x0_fn, so every later use sees the guided value."""
    eps = model_fn(x, _timestep_batch(x, t))
    x0 = (x - sigma * eps) / alpha
    return x0 if x0_fn is None else x0_fn(x0, t, t_next)


def _dpmpp_update(
    x: torch.Tensor, x0s: list[torch.Tensor], lams: list[float], lam_next: float, sigma_ratio: float, alpha_next: float
) -> torch.Tensor:
    """One DPM-Solver++ multistep update from the newest point of x0s (data predictions at log-SNRs lams, newest
    last) to λ_next, of order len(x0s) (1 to 3); orders 2 and 3 extrapolate x0 in λ by finite differences."""
    h = lam_next - lams[-1]
    phi_1 = math.expm1(-h)
    if len(x0s) == 1:
        return sigma_ratio * x - (alpha_next * phi_1) * x0s[-1]
    if len(x0s) == 2:
        d = x0s[-1] + (x0s[-1] - x0s[-2]) * (h / (2 * (lams[-1] - lams[-2])))
        return sigma_ratio * x - (alpha_next * phi_1) * d
    r0 = (lams[-1] - lams[-2]) / h
    r1 = (lams[-2] - lams[-3]) / h
    d1_0, d1_1 = (x0s[-1] - x0s[-2]) / r0, (x0s[-2] - x0s[-3]) / r1
    # d1 ≈ h·x0' and d2 ≈ h²·x0'' (in λ). The x0'' term integrates to −α·φ3·h²·x0''; reference implementations
    # use half this d2, which the Gaussian test (exact ODE solution) shows costs the third order.
    d1 = d1_0 + (d1_0 - d1_1) * (r0 / (r0 + r1))
    d2 = (d1_0 - d1_1) * (2 / (r0 + r1))
    phi_2 = phi_1 / h + 1
    phi_3 = phi_2 / h - 0.5
    return sigma_ratio * x - (alpha_next * phi_1) * x0s[-1] + (alpha_next * phi_2) * d1 - (alpha_next * phi_3) * d2


def _dpmpp_sample(
    order: int,
    model_fn: ModelFn,
    x: torch.Tensor,
    schedule: DiffusionSchedule,
    steps: int,
    x0_fn: X0Fn | None,
    callback: Callback | None,
    progress: bool,
) -> torch.Tensor:
    """DPM-Solver++ of multistep `order` on `dpmpp_timesteps`: the first steps use the orders their history
    allows; the last call's x0 prediction is the sample (σ = 0 at the clean end, λ = ∞, where the exact
    exponential-integrator step is the data prediction itself)."""
    timesteps = dpmpp_timesteps(schedule, steps)
    alpha, sigma, lam = _solver_tables(schedule)
    x0s: list[torch.Tensor] = []
    lams: list[float] = []
    for i, t in enumerate(tqdm(timesteps, desc=f"DPM-Solver++({order}M)", disable=not progress, leave=False)):
        t_next = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        x0 = _data_prediction(model_fn, x, t, t_next, alpha[t], sigma[t], x0_fn)
        x0s, lams = [*x0s, x0][-order:], [*lams, lam[t]][-order:]
        # σ = 0 at the clean end (λ = ∞): the exact exponential-integrator step is the data prediction itself.
        x = x0 if t_next < 0 else _dpmpp_update(x, x0s, lams, lam[t_next], sigma[t_next] / sigma[t], alpha[t_next])
        if callback is not None:
            callback({"i": i, "t": t, "t_prev": t_next, "x": x, "pred_x0": x0})
    return x


def dpmpp_2m_sample(
    model_fn: ModelFn,
    x: torch.Tensor,
    schedule: DiffusionSchedule,
    steps: int = 20,
    generator: Generators = None,
    x0_fn: X0Fn | None = None,
    callback: Callback | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022): the multistep second-order exponential integrator of the
    probability-flow ODE in data-prediction form, on the discrete schedule, `steps` model calls at
    `dpmpp_timesteps`; the last call's x0 prediction is the sample. Deterministic (generator unused, kept for
    the common signature). x0_fn edits each data prediction, as in DDIM. x: (B, C, H, W) noise → x_0."""
    return _dpmpp_sample(2, model_fn, x, schedule, steps, x0_fn, callback, progress)


def dpmpp_3m_sample(
    model_fn: ModelFn,
    x: torch.Tensor,
    schedule: DiffusionSchedule,
    steps: int = 20,
    generator: Generators = None,
    x0_fn: X0Fn | None = None,
    callback: Callback | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """DPM-Solver++(3M): as `dpmpp_2m_sample` with a third-order multistep update (the last three data
    predictions), orders 1 and 2 for the first two steps. Deterministic. x: (B, C, H, W) noise → x_0."""
    return _dpmpp_sample(3, model_fn, x, schedule, steps, x0_fn, callback, progress)


def _unipc_rhos(rks: list[float], h: float) -> list[float]:
    """UniPC-bh2 weights ρ solving Σ_k ρ_k·r_k^(i−1) = i!·φ_(i+1)(h)/B(h), i = 1..len(rks), in data-prediction
    form (exponential φ functions of −h, B(h) = e^(−h) − 1); rks: log-SNR offsets of the points over h."""
    hh = -h
    h_phi_1 = math.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    factorial, b = 1, []
    for i in range(1, len(rks) + 1):
        b.append(h_phi_k * factorial / h_phi_1)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    powers = torch.tensor([[rk**i for rk in rks] for i in range(len(rks))], dtype=torch.float64)
    return torch.linalg.solve(powers, torch.tensor(b, dtype=torch.float64)).tolist()


def _unipc_update(
    x: torch.Tensor,
    x0s: list[torch.Tensor],
    lams: list[float],
    lam_next: float,
    sigma_ratio: float,
    alpha_next: float,
    x0_next: torch.Tensor | None = None,
) -> torch.Tensor:
    """One UniPC-bh2 step from the newest point of x0s (data predictions at log-SNRs lams, newest last) to λ_next:
    the predictor UniP of order len(x0s), or with x0_next (the data prediction at the predicted point) the
    corrector UniC, one order higher at no extra model call."""
    h = lam_next - lams[-1]
    b_h = math.expm1(-h)
    base = sigma_ratio * x - (alpha_next * b_h) * x0s[-1]
    rks = [(lam - lams[-1]) / h for lam in reversed(lams[:-1])]
    differences = [(x0 - x0s[-1]) / rk for x0, rk in zip(reversed(x0s[:-1]), rks, strict=True)]
    if x0_next is not None:
        rks, differences = [*rks, 1.0], [*differences, x0_next - x0s[-1]]
    if not differences:
        return base
    # Second order (one difference) uses ρ = 1/2, as UniPC does, rather than the solve.
    rhos = [0.5] if len(differences) == 1 else _unipc_rhos(rks, h)
    return base - (alpha_next * b_h) * sum(rho * d for rho, d in zip(rhos, differences, strict=True))


def unipc_sample(
    model_fn: ModelFn,
    x: torch.Tensor,
    schedule: DiffusionSchedule,
    steps: int = 10,
    generator: Generators = None,
    x0_fn: X0Fn | None = None,
    callback: Callback | None = None,
    progress: bool = False,
    order: int = 2,
) -> torch.Tensor:
    """UniPC (Zhao et al. 2023), variant bh2, data prediction: a predictor of multistep `order` and, at each new
    point, the corrector UniC with the model call the next step needs anyway (order + 1 for the same calls);
    `steps` model calls at `dpmpp_timesteps`, the last call's x0 prediction is the sample. x0_fn edits each data
    prediction once, before the corrector and every later step use it. Deterministic. x: (B, C, H, W) → x_0."""
    timesteps = dpmpp_timesteps(schedule, steps)
    alpha, sigma, lam = _solver_tables(schedule)
    x0s: list[torch.Tensor] = []
    lams: list[float] = []
    x_start = x
    for i, t in enumerate(tqdm(timesteps, desc="UniPC", disable=not progress, leave=False)):
        t_next = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        x0 = _data_prediction(model_fn, x, t, t_next, alpha[t], sigma[t], x0_fn)
        if x0s and t_next >= 0:  # the last point's corrected x would go unused: its x0 is the sample
            x = _unipc_update(x_start, x0s, lams, lam[t], sigma[t] / sigma[timesteps[i - 1]], alpha[t], x0)
        x0s, lams = [*x0s, x0][-order:], [*lams, lam[t]][-order:]
        if t_next < 0:
            x = x0
        else:
            x_start = x
            x = _unipc_update(x, x0s, lams, lam[t_next], sigma[t_next] / sigma[t], alpha[t_next])
        if callback is not None:
            callback({"i": i, "t": t, "t_prev": t_next, "x": x, "pred_x0": x0})
    return x
