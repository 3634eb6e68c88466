"""Samplers: official DDIM / DDPM trajectories and step pairs, replacement guidance, and the fast solver's accuracy."""

from __future__ import annotations

import inspect
import json
import math
import re

import pytest
import torch
from safetensors.torch import load_file

from iterview.diffusion.guidance import classifier_free, clip_denoised, inpaint_model, replacement_guidance
from iterview.diffusion.presets import SAMPLERS, SOLVERS, SamplerChoice, resolve_samplers
from iterview.diffusion.samplers import (
    _dpmpp_update,
    _unipc_update,
    ddim_sample,
    ddim_step,
    ddim_timesteps,
    ddpm_sample,
    ddpm_step,
    dpmpp_2m_sample,
    dpmpp_3m_sample,
    dpmpp_timesteps,
    unipc_sample,
)
from iterview.diffusion.schedule import DiffusionSchedule
from iterview.models.checkpoint import tiny_adm
from iterview.pipeline.multiview import Guidance, MultiViewPipeline
from iterview.pipeline.viewsets import grid_viewset_3x9

SCHEDULE = DiffusionSchedule.linear()


def toy(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The reference toy ε-model of diffusion_schedule/."""
    return 0.1 * x + 0.01 * (t.float() / 1000).reshape(-1, 1, 1, 1)


def assert_close_scaled(ours: torch.Tensor, expected: torch.Tensor, tolerance: float = 1e-6) -> None:
    """Coarse: |ours − expected| ≤ tolerance · max(1, max|expected|).

    The toy trajectories grow to |x| ≈ 400, where one float32 ulp is 3e-5. The official sampler code itself, run
    on this machine, differs from the stored trajectories by the same single-ulp coefficient roundings (then
    amplified by 1/√ᾱ ≈ 157 in the next x0 prediction), so an absolute 1e-6 is only meaningful relative to scale.
    """
    scale = max(1.0, expected.abs().max().item())
    assert (ours - expected).abs().max().item() <= tolerance * scale


@pytest.fixture(scope="module")
def traj(reference):
    return load_file(reference / "diffusion_schedule" / "trajectories.safetensors")


def test_ddim_timestep_pairs_are_official(reference):
    pairs = json.loads((reference / "diffusion_schedule" / "ddim_timestep_pairs.json").read_text())
    for steps, official in pairs.items():
        assert ddim_timesteps(int(steps)) == [(t - 1, t_prev - 1) for t, t_prev in official]
    with pytest.raises(ValueError, match="1001"):
        ddim_timesteps(1001)


def assert_within_ulps(
    ours: torch.Tensor, expected: torch.Tensor, ulps: int = 2, operands: tuple[torch.Tensor, ...] = ()
) -> None:
    """Elementwise |ours − expected| ≤ `ulps` float32 steps of the largest magnitude among `expected` and the
    `operands` a step adds up (a sum that cancels to near zero keeps the rounding of its terms)."""
    scale = torch.stack([expected.abs(), *(o.abs() for o in operands)]).amax(0)
    spacing = torch.nextafter(scale, torch.full_like(scale, math.inf)) - scale
    outside = (ours - expected).abs() > ulps * spacing
    worst = (ours - expected).abs().max().item()
    assert not outside.any(), f"{int(outside.sum())} elements beyond {ulps} ulps (max abs error {worst:g})"


def trajectory_steps(traj: dict[str, torch.Tensor], prefix: str, pairs: dict[str, list]) -> int:
    """The step count of a golden DDIM trajectory, read from its stored key (`ddim<N>_…`) and checked against the
    official timestep pairs and any per-step arrays stored for it."""
    steps = int(re.fullmatch(r"ddim(\d+)", prefix.split("_")[0])[1])
    assert str(steps) in pairs, f"{prefix}: no official timestep pairs for {steps} steps"
    for key, value in traj.items():
        if key.startswith(prefix) and key.endswith(("_pred_x_t", "_pred_x_0", "_noise")):
            assert value.shape[0] == steps, key
    return steps


# Every golden DDIM trajectory: (key prefix, η, guidance built from the stored condition or None).
TRAJECTORIES = [
    ("ddim10", 0.0, None),
    ("ddim50", 0.0, None),
    ("ddim10_guided", 0.0, "hull"),
    ("ddim10_replace_only", 0.0, "replace"),
    ("ddim10_eta1", 1.0, None),
]


def _guidance(traj: dict[str, torch.Tensor], kind: str | None):
    if kind is None:
        return None
    hull = traj["convex"] if kind == "hull" else None
    return replacement_guidance(traj["known"], traj["mask"], traj["mask_rgb"], hull)


@pytest.mark.parametrize(("prefix", "eta", "guide"), TRAJECTORIES, ids=[t[0] for t in TRAJECTORIES])
def test_ddim_per_step_against_official(traj, reference, prefix, eta, guide):
    """Each DDIM step of each golden trajectory that starts from an official state (`x_T`, and `<prefix>_pred_x_t`
    where the reference stores it): x0 bit-exact and x_{t_prev} within two float32 ulps of the step's largest term
    (the official square roots can be one ulp off). A trajectory that stores no intermediate states is checked from
    x_T only: past it our state is ours, and its one-ulp roundings are amplified ~1/√ᾱ by the next x0 (how far
    depends on the CPU), which `test_ddim_free_running_end_to_end_coarse` bounds."""
    pairs = json.loads((reference / "diffusion_schedule" / "ddim_timestep_pairs.json").read_text())
    steps = trajectory_steps(traj, prefix, pairs)
    states, preds, noise = (traj.get(f"{prefix}_{name}") for name in ("pred_x_t", "pred_x_0", "noise"))
    x0_fn, x = _guidance(traj, guide), traj["x_T"]
    for i, (t, t_prev) in enumerate(ddim_timesteps(steps)):
        step_noise = noise[i] if noise is not None else None
        eps = toy(x, torch.full((x.shape[0],), t))
        out = ddim_step(SCHEDULE, x, eps, t, t_prev, eta, step_noise, x0_fn)
        if preds is not None:
            assert torch.equal(out.pred_x0, preds[i]), f"x0 of step {i}"
        if states is None:
            return
        assert_within_ulps(out.x, states[i], operands=(out.pred_x0, eps))
        x = states[i]
    assert_within_ulps(out.x, traj[f"{prefix}_samples"], operands=(out.pred_x0, eps))


def test_ddim_free_running_end_to_end_coarse(traj):
    """Coarse end-to-end check of the whole sampler loop (timesteps, callback, guidance hook) against the stored
    trajectories; the exact numerics are pinned by the per-step test above."""
    states, preds = [], []
    samples = ddim_sample(
        toy, traj["x_T"], SCHEDULE, steps=10, callback=lambda d: (states.append(d["x"]), preds.append(d["pred_x0"]))
    )
    assert_close_scaled(samples, traj["ddim10_samples"])
    for i in range(traj["ddim10_pred_x_t"].shape[0]):
        assert_close_scaled(states[i], traj["ddim10_pred_x_t"][i])
        assert_close_scaled(preds[i], traj["ddim10_pred_x_0"][i])
    assert_close_scaled(ddim_sample(toy, traj["x_T"], SCHEDULE, steps=50), traj["ddim50_samples"])
    preds = []
    guide = replacement_guidance(traj["known"], traj["mask"], traj["mask_rgb"], traj["convex"])
    guided = ddim_sample(toy, traj["x_T"], SCHEDULE, 10, x0_fn=guide, callback=lambda d: preds.append(d["pred_x0"]))
    assert_close_scaled(guided, traj["ddim10_guided_samples"])
    for i, pred in enumerate(preds):
        assert_close_scaled(pred, traj["ddim10_guided_pred_x_0"][i])
    assert (guided - traj["ddim10_samples"]).abs().max() > 1e-3, "guidance changes the result"


def test_ddpm_steps_are_bit_identical(traj):
    for part, steps in (("start", (999, 998, 997)), ("end", (2, 1, 0))):
        x = traj["x_T"]
        for i, t in enumerate(steps):
            out = ddpm_step(SCHEDULE, x, toy(x, torch.full((2,), t)), t, traj[f"ddpm_{part}_noise"][i])
            assert torch.equal(out.pred_x0, traj[f"ddpm_{part}_pred_x_0"][i]), (part, t)
            assert torch.equal(out.x, traj[f"ddpm_{part}_x"][i]), (part, t)
            x = out.x


def test_ddpm_sample_is_reproducible_with_a_generator():
    calls = []

    def model(x, t):
        calls.append(int(t[0]))
        return 0.5 * x

    x_T = torch.randn(1, 4, 4, 4)
    short = DiffusionSchedule.linear(50)
    a = ddpm_sample(model, x_T, short, generator=torch.Generator().manual_seed(1))
    b = ddpm_sample(model, x_T, short, generator=torch.Generator().manual_seed(1))
    c = ddpm_sample(model, x_T, short, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert calls[:50] == list(range(49, -1, -1))


def test_ancestral_ddim_over_every_step_is_the_official_ddpm():
    """DDIM with eta = 1 (the fast G_u sampler, on a respaced schedule) walks DDPM's posterior when given all T
    steps: the same noise draws in the same order, the same result up to float32 round-off; each row keeps its
    own generator's draws whatever its batch."""
    short = DiffusionSchedule.linear(50)
    x_T = torch.randn(3, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    ancestral = SamplerChoice("ddim", 50, eta=1.0)

    def generators(*seeds):
        return [torch.Generator().manual_seed(seed) for seed in seeds]

    official = ddpm_sample(toy, x_T, short, generator=generators(1, 2, 3))
    together = ancestral.sample(toy, x_T, short, generators(1, 2, 3))
    torch.testing.assert_close(together, official, atol=1e-4, rtol=1e-4)
    assert torch.equal(ancestral.sample(toy, x_T[1:2], short, generators(2)), together[1:2])
    deterministic = SamplerChoice("ddim", 50).sample(toy, x_T, short, generators(1, 2, 3))
    assert (deterministic - together).abs().max() > 0.1, "eta = 1 must add noise"
    assert ancestral.label == "ddim50+eta1"
    with pytest.raises(ValueError, match="eta"):
        SamplerChoice("unipc", 10, eta=1.0)


def gaussian_problem():
    """Data x0 ~ N(μ, s²) per element, s log-uniform in [0.01, 1]: the exact ε(x_t, t) and the exact
    probability-flow ODE solution from x_T (the standardised value (x_t − α·μ)/√(α²s² + σ²) is preserved)."""
    g = torch.Generator().manual_seed(0)
    mu = 0.5 * torch.randn(1, 4, 8, 8, generator=g)
    s = torch.exp(torch.empty(1, 4, 8, 8).uniform_(math.log(0.01), 0.0, generator=g))
    abar = SCHEDULE.alphas_cumprod

    def eps(x, t):
        a2 = abar[t].float().reshape(-1, 1, 1, 1)
        return (1 - a2).sqrt() * (x - a2.sqrt() * mu) / (a2 * s**2 + 1 - a2)

    x_T = torch.randn(16, 4, 8, 8, generator=g)
    a2 = abar[-1].item()
    exact = mu + s * (x_T - math.sqrt(a2) * mu) / torch.sqrt(a2 * s**2 + 1 - a2)
    return eps, x_T, exact


def test_dpmpp_converges_to_the_ode_solution_in_few_steps():
    eps, x_T, exact = gaussian_problem()
    calls = []

    def counted(x, t):
        calls.append(1)
        return eps(x, t)

    def error(x):
        return (x - exact).abs().mean().item()

    fast20 = error(dpmpp_2m_sample(counted, x_T, SCHEDULE, steps=20))
    assert len(calls) == 20
    ddim50 = error(ddim_sample(eps, x_T, SCHEDULE, steps=50))
    fast40 = error(dpmpp_2m_sample(eps, x_T, SCHEDULE, steps=40))
    assert fast20 < 0.25 * ddim50, (fast20, ddim50)
    assert fast20 < 5e-3
    assert fast40 < 0.5 * fast20, "second order: doubling the steps cuts the error by more than half"


def test_dpmpp_timesteps_and_guidance_hook():
    steps = dpmpp_timesteps(SCHEDULE, 20)
    assert len(steps) == 20 and steps[0] == 999 and steps[-1] == 0 and steps == sorted(steps, reverse=True)
    with pytest.raises(ValueError, match="steps"):
        dpmpp_timesteps(SCHEDULE, 1)
    seen = []

    def pull_to_zero(x0, t, t_prev):
        seen.append((t, t_prev))
        return torch.zeros_like(x0)

    out = dpmpp_2m_sample(lambda x, t: 0.1 * x, torch.randn(2, 4, 4, 4), SCHEDULE, steps=8, x0_fn=pull_to_zero)
    assert torch.equal(out, torch.zeros_like(out))
    assert seen[-1][1] == -1 and [t for t, _ in seen] == dpmpp_timesteps(SCHEDULE, 8)


def test_per_row_generators_make_each_row_independent_of_its_batch_mates():
    from iterview.diffusion.schedule import randn

    def gens(*seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    batch = randn((3, 2, 4), gens(3, 1, 4))
    for row, seed in enumerate((3, 1, 4)):
        assert torch.equal(batch[row : row + 1], randn((1, 2, 4), gens(seed)))
    with pytest.raises(ValueError, match="one generator per batch row"):
        randn((2, 4), gens(0))


def test_ddpm_with_per_row_generators_matches_each_instance_alone():
    schedule = DiffusionSchedule.linear(100)

    def toy(x, t):
        return 0.1 * x + 0.01 * t.view(-1, 1, 1, 1)

    def gens(*seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    x_T = torch.randn(3, 2, 4, 4)
    together = ddpm_sample(toy, x_T, schedule, generator=gens(7, 8, 9))
    for row, seed in enumerate((7, 8, 9)):
        alone = ddpm_sample(toy, x_T[row : row + 1], schedule, generator=gens(seed))
        torch.testing.assert_close(together[row : row + 1], alone, atol=1e-6, rtol=0)


def test_clip_denoised_clips_before_the_wrapped_guidance():
    x0 = torch.tensor([-3.0, -0.5, 0.5, 3.0])
    assert torch.equal(clip_denoised()(x0, 10, 9), torch.tensor([-1.0, -0.5, 0.5, 1.0]))
    seen = []
    clip_denoised(lambda x, t, t_prev: seen.append(x.clone()) or x * 2)(x0, 10, 9)
    assert seen[0].abs().max() == 1.0


def test_every_sampler_has_one_signature():
    common = ["model_fn", "x", "schedule", "steps", "generator", "x0_fn", "callback", "progress"]
    for sampler in (ddpm_sample, ddim_sample, dpmpp_2m_sample):
        assert list(inspect.signature(sampler).parameters)[: len(common)] == common, sampler.__name__
    with pytest.raises(ValueError, match="DDPM walks all 1000 steps"):
        ddpm_sample(toy, torch.zeros(1, 4, 2, 2), SCHEDULE, 50)


@pytest.mark.parametrize(("name", "steps"), [("ddim", 5), ("dpmpp", 5)])
def test_sampler_choice_clips_as_an_argument(name, steps):
    """clip=True is the sampler with clip_denoised wrapped around the guidance, and it changes a wild model."""

    def wild(x, t):
        return 3.0 * torch.ones_like(x)

    x_T = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    seen = []

    def guide(x0, t, t_prev):
        seen.append(x0.abs().max().item())
        return x0

    clipped = SamplerChoice(name, steps, clip=True).sample(wild, x_T, SCHEDULE, x0_fn=guide)
    function = {"ddim": ddim_sample, "dpmpp": dpmpp_2m_sample}[name]
    assert torch.equal(clipped, function(wild, x_T, SCHEDULE, steps, x0_fn=clip_denoised(guide)))
    assert max(seen) <= 1.0
    assert not torch.equal(clipped, SamplerChoice(name, steps).sample(wild, x_T, SCHEDULE))


HIGH_ORDER = {"dpmpp3m": dpmpp_3m_sample, "unipc": unipc_sample}


def gaussian_ode_endpoint():
    """The Gaussian problem's exact ε and the limit every sampler here converges to: the exact ODE solution at
    t = 0 (ᾱ_0 < 1; the standardised value is preserved along the ODE), then its x0 prediction, which DDIM's last
    step (to ᾱ = 1) and the solvers' last call both return."""
    eps, x_T, exact_clean = gaussian_problem()
    g = torch.Generator().manual_seed(0)
    mu = 0.5 * torch.randn(1, 4, 8, 8, generator=g)
    s = torch.exp(torch.empty(1, 4, 8, 8).uniform_(math.log(0.01), 0.0, generator=g))
    a_0 = SCHEDULE.alphas_cumprod[0].item()
    standardised = (exact_clean - mu) / s
    x_0 = math.sqrt(a_0) * mu + torch.sqrt(a_0 * s**2 + 1 - a_0) * standardised
    endpoint = (x_0 - math.sqrt(1 - a_0) * eps(x_0, torch.tensor([0]))) / math.sqrt(a_0)
    return eps, x_T, endpoint


def mean_error(x: torch.Tensor, target: torch.Tensor) -> float:
    return (x - target).abs().mean().item()


@pytest.mark.parametrize("name", sorted(HIGH_ORDER))
def test_high_order_solvers_converge_to_the_official_ode_limit_at_third_order(name):
    """Against the exact ODE solution: DDIM with all 1000 steps lands near it, the solver with 20 and 40 calls
    nearer, and doubling the calls cuts the error by more than 2^2.3 (third order; 2M measures 2^1.9 here)."""
    eps, x_T, endpoint = gaussian_ode_endpoint()
    ddim1000 = mean_error(ddim_sample(eps, x_T, SCHEDULE, steps=1000), endpoint)
    errors = {n: mean_error(HIGH_ORDER[name](eps, x_T, SCHEDULE, steps=n), endpoint) for n in (10, 20, 40)}
    assert ddim1000 < 1e-3, ddim1000
    assert errors[40] < ddim1000 and errors[40] < errors[20] < errors[10], (errors, ddim1000)
    assert errors[20] / errors[40] > 2**2.3, errors
    second_order = {n: mean_error(dpmpp_2m_sample(eps, x_T, SCHEDULE, steps=n), endpoint) for n in (20, 40)}
    assert second_order[20] / second_order[40] < 2**2.3, "the order check must tell second from third order"


def test_multistep_updates_are_exact_when_x0_is_quadratic_in_log_snr():
    """With x0(λ) a quadratic, the third-order updates (3M, UniP from three points, UniC from two points and the
    new one) must equal the exact exponential-integrator solution x_t = σ_t/σ_s·x_s + σ_t·∫ e^λ x0(λ) dλ, here
    by the trapezoid rule on 200,001 points (float64)."""

    def sigma(lam: float) -> float:
        return 1 / math.sqrt(1 + math.exp(2 * lam))

    def quadratic(lam):
        return 0.3 - 0.8 * lam + 0.45 * lam**2

    lams, lam_next, x = [0.3, 0.7, 1.25], 1.9, torch.tensor(0.37, dtype=torch.float64)
    grid = torch.linspace(lams[-1], lam_next, 200_001, dtype=torch.float64)
    integral = torch.trapezoid(torch.exp(grid) * quadratic(grid), grid).item()
    ratio, alpha_next = sigma(lam_next) / sigma(lams[-1]), math.exp(lam_next) * sigma(lam_next)
    exact = ratio * x + sigma(lam_next) * integral
    x0s = [torch.tensor(quadratic(lam), dtype=torch.float64) for lam in lams]
    x0_next = torch.tensor(quadratic(lam_next), dtype=torch.float64)
    updates = {
        "dpmpp3m": _dpmpp_update(x, x0s, lams, lam_next, ratio, alpha_next),
        "unip3": _unipc_update(x, x0s, lams, lam_next, ratio, alpha_next),
        "unic2": _unipc_update(x, x0s[1:], lams[1:], lam_next, ratio, alpha_next, x0_next),
    }
    for name, update in updates.items():
        assert abs(update.item() - exact.item()) < 1e-9, name
    assert abs(_dpmpp_update(x, x0s[1:], lams[1:], lam_next, ratio, alpha_next).item() - exact.item()) > 1e-4


@pytest.mark.parametrize("name", sorted(HIGH_ORDER))
def test_every_data_prediction_goes_through_x0_fn(name):
    """A model that predicts ε = 0 (so x0 = x_t / α_t) under an x0_fn that turns that x0 into the exact Gaussian
    data prediction at x_t: the result equals the solver on the exact model only if every predictor, corrector
    and history term uses the guided x0, and x0_fn sees every call's (t, t_next)."""
    eps, x_T, _ = gaussian_ode_endpoint()
    alpha = SCHEDULE.sqrt_alphas_cumprod
    seen = []

    def exact_x0(x0: torch.Tensor, t: int, t_next: int) -> torch.Tensor:
        seen.append((t, t_next))
        a = alpha[t].item()
        x_t = a * x0
        return (x_t - math.sqrt(1 - a**2) * eps(x_t, torch.tensor([t]))) / a

    sampler = HIGH_ORDER[name]
    guided = sampler(lambda x, t: torch.zeros_like(x), x_T, SCHEDULE, steps=8, x0_fn=exact_x0)
    torch.testing.assert_close(guided, sampler(eps, x_T, SCHEDULE, steps=8), atol=2e-5, rtol=0)
    timesteps = dpmpp_timesteps(SCHEDULE, 8)
    assert seen == list(zip(timesteps, [*timesteps[1:], -1], strict=True))


@pytest.mark.parametrize("name", sorted(HIGH_ORDER))
def test_high_order_solvers_keep_per_instance_seeding(name):
    """Hole noise drawn per call from one generator per row: an instance gives the same sample alone or in a
    batch with others. The network is elementwise (the hole noise reaches its output), so batching adds no
    round-off and the samples must be equal, not just close."""

    def network(x: torch.Tensor, t: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        return 0.1 * x[:, :4] + 0.05 * x[:, 5:9] + 0.01 * classes.clamp(min=0).float().view(-1, 1, 1, 1)

    known = torch.rand(3, 4, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    mask = (torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(2)) > 0.5).float()
    classes = torch.tensor([0, 3, 5])
    x_T = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(3))

    def run(rows: slice, seeds: tuple[int, ...] = (7, 8, 9)) -> torch.Tensor:
        generators = [torch.Generator().manual_seed(seed) for seed in seeds[rows]]
        model_fn = inpaint_model(network, known[rows], mask[rows], mask[rows], classes[rows], 1.0, generators)
        return HIGH_ORDER[name](model_fn, x_T[rows], SCHEDULE, steps=5)

    together = run(slice(0, 3))
    for row in range(3):
        assert torch.equal(together[row : row + 1], run(slice(row, row + 1))), row
    assert not torch.equal(together, run(slice(0, 3), seeds=(7, 8, 10))[:2]), "the seed must matter"


def test_every_registered_sampler_has_the_common_signature_and_runs():
    common = ["model_fn", "x", "schedule", "steps", "generator", "x0_fn", "callback", "progress"]
    x_T = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    for name, sampler in SAMPLERS.items():
        assert list(inspect.signature(sampler).parameters)[: len(common)] == common, name
        choice = resolve_samplers("official", name, name, 4, 4, timesteps=50)[1]
        steps = []
        out = choice.sample(toy, x_T, DiffusionSchedule.linear(50), torch.Generator(), callback=steps.append)
        assert out.shape == x_T.shape and torch.isfinite(out).all(), name
        assert [step["t"] for step in steps] == choice.timesteps(DiffusionSchedule.linear(50)), name
    assert set(SOLVERS) <= set(SAMPLERS)


def test_cfg_window_runs_the_conditional_model_alone_outside_it():
    calls = []

    def network(x, t, classes):
        calls.append(len(x))
        return 0.1 * x + 0.01 * classes.clamp(min=0).float().view(-1, 1, 1, 1)

    classes = torch.tensor([2, 4])
    x = torch.ones(2, 4, 2, 2)
    windowed = classifier_free(network, classes, 3.0, window=(100, 500))
    always = classifier_free(network, classes, 3.0)
    for t, guided in ((99, False), (100, True), (500, True), (501, False)):
        calls.clear()
        out = windowed(x, torch.full((2,), t))
        expected = always(x, torch.full((2,), t)) if guided else network(x, None, classes)
        assert calls[0] == (4 if guided else 2), t
        assert torch.equal(out, expected), t
    with pytest.raises(ValueError, match="cfg_window"):
        SamplerChoice("unipc", 10, cfg_window=(500, 100))


@torch.no_grad()
def test_pipeline_evaluation_count_follows_the_cfg_window():
    """U-Net image evaluations counted on the real forward passes of a 3-view instance equal
    `MultiViewPipeline.unet_evaluations`, and a window that excludes some steps saves exactly those passes."""
    g_u = tiny_adm(image_size=8, in_channels=4, model_channels=32).eval()
    g_c = tiny_adm(image_size=8, in_channels=10, model_channels=32).eval()
    rows = []
    for model in (g_u, g_c):
        model.register_forward_hook(lambda module, inputs, output: rows.append(len(inputs[0])))
    modelviews = grid_viewset_3x9().modelviews[:3][None]
    counts = {}
    for window in (None, (300, 999)):
        rows.clear()
        uncond, cond = SamplerChoice("unipc", 6, cfg_window=window), SamplerChoice("dpmpp3m", 5, cfg_window=window)
        pipeline = MultiViewPipeline(g_u, g_c, sampler_uncond=uncond, sampler_cond=cond, guidance=Guidance(1.0))
        pipeline(modelviews, [torch.Generator().manual_seed(0)], torch.tensor([1]))
        counts[window] = sum(rows)
        assert counts[window] == pipeline.unet_evaluations(3, guided=True), window
    assert counts[None] == 2 * (6 + 2 * 5)
    below = sum(t < 300 for t in dpmpp_timesteps(SCHEDULE, 6)) + 2 * sum(t < 300 for t in dpmpp_timesteps(SCHEDULE, 5))
    assert counts[(300, 999)] == counts[None] - below > 0
