"""Training G_u and G_c: `train(config, output_dir)` with configs from `load_config` (files, presets)."""

from iterview.training.config import PRESETS, TrainConfig, get_preset, load_config
from iterview.training.trainer import train

__all__ = ["PRESETS", "TrainConfig", "get_preset", "load_config", "train"]
