"""ADM U-Net on RGBD, state-dict compatible with the official ivid AdmUnet2d."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class ADMUNet(nn.Module):
    """Official AdmUnet2d, same constructor arguments and state-dict keys."""

    def __init__(
        self,
        image_size: int,
        in_channels: int,
        model_channels: int,
        out_channels: int,
        num_res_blocks: int,
        attention_resolutions: Sequence[int],
        dropout: float = 0.0,
        channel_mult: Sequence[int] = (1, 2, 4, 8),
        num_classes: int | None = None,
        has_null_class: bool = False,
        use_fp16: bool = False,
        num_groups: int = 32,
        num_heads: int = 1,
        num_head_channels: int = -1,
        use_scale_shift_norm: bool = True,
        resblock_updown: bool = True,
    ) -> None:
        super().__init__()
        raise NotImplementedError

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, in, H, W); timesteps: (B,) network timesteps 0..999 (float allowed); classes: (B,) long,
        -1 = null, or None (all null). Returns ε: (B, out, H, W)."""
        raise NotImplementedError
