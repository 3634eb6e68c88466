"""Typed configs, and readers for the official JSON configs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ADMConfig:
    """Constructor arguments of the ADM U-Net (official AdmUnet2d names)."""

    image_size: int
    in_channels: int
    model_channels: int
    out_channels: int
    num_res_blocks: int
    attention_resolutions: list[int]
    dropout: float = 0.0
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    num_classes: int | None = None
    has_null_class: bool = False
    use_fp16: bool = False
    num_groups: int = 32
    num_heads: int = 1
    num_head_channels: int = -1
    use_scale_shift_norm: bool = True
    resblock_updown: bool = True

    @classmethod
    def from_dict(cls, data: dict) -> ADMConfig:
        """From backbone args, an official experiment config ({"backbone": {"args": ...}}) or our own."""
        raise NotImplementedError

    @classmethod
    def from_json(cls, path: str | Path) -> ADMConfig:
        raise NotImplementedError

    def to_dict(self) -> dict:
        raise NotImplementedError
