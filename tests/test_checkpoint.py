"""Configs and checkpoints: official .pt state dicts and JSON configs, our safetensors format, G_c fine-tune start."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from safetensors.torch import load_file

from iterview.config import ADMConfig
from iterview.models.checkpoint import (
    build_model,
    expand_input_channels,
    load_model,
    load_weights,
    read_state_dict,
    save_model,
)


def official_args(reference, name="adm_small_uncond") -> dict:
    return json.loads((reference / name / "config.json").read_text())


def golden_error(model, reference) -> float:
    io = load_file(reference / "adm_small_uncond" / "io.safetensors")
    with torch.no_grad():
        return (model(io["x"], io["t"], io["classes"]) - io["out_classes"]).abs().max().item()


def test_config_reads_official_forms(reference, tmp_path):
    args = official_args(reference)
    plain = ADMConfig.from_dict(args)
    experiment = {"backbone": {"name": "AdmUnet2d", "args": args}, "framework": {"name": "ClassifierFreeGuidance"}}
    assert ADMConfig.from_dict(experiment) == plain
    assert ADMConfig.from_dict({"model": plain.to_dict()}) == plain
    assert ADMConfig.from_dict(json.loads(json.dumps(plain.to_dict()))) == plain
    shipped = json.loads((reference / "adm_shapes" / "rgbd_imagenet_adm_128_large_cond.json").read_text())["config"]
    assert shipped["num_heads"] is None
    config = ADMConfig.from_dict(shipped)
    expected = (1, shipped["num_head_channels"], shipped["in_channels"], shipped["use_fp16"])
    assert (config.num_heads, config.num_head_channels, config.in_channels, config.use_fp16) == expected
    path = tmp_path / "experiment.json"
    path.write_text(json.dumps(experiment))
    assert ADMConfig.from_json(path) == plain


def test_config_rejects_bad_input(reference, tmp_path):
    args = official_args(reference)
    with pytest.raises(ValueError, match="use_flash"):
        ADMConfig.from_dict({**args, "use_flash": True})
    with pytest.raises(ValueError, match="UNetModel"):
        ADMConfig.from_dict({"backbone": {"name": "UNetModel", "args": args}})
    with pytest.raises(ValueError, match="model_channels"):
        ADMConfig.from_dict({k: v for k, v in args.items() if k != "model_channels"})
    with pytest.raises(ValueError, match="num_groups"):
        ADMConfig.from_dict({**args, "num_groups": 7})
    with pytest.raises(ValueError, match="newer"):
        ADMConfig.from_dict({"format": "iterview.adm", "version": 2, "model": args})
    with pytest.raises(ValueError, match="even"):
        ADMConfig.from_dict({**args, "model_channels": 33})
    with pytest.raises(ValueError, match="auto"):
        ADMConfig.from_dict({**args, "num_classes": "auto"})
    with pytest.raises(FileNotFoundError, match=r"nowhere\.json"):
        ADMConfig.from_json(tmp_path / "nowhere.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"bad\.json"):
        ADMConfig.from_json(tmp_path / "bad.json")


def test_load_official_pt_with_official_json(reference, tmp_path):
    experiment = tmp_path / "rgbd_small_cfg.json"
    experiment.write_text(json.dumps({"backbone": {"name": "AdmUnet2d", "args": official_args(reference)}}))
    model, config = load_model(reference / "adm_small_uncond" / "checkpoint.pt", experiment)
    assert config.num_classes == official_args(reference)["num_classes"] and not model.training
    assert golden_error(model, reference) <= 1e-5


def test_load_official_safetensors_with_config_object(reference):
    config = ADMConfig.from_dict(official_args(reference))
    model, _ = load_model(reference / "adm_small_uncond" / "checkpoint.safetensors", config)
    assert golden_error(model, reference) <= 1e-5


def test_save_load_round_trip(reference, tmp_path):
    model, config = load_model(
        reference / "adm_small_uncond" / "checkpoint.pt", reference / "adm_small_uncond" / "config.json"
    )
    directory = save_model(model, config, tmp_path / "ckpt")
    assert sorted(p.name for p in directory.iterdir()) == ["config.json", "model.safetensors"]
    saved = json.loads((directory / "config.json").read_text())
    assert (
        saved["format"] == "iterview.adm"
        and saved["version"] == 1
        and saved["model"]["model_channels"] == config.model_channels
    )
    loaded, loaded_config = load_model(directory)
    assert loaded_config == config
    for key, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], tensor), key


def test_fp16_config_keeps_official_dtypes(reference, tmp_path):
    config = ADMConfig.from_dict({**official_args(reference), "use_fp16": True})
    model, _ = load_model(reference / "adm_small_uncond" / "checkpoint.pt", config)
    state = model.state_dict()
    assert state["input_blocks.0.0.weight"].dtype == torch.float16
    assert state["input_blocks.1.0.emb_layers.1.weight"].dtype == torch.float32
    official = torch.load(reference / "adm_small_uncond" / "checkpoint.pt", weights_only=True)
    assert torch.equal(state["input_blocks.0.0.weight"], official["input_blocks.0.0.weight"].half())
    save_model(model, config, tmp_path)
    assert load_file(tmp_path / "model.safetensors")["middle_block.1.qkv.weight"].dtype == torch.float16
    # An fp16-stored checkpoint also loads into an fp32 model, tensor by tensor.
    fp32 = build_model(ADMConfig.from_dict(official_args(reference)))
    load_weights(fp32, read_state_dict(tmp_path))
    assert fp32.state_dict()["input_blocks.0.0.weight"].dtype == torch.float32
    assert golden_error(fp32, reference) <= 1e-2


def wider_args(reference) -> dict:
    """The small official config with twice the channels: every weight shape differs."""
    args = official_args(reference)
    return {**args, "model_channels": 2 * args["model_channels"]}


def test_wrong_shape_names_first_mismatched_key(reference):
    shape = tuple(read_state_dict(reference / "adm_small_cond" / "checkpoint.pt")["input_blocks.0.0.weight"].shape)
    with pytest.raises(ValueError, match=rf"'input_blocks\.0\.0\.weight' has shape \({', '.join(map(str, shape))}\)"):
        load_model(reference / "adm_small_cond" / "checkpoint.pt", reference / "adm_small_uncond" / "config.json")
    wider = ADMConfig.from_dict(wider_args(reference))
    with pytest.raises(ValueError, match=r"'time_embed\.0\.freqs'"):
        load_model(reference / "adm_small_uncond" / "checkpoint.pt", wider)


def test_missing_and_extra_keys_are_named(reference):
    model = build_model(ADMConfig.from_dict(official_args(reference)))
    state = read_state_dict(reference / "adm_small_uncond" / "checkpoint.pt")
    with pytest.raises(ValueError, match=r"label_emb\.weight"):
        load_weights(model, {k: v for k, v in state.items() if k != "label_emb.weight"})
    with pytest.raises(ValueError, match=r"module\.extra"):
        load_weights(model, {**state, "module.extra": torch.zeros(1)})


def test_foreign_files_are_rejected(tmp_path, reference):
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError, match=r"notes\.pt"):
        read_state_dict(text)
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "step": 3}, wrapped)
    with pytest.raises(ValueError, match="plain state dict"):
        read_state_dict(wrapped)
    code = tmp_path / "code.pt"
    code.write_bytes(pickle.dumps(ADMConfig.from_dict(official_args(reference)), protocol=2))
    with pytest.raises(ValueError, match="weights-only"):
        read_state_dict(code)
    with pytest.raises(FileNotFoundError):
        read_state_dict(tmp_path / "absent.pt")
    with pytest.raises(ValueError, match="config"):
        load_model(wrapped)


@torch.no_grad()
def test_expand_input_channels_is_the_official_zero_padding(reference):
    uncond, config = load_model(
        reference / "adm_small_uncond" / "checkpoint.pt", reference / "adm_small_uncond" / "config.json"
    )
    cond_config = ADMConfig.from_dict(official_args(reference, "adm_small_cond"))
    cond = build_model(cond_config)
    state = expand_input_channels(uncond.state_dict(), cond)
    load_weights(cond, state)
    weight = cond.input_blocks[0][0].weight
    channels, size = config.in_channels, config.image_size
    assert torch.equal(weight[:, :channels], uncond.input_blocks[0][0].weight)
    assert weight[:, channels:].abs().max() == 0
    x, t, c = torch.randn(2, channels, size, size), torch.tensor([5, 600]), torch.tensor([1, -1])
    condition = torch.randn(2, cond_config.in_channels - channels, size, size)
    torch.testing.assert_close(cond.eval()(torch.cat([x, condition], 1), t, c), uncond(x, t, c))
    with pytest.raises(ValueError, match="time_embed"):
        expand_input_channels(uncond.state_dict(), build_model(ADMConfig.from_dict(wider_args(reference))))


def test_convert_command_writes_our_format(reference, tmp_path):
    from typer.testing import CliRunner

    from iterview.cli import app

    folder = reference / "adm_small_uncond"
    experiment = tmp_path / "experiment.json"
    experiment.write_text(json.dumps({"backbone": {"name": "AdmUnet2d", "args": official_args(reference)}}))
    args = ["convert", str(folder / "checkpoint.pt"), "--config", str(experiment), "--output", str(tmp_path / "out")]
    result = CliRunner().invoke(app, [*args, "--fp16"])
    assert result.exit_code == 0, result.output
    assert "use_fp16=True" in result.output
    model, config = load_model(tmp_path / "out")
    assert config.use_fp16 and model.state_dict()["input_blocks.0.0.weight"].dtype == torch.float16
    cond = str(reference / "adm_small_cond" / "checkpoint.pt")
    bad = CliRunner().invoke(app, ["convert", cond, *args[2:-1], str(tmp_path / "other")])
    assert bad.exit_code == 2 and "input_blocks.0.0.weight" in bad.output and not (tmp_path / "other").exists()
    weights = (tmp_path / "out" / "model.safetensors").read_bytes()
    again = CliRunner().invoke(app, args)  # never silently replaces a model
    assert again.exit_code == 2 and "--overwrite" in again.output
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == weights
    assert CliRunner().invoke(app, [*args, "--overwrite"]).exit_code == 0
    assert not load_model(tmp_path / "out")[1].use_fp16
