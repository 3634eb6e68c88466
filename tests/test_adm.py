"""ADM U-Net: golden forward outputs of the official AdmUnet2d, and the official state-dict layout of every config."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file

from iterview.config import ADMConfig, tiny_adm_config
from iterview.models.adm import ADMUNet
from iterview.models.checkpoint import build_model, tiny_adm


def official_model(folder) -> ADMUNet:
    model = ADMUNet(**json.loads((folder / "config.json").read_text()))
    model.load_state_dict(torch.load(folder / "checkpoint.pt", weights_only=True), strict=True)
    return model.eval()


@torch.no_grad()
def test_uncond_forward_matches_official(reference):
    folder = reference / "adm_small_uncond"
    io = load_file(folder / "io.safetensors")
    model = official_model(folder)
    assert (model(io["x"], io["t"], io["classes"]) - io["out_classes"]).abs().max() <= 1e-5
    assert (model(io["x"], io["t"], None) - io["out_none"]).abs().max() <= 1e-5
    assert (model(io["x"], io["t_float"], io["classes"]) - io["out_t_float"]).abs().max() <= 1e-5


@torch.no_grad()
def test_cond_forward_matches_official(reference):
    folder = reference / "adm_small_cond"
    io = load_file(folder / "io.safetensors")
    model = official_model(folder)
    assert (model(io["assembled_input"], io["t"], io["classes"]) - io["out_classes"]).abs().max() <= 1e-5
    assert (model(io["assembled_input"], io["t"], None) - io["out_none"]).abs().max() <= 1e-5


def test_official_configs_build_the_official_state_dict(reference):
    """Every shipped config listed in adm_shapes/ builds the official key list, shapes, dtypes and size."""
    files = sorted((reference / "adm_shapes").glob("*.json"))
    assert files, "no config layouts in adm_shapes/"
    for path in files:
        data = json.loads(path.read_text())
        model = build_model(ADMConfig.from_dict(data["config"]), device="meta")
        got = [(k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()]
        expected = [(e["key"], e["shape"], e["dtype"]) for e in data["state_dict"]]
        assert got == expected, path.name
        assert sum(p.numel() for p in model.parameters()) == data["num_parameters"], path.name


@torch.no_grad()
def test_null_label_is_the_zero_embedding():
    model = tiny_adm(0).eval()
    x, t = torch.randn(3, 4, 16, 16), torch.tensor([0, 10, 999])
    null = model(x, t, torch.full((3,), -1))
    assert torch.equal(null, model(x, t, None))
    mixed = model(x, t, torch.tensor([2, -1, 4]))
    assert torch.equal(mixed[1], null[1])
    assert not torch.allclose(mixed[0], null[0])


def test_fresh_model_predicts_zero():
    # Official init: the `out` head conv is zero-initialised.
    out = tiny_adm(perturb=False)(torch.randn(2, 4, 16, 16), torch.tensor([5, 500]), torch.tensor([0, 1]))
    assert out.shape == (2, 4, 16, 16)
    assert out.abs().max() == 0


def test_classes_on_unconditional_model_raise():
    model = tiny_adm(num_classes=None, has_null_class=False)
    with pytest.raises(ValueError, match="unconditional"):
        model(torch.randn(1, 4, 16, 16), torch.tensor([1]), torch.tensor([0]))


@torch.no_grad()
def test_fp16_layout_runs_close_to_fp32():
    model = tiny_adm(1).eval()
    half = copy.deepcopy(model)
    half.convert_to_fp16()
    assert half.block_dtype == torch.float16
    assert half.input_blocks[1][0].in_layers[0].weight.dtype == torch.float32
    assert half.out[2].weight.dtype == torch.float32
    x, t, c = torch.randn(2, 4, 16, 16), torch.tensor([3, 700]), torch.tensor([1, -1])
    out, ref = half(x, t, c), model(x, t, c)
    assert out.dtype == torch.float32
    assert 0 < (out - ref).abs().max() <= 1e-2 * ref.abs().max()
    half.convert_to_fp32()
    assert half.block_dtype == torch.float32
    assert (half(x, t, c) - ref).abs().max() <= 1e-2 * ref.abs().max()


@torch.no_grad()
def test_options_without_updown_or_scale_shift():
    model = tiny_adm(2, resblock_updown=False, use_scale_shift_norm=False, num_head_channels=-1, num_heads=2)
    keys = model.state_dict()
    assert "input_blocks.2.0.op.weight" in keys and "output_blocks.1.2.conv.weight" in keys
    assert keys["input_blocks.1.0.emb_layers.1.weight"].shape == (16, 64)
    out = model(torch.randn(2, 4, 16, 16), torch.tensor([1, 2]), None)
    assert out.shape == (2, 4, 16, 16) and torch.isfinite(out).all() and out.abs().max() > 0


@torch.no_grad()
def test_first_level_multiplier_widens_the_stem():
    # The official stem and head use channel_mult[0]·model_channels channels, not model_channels.
    model = tiny_adm(3, channel_mult=[2, 3])
    keys = model.state_dict()
    assert keys["input_blocks.0.0.weight"].shape == (32, 4, 3, 3)
    assert keys["out.2.weight"].shape == (4, 32, 3, 3)
    out = model(torch.randn(1, 4, 16, 16), torch.tensor([7]), torch.tensor([3]))
    assert out.shape == (1, 4, 16, 16) and torch.isfinite(out).all()


@torch.no_grad()
def test_v_prediction_returns_epsilon_and_keeps_the_state_dict():
    # A v-network's last layer outputs v = α·ε − σ·x_0; forward returns ε = σ·x_t + α·v, so the x_0 every sampler
    # derives, (x_t − σ·ε) / α, is α·x_t − σ·v: the definition of v-prediction (Salimans & Ho 2022).
    from iterview.diffusion.schedule import DiffusionSchedule

    eps_net = tiny_adm(4, in_channels=10).eval()
    v_net = tiny_adm(4, in_channels=10, prediction="v").eval()
    assert v_net.state_dict().keys() == eps_net.state_dict().keys()
    v_net.load_state_dict(eps_net.state_dict(), strict=True)
    schedule = DiffusionSchedule.linear(1000)
    x, t, c = torch.randn(3, 10, 16, 16), torch.tensor([0, 400, 999]), torch.tensor([1, -1, 2])
    v, eps = eps_net(x, t, c).double(), v_net(x, t, c).double()
    alpha = schedule.sqrt_alphas_cumprod[t].view(-1, 1, 1, 1)
    sigma = schedule.sqrt_one_minus_alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = x[:, :4].double()
    torch.testing.assert_close(eps, sigma * x_t + alpha * v, rtol=0, atol=1e-5)
    torch.testing.assert_close((x_t - sigma * eps) / alpha, alpha * x_t - sigma * v, rtol=0, atol=1e-4)


@torch.no_grad()
def test_v_prediction_model_saves_and_loads(tmp_path):
    from iterview.models.checkpoint import load_model, save_model

    model = tiny_adm(5, prediction="v").eval()
    save_model(model, tiny_adm_config(prediction="v"), tmp_path / "g")
    loaded, config = load_model(tmp_path / "g")  # built on the meta device, then assigned
    assert config.prediction == "v"
    x, t = torch.randn(2, 4, 16, 16), torch.tensor([3, 990])
    assert torch.equal(loaded(x, t, None), model(x, t, None))


def test_unknown_prediction_is_refused():
    with pytest.raises(ValueError, match="prediction"):
        tiny_adm(prediction="x0")
