"""Typed configs, and readers for the official JSON configs."""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

import yaml

from iterview.errors import parse_problem

OFFICIAL_BACKBONE = "AdmUnet2d"
CONFIG_VERSION = 1
_POSITIVE_INTS = ("image_size", "in_channels", "model_channels", "out_channels", "num_res_blocks", "num_groups")


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
    conv_resample: bool = True
    prediction: str = "epsilon"  # ours: "v" for a v-prediction network (official models predict ε)

    def __post_init__(self) -> None:
        for name in _POSITIVE_INTS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, found {value!r}")
        for name in ("attention_resolutions", "channel_mult"):
            values = getattr(self, name)
            if not isinstance(values, list | tuple) or not all(isinstance(v, int) for v in values):
                raise ValueError(f"{name} must be a list of integers, found {values!r}")
        self.attention_resolutions = [int(r) for r in self.attention_resolutions]
        self.channel_mult = [int(m) for m in self.channel_mult]
        # The official configs write `num_heads: null` next to num_head_channels, which then decides the heads.
        if self.num_heads is None:
            self.num_heads = 1
        if self.num_classes == "auto":
            raise ValueError('num_classes "auto" needs the dataset: replace it by the number of classes')
        if self.model_channels % 2:
            raise ValueError(f"model_channels must be even (sin/cos time features), found {self.model_channels}")
        if self.num_head_channels == -1 and self.num_heads < 1:
            raise ValueError(f"num_heads must be >= 1 when num_head_channels is -1, found {self.num_heads}")
        widths = [self.model_channels * m for m in self.channel_mult]
        for width in widths:
            if width % self.num_groups:
                raise ValueError(f"every block width must divide by num_groups={self.num_groups}, found {widths}")
            if self.num_head_channels != -1 and width % self.num_head_channels:
                raise ValueError(
                    f"every block width must divide by num_head_channels={self.num_head_channels}, found {widths}"
                )
        if self.image_size % 2 ** (len(self.channel_mult) - 1):
            raise ValueError(
                f"image_size must divide by 2^(levels-1) = {2 ** (len(self.channel_mult) - 1)}, found {self.image_size}"
            )

    @classmethod
    def from_dict(cls, data: dict) -> ADMConfig:
        """From backbone args, an official experiment config ({"backbone": {"name", "args"}}) or our own
        ({"model": args}, as written by `save_model`)."""
        if "backbone" in data:
            backbone = data["backbone"]
            name = backbone.get("name", OFFICIAL_BACKBONE)
            if name != OFFICIAL_BACKBONE:
                raise ValueError(f'expected backbone "{OFFICIAL_BACKBONE}" in the official config, found "{name}"')
            data = backbone.get("args", {})
        elif "model" in data:
            if data.get("version", 1) > CONFIG_VERSION:
                raise ValueError(f"config version {data['version']} is newer than the supported {CONFIG_VERSION}")
            data = data["model"]
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown ADM config keys {unknown}; expected a subset of {sorted(names)}")
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        missing = [name for name in required if name not in data]
        if missing:
            raise ValueError(f"ADM config lacks required keys {missing}")
        return cls(**data)

    @classmethod
    def from_json(cls, path: str | Path) -> ADMConfig:
        """Read any of the forms `from_dict` accepts from a JSON (or YAML) file."""
        try:
            return cls.from_dict(read_mapping(path, "ADM config"))
        except (ValueError, TypeError) as error:
            raise ValueError(f"ADM config {path}: {error}") from None

    def to_dict(self) -> dict:
        """Plain constructor arguments, JSON-serialisable; `from_dict(to_dict())` round-trips."""
        return asdict(self)


def tiny_adm_config(image_size: int = 16, in_channels: int = 4, model_channels: int = 16, **overrides) -> ADMConfig:
    """A small class-conditional ADM (10 classes + null, two levels, one residual block, attention at half
    resolution, heads of model_channels / 2 channels) for CPU runs, tests and benchmarks; any field can be
    overridden."""
    values = {
        "image_size": image_size,
        "in_channels": in_channels,
        "model_channels": model_channels,
        "out_channels": 4,
        "num_res_blocks": 1,
        "attention_resolutions": [image_size // 2],
        "channel_mult": [1, 2],
        "num_classes": 10,
        "has_null_class": True,
        "num_groups": 8,
        "num_head_channels": model_channels // 2,
    }
    return ADMConfig(**{**values, **overrides})


def read_mapping(path: str | Path, what: str) -> dict:
    """The mapping stored in a YAML or JSON file (JSON is YAML); clear errors for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid YAML/JSON: {parse_problem(error)}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of {what} fields, found {type(data).__name__}")
    return data
