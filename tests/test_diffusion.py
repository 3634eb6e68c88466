"""Diffusion core: official schedules, q(x_t | x_0), the ε-MSE loss, classifier-free guidance and G_c / SR inputs."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from iterview.diffusion import guidance
from iterview.diffusion.guidance import (
    classifier_free,
    inpaint_input,
    inpaint_model,
    replacement_guidance,
    superres_input,
    superres_model,
)
from iterview.diffusion.schedule import DiffusionSchedule
from iterview.models.adm import compile_for_inference, prepare_for_inference
from iterview.models.checkpoint import load_model

# Forward outputs match to 1e-5; the CFG combination (1+w)·a − w·b multiplies that error by up to 1 + 2w.
CFG3_TOLERANCE = 7e-5


def toy_network(x: torch.Tensor, t: torch.Tensor, classes: torch.Tensor | None) -> torch.Tensor:
    """The reference toy ε-model: 0.1·x + 0.01·t/1000 (+ 0.001·c for non-null classes)."""
    eps = 0.1 * x + 0.01 * (t.float() / 1000).reshape(-1, 1, 1, 1)
    if classes is None:
        return eps
    return eps + 0.001 * classes.clamp(min=0).float().reshape(-1, 1, 1, 1)


@pytest.fixture(scope="module")
def trajectories(reference):
    return load_file(reference / "diffusion_schedule" / "trajectories.safetensors")


def test_linear_schedule_is_bit_identical(reference):
    expected = load_file(reference / "diffusion_schedule" / "schedule_linear_1000.safetensors")
    schedule = DiffusionSchedule.linear()
    assert schedule.num_timesteps == 1000
    for name, value in expected.items():
        ours = getattr(schedule, name)
        assert ours.dtype == torch.float64, name
        assert torch.equal(ours, value), name


def test_cosine_schedule_matches_official(reference):
    expected = load_file(reference / "diffusion_schedule" / "schedule_cosine_1000.safetensors")["betas"]
    assert torch.equal(DiffusionSchedule.cosine().betas, expected)
    assert torch.equal(DiffusionSchedule.from_name("cosine").betas, expected)
    with pytest.raises(ValueError, match="sigmoid"):
        DiffusionSchedule.from_name("sigmoid")


def test_schedule_rejects_bad_betas():
    with pytest.raises(ValueError, match="betas"):
        DiffusionSchedule(torch.tensor([0.1, 1.5]))
    with pytest.raises(ValueError, match="betas"):
        DiffusionSchedule(torch.zeros(2, 2) + 0.1)
    with pytest.raises(ValueError, match="vanishes"):
        DiffusionSchedule.linear(20)


def test_q_sample_matches_official(trajectories):
    schedule = DiffusionSchedule.linear()
    x_t = schedule.q_sample(trajectories["x_T"], trajectories["diffuse_t"], trajectories["diffuse_noise"])
    assert torch.equal(x_t, trajectories["diffuse_x_t"])


def test_training_loss_is_eps_mse_and_reproducible():
    schedule = DiffusionSchedule.linear()
    x0 = torch.rand(4, 4, 8, 8) * 2 - 1
    seen = {}

    def perfect(x_t, t):
        # Recover the exact noise from x_t, so the official loss must vanish.
        seen["t"] = t
        return (x_t - schedule.q_sample(x0, t, torch.zeros_like(x0))) / schedule.sqrt_one_minus_alphas_cumprod[
            t
        ].float().reshape(-1, 1, 1, 1)

    assert schedule.training_loss(perfect, x0, torch.Generator().manual_seed(0)) < 1e-8
    assert seen["t"].shape == (4,) and seen["t"].dtype == torch.long
    zero = schedule.training_loss(lambda x, t: torch.zeros_like(x), x0, torch.Generator().manual_seed(3))
    again = schedule.training_loss(lambda x, t: torch.zeros_like(x), x0, torch.Generator().manual_seed(3))
    assert zero.shape == () and torch.equal(zero, again)
    # The reference value for seed 3: t drawn first, then the noise; ε = 0 leaves the mean of the noise squared.
    generator = torch.Generator().manual_seed(3)
    t = torch.randint(0, schedule.num_timesteps, (x0.shape[0],), generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    assert torch.equal(zero, noise.square().mean())
    identity = schedule.training_loss(lambda x, t: x, x0, torch.Generator().manual_seed(3))
    x_t = schedule.q_sample(x0, t, noise)
    assert torch.equal(identity, (x_t - noise).square().mean())
    gamma = 5.0
    weighted = schedule.training_loss(lambda x, t: x, x0, torch.Generator().manual_seed(3), min_snr_gamma=gamma)
    snr = (schedule.alphas_cumprod / (1 - schedule.alphas_cumprod))[t]
    expected = ((x_t - noise).square().flatten(1).mean(1) * (snr.clamp(max=gamma) / snr).float()).mean()
    torch.testing.assert_close(weighted, expected, rtol=1e-6, atol=0)


def test_depth_weighted_loss_weighs_the_last_channel():
    schedule = DiffusionSchedule.linear(1000)
    noise, t = torch.zeros(2, 4, 3, 3), torch.tensor([10, 900])
    eps = torch.zeros(2, 4, 3, 3)
    eps[:, 0], eps[:, 3] = 1.0, 2.0  # squared errors: 1 in colour channel 0, 4 in depth
    assert schedule.eps_loss(eps, noise, t).item() == 5 / 4
    # weights 1, 1, 1, 4 scaled to average 1: (1 + 4 · 4) / 7 per pixel, the mean over the 4 channels of it
    assert schedule.eps_loss(eps, noise, t, depth_weight=4.0).item() == pytest.approx((1 + 16) / 7)
    gamma = 5.0
    snr = (schedule.alphas_cumprod / (1 - schedule.alphas_cumprod))[t]
    both = schedule.eps_loss(eps, noise, t, min_snr_gamma=gamma, depth_weight=4.0)
    assert both.item() == pytest.approx((1 + 16) / 7 * (snr.clamp(max=gamma) / snr).mean().item())


def test_cfg_of_toy_model_matches_official(trajectories):
    t = torch.full((2,), 500)
    eps = classifier_free(toy_network, trajectories["cfg_classes"], 3.0)(trajectories["x_T"], t)
    assert torch.equal(eps, trajectories["cfg_eps_t500_s3"])


@torch.no_grad()
def test_cfg_of_official_unet(reference):
    folder = reference / "adm_small_uncond"
    model, _ = load_model(folder / "checkpoint.pt", folder / "config.json")
    cfg = load_file(folder / "cfg.safetensors")
    calls = []
    model.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    eps3 = classifier_free(model, cfg["classes"], 3.0)(cfg["x"], cfg["t"])
    assert calls == [6], "one batched forward pass of 2B"
    assert (eps3 - cfg["eps_cfg3"]).abs().max() <= CFG3_TOLERANCE
    eps0 = classifier_free(model, cfg["classes"], 0.0)(cfg["x"], cfg["t"])
    assert (eps0 - cfg["eps_cfg0"]).abs().max() <= 1e-5
    assert calls == [6, 3]


def test_inpaint_input_matches_official_assembly(reference):
    io = load_file(reference / "adm_small_cond" / "io.safetensors")
    noise = torch.cat([io["noise_rgb"], io["noise_depth"]], dim=1)
    assembled = inpaint_input(io["x"], io["y"], io["mask"], io["mask_rgb"], noise=noise)
    assert torch.equal(assembled, io["assembled_input"])


def test_inpaint_input_draws_fresh_noise_in_holes_only():
    x, y = torch.randn(2, 4, 8, 8), torch.rand(2, 4, 8, 8)
    mask = (torch.rand(2, 1, 8, 8) > 0.5).float()
    mask_rgb = mask * (torch.rand(2, 1, 8, 8) > 0.3).float()
    generator = torch.Generator().manual_seed(0)
    first = inpaint_input(x, y, mask, mask_rgb, generator)
    second = inpaint_input(x, y, mask, mask_rgb, generator)
    assert first.shape == (2, 10, 8, 8)
    assert torch.equal(first[:, :4], x) and torch.equal(first[:, 4:5], mask_rgb) and torch.equal(first[:, 9:], mask)
    known_rgb, known_d = mask_rgb.bool().expand(-1, 3, -1, -1), mask.bool()
    assert torch.equal(first[:, 5:8][known_rgb], y[:, :3][known_rgb])
    assert torch.equal(first[:, 8:9][known_d], y[:, 3:][known_d])
    assert not torch.equal(first[:, 5:9], second[:, 5:9]), "each call draws new hole noise"
    replay = inpaint_input(x, y, mask, mask_rgb, torch.Generator().manual_seed(0))
    assert torch.equal(replay, first)


@pytest.fixture(scope="module")
def cond_io(reference) -> dict[str, torch.Tensor]:
    return load_file(reference / "adm_small_cond" / "io.safetensors")


@torch.no_grad()
@pytest.mark.parametrize("weights", ["checkpoint.pt", "checkpoint.safetensors"])
def test_official_cond_unet_outputs(reference, cond_io, weights):
    """The 10-channel G_c U-Net from either official weight file, on the official assembled input."""
    folder = reference / "adm_small_cond"
    model, _ = load_model(folder / weights, folder / "config.json")
    official = torch.load(folder / "checkpoint.pt", weights_only=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in official.items())
    x, t = cond_io["assembled_input"], cond_io["t"]
    assert (model(x, t, cond_io["classes"]) - cond_io["out_classes"]).abs().max() <= 1e-5
    assert (model(x, t, None) - cond_io["out_none"]).abs().max() <= 1e-5


@torch.no_grad()
def test_inpaint_model_matches_official_guided_eps(reference, cond_io, monkeypatch):
    """`inpaint_model` end to end, with its hole noise replaced by the official draws (RGB first, then depth): every
    one of the assembled input channels is the official one, and the guided ε is the official `eps_cfg3`."""
    folder = reference / "adm_small_cond"
    io = cond_io
    model, _ = load_model(folder / "checkpoint.pt", folder / "config.json")
    draws = [io["noise_rgb"], io["noise_depth"]]

    def official_draw(like, generator=None):
        noise = draws.pop(0)
        assert noise.shape == like.shape
        return noise

    monkeypatch.setattr(guidance, "randn_like", official_draw)
    seen = []

    def recording(x, t, classes):
        seen.append(x)
        return model(x, t, classes)

    strength = 3.0  # eps_cfg3
    eps = inpaint_model(recording, io["y"], io["mask"], io["mask_rgb"], io["classes"], strength)(io["x"], io["t"])
    assert not draws, "one RGB and one depth draw per call"
    batch = io["x"].shape[0]
    (assembled,) = seen
    assert torch.equal(assembled[:batch], io["assembled_input"]) and torch.equal(
        assembled[batch:], io["assembled_input"]
    )
    assert (eps - io["eps_cfg3"]).abs().max() <= CFG3_TOLERANCE


def test_superres_input_upsamples_bilinearly():
    x = torch.randn(2, 4, 16, 16)
    low = torch.arange(2 * 4 * 8 * 8, dtype=torch.float32).reshape(2, 4, 8, 8)
    inp = superres_input(x, low)
    assert inp.shape == (2, 8, 16, 16) and torch.equal(inp[:, :4], x)
    # align_corners=False: output pixel 1 samples input position 0.25 → 0.75·v0 + 0.25·v1.
    assert torch.allclose(inp[0, 4, 0, 1], 0.75 * low[0, 0, 0, 0] + 0.25 * low[0, 0, 0, 1])
    assert torch.allclose(inp[:, 4:].reshape(2, 4, 8, 2, 8, 2).mean((3, 5))[:, :, 1:-1, 1:-1], low[:, :, 1:-1, 1:-1])
    seen = []

    def network(inputs, t, classes):
        seen.append((inputs.shape, classes.tolist()))
        return inputs[:, :4] + 0.01 * classes.clamp(min=0).float().reshape(-1, 1, 1, 1)

    eps = superres_model(network, low, torch.tensor([1, 2]), 2.0)(x, torch.tensor([3, 4]))
    assert seen == [((4, 8, 16, 16), [1, 2, -1, -1])]
    assert torch.allclose(eps, x + 0.03 * torch.tensor([1.0, 2.0]).reshape(-1, 1, 1, 1))


def test_replacement_guidance_matches_the_official_formulas():
    g = torch.Generator().manual_seed(0)
    x0, known, hull = (torch.rand(2, 4, 8, 8, generator=g) * 2 - 1 for _ in range(3))
    mask = (torch.rand(2, 1, 8, 8, generator=g) > 0.5).float()
    mask_rgb = mask * (torch.rand(2, 1, 8, 8, generator=g) > 0.3).float()
    guide = replacement_guidance(known, mask, mask_rgb, hull[:, :1])
    mid, last = guide(x0, 500, 480), guide(x0, 19, -1)
    m_rgb, m, unknown = mask_rgb.bool()[:, 0], mask.bool()[:, 0], ~mask.bool()[:, 0]
    pulled_rgb = 0.1 * known[:, :3] + 0.9 * x0[:, :3]
    assert torch.allclose(mid[:, :3].permute(1, 0, 2, 3)[:, m_rgb], pulled_rgb.permute(1, 0, 2, 3)[:, m_rgb])
    assert torch.equal(mid[:, :3].permute(1, 0, 2, 3)[:, ~m_rgb], x0[:, :3].permute(1, 0, 2, 3)[:, ~m_rgb])
    assert torch.equal(last[:, :3], x0[:, :3]), "the RGB pull is skipped at the last step"
    for out in (mid, last):
        assert torch.allclose(out[:, 3][m], (0.2 * known[:, 3] + 0.8 * x0[:, 3])[m])
        pushed = 0.5 * torch.maximum(x0[:, 3], hull[:, 0]) + 0.5 * x0[:, 3]
        assert torch.allclose(out[:, 3][unknown], pushed[unknown])
    assert torch.equal(replacement_guidance(known, mask, mask_rgb)(x0, 19, -1)[:, 3][unknown], x0[:, 3][unknown])


@torch.no_grad()
@pytest.mark.parametrize("channels_last", [False, True])
def test_fast_inference_path_keeps_the_official_cond_unet_outputs(reference, cond_io, channels_last):
    """`prepare_for_inference` (token-major attention, in-place SiLU, channels_last) on the official G_c weights:
    the state dict is unchanged, fp32 outputs are within 1e-4 of the official ones, with and without classes,
    and bf16 autocast (opt-in) within its stated 0.1."""
    folder = reference / "adm_small_cond"
    model, _ = load_model(folder / "checkpoint.pt", folder / "config.json")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = prepare_for_inference(model, channels_last=channels_last)
    assert fast.state_dict().keys() == before.keys()
    assert all(torch.equal(fast.state_dict()[k], v) for k, v in before.items())
    x, t = cond_io["assembled_input"], cond_io["t"]
    assert (fast(x, t, cond_io["classes"]) - cond_io["out_classes"]).abs().max() <= 1e-4
    assert (fast(x, t, None) - cond_io["out_none"]).abs().max() <= 1e-4
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = fast(x, t, cond_io["classes"]).float()
    assert (low - cond_io["out_classes"]).abs().max() <= 0.1


@torch.no_grad()
@pytest.mark.usefixtures("fresh_dynamo")
def test_compiled_inference_path_keeps_the_official_cond_unet_outputs(reference, cond_io):
    """`compile_for_inference` (torch.compile of the fast path, weights frozen into the graph) on the official G_c
    weights: fp32 outputs within 1e-4 of the official ones."""
    folder = reference / "adm_small_cond"
    compiled = compile_for_inference(load_model(folder / "checkpoint.pt", folder / "config.json")[0])
    output = compiled(cond_io["assembled_input"], cond_io["t"], cond_io["classes"])
    assert (output - cond_io["out_classes"]).abs().max() <= 1e-4
