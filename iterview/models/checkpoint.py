"""Model checkpoints: our safetensors + JSON config, and the official plain state-dict .pt files."""

from __future__ import annotations

from pathlib import Path

from iterview.config import ADMConfig
from iterview.models.adm import ADMUNet


def build_model(config: ADMConfig) -> ADMUNet:
    """Instantiate an ADMUNet from a config."""
    raise NotImplementedError


def save_model(model: ADMUNet, config: ADMConfig, directory: str | Path) -> Path:
    """Write `model.safetensors` + `config.json` atomically into directory."""
    raise NotImplementedError


def load_model(path: str | Path, config: ADMConfig | str | Path | None = None) -> tuple[ADMUNet, ADMConfig]:
    """Load our directory (safetensors + config.json) or an official .pt state dict (config required:
    an ADMConfig, our config.json or an official experiment JSON). Strict; a clear error names the first
    mismatched key."""
    raise NotImplementedError
