"""Tiny random G_u / G_c models, shared by the pipeline and app tests."""

from __future__ import annotations

import torch

from iterview.config import ADMConfig
from iterview.models.checkpoint import build_model

SIZE = 16


def tiny(in_channels: int, seed: int):
    """A 16-px, 10-class ADM with 4 (G_u) or 10 (G_c) input channels and every weight perturbed -> (model, config)."""
    config = ADMConfig(
        image_size=SIZE,
        in_channels=in_channels,
        model_channels=16,
        out_channels=4,
        num_res_blocks=1,
        attention_resolutions=[8],
        channel_mult=[1, 2],
        num_classes=10,
        has_null_class=True,
        num_groups=8,
        num_head_channels=8,
    )
    torch.manual_seed(seed)
    model = build_model(config)
    with torch.no_grad():
        for parameter in model.parameters():  # wake the zero-initialised layers up: outputs must depend on inputs
            parameter.add_(torch.randn_like(parameter) * 0.05)
    return model, config
