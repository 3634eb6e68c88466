"""Model checkpoints: our safetensors + JSON config, and the official plain state-dict .pt files."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from iterview.config import CONFIG_VERSION, ADMConfig, tiny_adm_config
from iterview.io import atomic_path
from iterview.models.adm import ADMUNet

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT = "iterview.adm"

StateDict = dict[str, torch.Tensor]


def build_model(config: ADMConfig, device: torch.device | str | None = None) -> ADMUNet:
    """Instantiate an ADMUNet from a config (randomly initialised, official init; `device="meta"` for shapes)."""
    with torch.device(device or "cpu"):
        return ADMUNet(**config.to_dict())


def tiny_adm(seed: int = 0, perturb: bool = True, **config) -> ADMUNet:
    """A `tiny_adm_config(**config)` U-Net initialised from seed (the global RNG is left untouched). perturb:
    move every parameter by 0.05·N(0, 1), so that the official zero-initialised output layers let ε depend on
    the input, as in a trained model."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(tiny_adm_config(**config))
    if perturb:
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator).to(parameter.dtype))
    return model


def save_model(model: ADMUNet, config: ADMConfig, directory: str | Path) -> Path:
    """Write `model.safetensors` + `config.json` atomically into directory (created if needed); returns it.

    Tensors keep the model's own dtypes (fp16 block convolutions stay fp16)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "version": str(CONFIG_VERSION)}
    with atomic_path(directory / WEIGHTS_NAME) as tmp:
        save_file(tensors, tmp, metadata=meta)
    text = json.dumps({"format": FORMAT, "version": CONFIG_VERSION, "model": config.to_dict()}, indent=2)
    with atomic_path(directory / CONFIG_NAME) as tmp:
        tmp.write_text(text + "\n")
    return directory


def read_state_dict(path: str | Path) -> StateDict:
    """Tensors of an official `.pt` state dict (read with weights_only, never unpickling code), a `.safetensors`
    file, or our checkpoint directory. The tensors are on the CPU in their stored dtypes."""
    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"model weights not found: {path}")
    if path.suffix == ".safetensors":
        try:
            return load_file(path)
        except Exception as e:
            raise ValueError(f"{path} is not a readable safetensors file: {e}") from e
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path} is not a plain PyTorch state dict (weights-only load failed: {e})") from e
    if not isinstance(data, Mapping) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        found = sorted(data)[:8] if isinstance(data, Mapping) else type(data).__name__
        raise ValueError(f"{path}: expected a plain state dict of tensors (official format), found {found}")
    return dict(data)


def check_state_dict(state_dict: Mapping[str, torch.Tensor], model: torch.nn.Module) -> None:
    """Raise ValueError naming the first key (in model order) that is missing, extra or of another shape."""
    expected = model.state_dict()
    for key, tensor in expected.items():
        if key not in state_dict:
            raise ValueError(f"checkpoint lacks key {key!r} (shape {tuple(tensor.shape)}): not this ADMUNet config")
        if state_dict[key].shape != tensor.shape:
            raise ValueError(
                f"checkpoint key {key!r} has shape {tuple(state_dict[key].shape)}, the model expects "
                f"{tuple(tensor.shape)}: the config does not match these weights"
            )
    extra = [k for k in state_dict if k not in expected]
    if extra:
        raise ValueError(f"checkpoint has unexpected key {extra[0]!r} ({len(extra)} extra); not this ADMUNet config")


def load_weights(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor]) -> torch.nn.Module:
    """Strictly load state_dict, casting each tensor to the dtype of the model's own (fp16 or fp32 per tensor).

    A model on the `meta` device gets the tensors assigned, so large models are never initialised twice."""
    check_state_dict(state_dict, model)
    own = model.state_dict()
    assign = any(t.is_meta for t in own.values())
    cast = {k: v.to(dtype=own[k].dtype, device="cpu" if assign else own[k].device) for k, v in state_dict.items()}
    model.load_state_dict(cast, strict=True, assign=assign)
    return model


def expand_input_channels(state_dict: Mapping[str, torch.Tensor], model: torch.nn.Module) -> StateDict:
    """Official G_c / SR fine-tune start from G_u: tensors narrower than the model's along dim 1 (only the first
    conv, 4 → 10 or 8 input channels) are zero-padded there, so the new condition channels start at zero.
    Any other shape difference raises ValueError naming the key."""
    expected = model.state_dict()
    out = dict(state_dict)
    for key, tensor in state_dict.items():
        target = expected.get(key)
        if target is None or tensor.shape == target.shape:
            continue
        if tensor.dim() < 2 or tensor.shape[:1] + tensor.shape[2:] != target.shape[:1] + target.shape[2:]:
            raise ValueError(
                f"cannot fine-tune from key {key!r}: shape {tuple(tensor.shape)} vs model {tuple(target.shape)} "
                "differ beyond dim 1"
            )
        if tensor.shape[1] > target.shape[1]:
            raise ValueError(f"key {key!r} has more input channels ({tensor.shape[1]}) than the model's")
        pad = tensor.new_zeros(tensor.shape[0], target.shape[1] - tensor.shape[1], *tensor.shape[2:])
        out[key] = torch.cat([tensor, pad], dim=1)
    return out


def load_model(
    path: str | Path,
    config: ADMConfig | str | Path | None = None,
    device: torch.device | str = "cpu",
) -> tuple[ADMUNet, ADMConfig]:
    """Load our directory (safetensors + config.json) or an official .pt state dict (config required:
    an ADMConfig, our config.json or an official experiment JSON). Strict; a clear error names the first
    mismatched key. The model is returned in eval mode on `device`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model weights not found: {path} (expected a model folder or an official .pt)")
    if config is None:
        config_path = (path if path.is_dir() else path.parent) / CONFIG_NAME
        if not config_path.is_file():
            raise ValueError(
                f"no config for {path}: pass config= (an ADMConfig, our config.json or the official experiment "
                f"JSON), or keep {CONFIG_NAME} beside the weights"
            )
        config = config_path
    if not isinstance(config, ADMConfig):
        config = ADMConfig.from_json(config)
    state_dict = read_state_dict(path)
    model = build_model(config, device="meta")
    try:
        load_weights(model, state_dict)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    return model.to(device).eval(), config
