"""The typed training config, its YAML/JSON file format, and presets equal to the official configs.

A config file holds the fields of `TrainConfig` at the top level and the U-Net's constructor arguments under
`model`. It may start from a preset (`preset: tiny`) and override any field. Official `use_fp16: true` maps to
`mixed_precision: fp16`: we keep fp32 master weights and let autocast + loss scaling do what the official
flattened fp16 master copy did.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import yaml

from iterview.config import ADMConfig, read_mapping, tiny_adm_config
from iterview.data.pairs import TRAIN_AUGMENTS
from iterview.data.synth import CATEGORIES
from iterview.errors import parse_problem

MIXED_PRECISION = ("no", "fp16", "bf16")
LR_SCHEDULES = ("constant", "cosine")
_NUMBER_TYPES = {"int": int, "float": float, "int | None": int, "float | None": float}
CONDITION_CHANNELS = 6  # G_c input adds mask_rgb, condition RGB, condition depth and mask to x_t


@dataclass
class TrainConfig:
    """One training run of G_u (in_channels == out_channels) or G_c (in_channels == out_channels + 6).

    The effective batch of one optimiser step is batch_size × grad_accum × number of processes.
    """

    model: ADMConfig
    data_dir: str = ""
    batch_size: int = 16  # per process and micro-batch
    grad_accum: int = 1  # micro-batches per optimiser step, losses averaged (official batch_split summed them)
    max_steps: int = 1_000_000
    learning_rate: float = 1e-4
    lr_schedule: str = "constant"  # or "cosine": from learning_rate down to 0 at max_steps (no warm-up)
    weight_decay: float = 0.0
    ema_rate: float = 0.9999
    ema_warmup: bool = False  # rate min(ema_rate, (1 + step) / (10 + step)), so a short run's EMA is not its init
    min_snr_gamma: float | None = None  # Min-SNR-γ loss weighting; None = the official unweighted ε-MSE
    depth_loss_weight: float = 1.0  # weight of the depth channel's ε-error against the colour channels' (official 1)
    p_uncond: float = 0.1  # label dropout to the null class -1, for classifier-free guidance
    mixed_precision: str = "no"
    grad_clip: float | None = None  # max global grad norm; None = no clipping (official)
    compile: bool = False
    channels_last: bool = False  # NHWC weights: faster convolutions on CPUs (oneDNN), above all with bf16
    timesteps: int = 1000
    augments: list[str] = field(default_factory=lambda: list(TRAIN_AUGMENTS))  # G_c warp augmentations
    camera_std: float = 0.15  # G_c side-camera jitter (official WarpDataset std)
    warp_pixel_scale: float = 1.0  # official 128-px pixels per pixel: scales warp tolerances and erosion (4 at 32 px)
    num_workers: int = 4
    seed: int = 0
    log_every: int = 500
    sample_every: int = 10_000
    save_every: int = 50_000
    keep_last: int | None = 3  # checkpoints kept; None keeps all
    num_samples: int = 8
    sample_steps: int = 50  # DDIM steps of the periodic sample grids
    guidance: float = 3.0  # CFG strength w of the sample grids (official 3)

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            self.model = ADMConfig.from_dict(self.model)
        for f in fields(self):
            # YAML reads 1e-4 as a string (1.0e-4 is a float), so numbers are coerced by declared type
            kind = _NUMBER_TYPES.get(f.type)
            value = getattr(self, f.name)
            if kind is not None and value is not None and not isinstance(value, bool):
                try:
                    setattr(self, f.name, kind(str(value)))  # str: int() must not truncate 1.5
                except (TypeError, ValueError) as e:
                    expected = "an integer" if kind is int else "a number"
                    raise ValueError(f"{f.name} must be {expected}, found {value!r}") from e
        self.augments = list(self.augments)
        if self.model.use_fp16:
            raise ValueError("model.use_fp16 is for inference; train in fp32 with mixed_precision: fp16 instead")
        extra = self.model.in_channels - self.model.out_channels
        if extra not in (0, CONDITION_CHANNELS):
            raise ValueError(
                f"model.in_channels must be out_channels ({self.model.out_channels}, G_u) or out_channels + "
                f"{CONDITION_CHANNELS} (G_c), found {self.model.in_channels}"
            )
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, found {self.lr_schedule!r}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision must be one of {MIXED_PRECISION}, found {self.mixed_precision!r}")
        for name in ("batch_size", "grad_accum", "max_steps", "timesteps", "log_every", "sample_every", "save_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, found {getattr(self, name)}")
        if self.keep_last is not None and self.keep_last < 1:
            raise ValueError(f"keep_last must be >= 1 or null (keep all), found {self.keep_last}")
        if not 0.0 <= self.ema_rate < 1.0:
            raise ValueError(f"ema_rate must be in [0, 1), found {self.ema_rate}")
        if not 0.0 <= self.p_uncond <= 1.0:
            raise ValueError(f"p_uncond must be in [0, 1], found {self.p_uncond}")
        if not self.depth_loss_weight > 0.0:
            raise ValueError(f"depth_loss_weight must be > 0, found {self.depth_loss_weight}")

    @property
    def inpaint(self) -> bool:
        """True for G_c: the model takes the 10-channel warped-condition input and trains on warp pairs."""
        return self.model.in_channels != self.model.out_channels

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """From a mapping of fields (`model` as a mapping); `preset: NAME` starts from that preset."""
        data = dict(data)
        preset = data.pop("preset", None)
        if preset is not None:
            data = _merge(get_preset(preset).to_dict(), data)
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown training config keys {unknown}; expected a subset of {sorted(names)}")
        if "model" not in data:
            raise ValueError("the training config needs `model` (the U-Net arguments) or a `preset`")
        return cls(**data)

    def to_dict(self) -> dict:
        """The config as plain JSON values (the model's config nested under `model`)."""
        return {**asdict(self), "model": self.model.to_dict()}

    def save(self, path: str | Path) -> Path:
        """Write the config as JSON (also valid YAML)."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path


def load_config(
    path: str | Path | None = None, preset: str | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> TrainConfig:
    """A config from a YAML/JSON file and/or a preset, then `key=value` overrides (dotted keys reach into
    `model`, values parsed as YAML: `batch_size=4`, `model.num_classes=null`, `augments=[blur]`)."""
    data: dict = {}
    if preset is not None:
        data["preset"] = preset
    if path is not None:
        data = _merge(data, read_mapping(path, "training config"))
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override must look like key=value, found {item!r}")
        *parents, leaf = key.split(".")
        target = data
        for part in parents:
            target = target.setdefault(part, {})
        try:
            target[leaf] = yaml.safe_load(value)
        except yaml.YAMLError as error:
            raise ValueError(f"override {item!r}: the value is not valid YAML: {parse_problem(error)}") from None
    if not data:
        raise ValueError("give a config file or a preset")
    return TrainConfig.from_dict(data)


def get_preset(name: str) -> TrainConfig:
    """A copy of a named preset (PRESETS); a ValueError lists the names for an unknown one."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return copy.deepcopy(PRESETS[name])


def _merge(base: dict, update: dict) -> dict:
    """Recursive dict update (nested `model` mappings merge key by key)."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _official_model(in_channels: int, model_channels: int, num_classes: int | None) -> ADMConfig:
    """The U-Net shared by all official 128-px configs (configs/*.json backbone args)."""
    return ADMConfig(
        image_size=128,
        in_channels=in_channels,
        model_channels=model_channels,
        out_channels=4,
        num_res_blocks=2,
        attention_resolutions=[32, 16, 8],
        channel_mult=[1, 1, 2, 3, 4],
        num_classes=num_classes,
        has_null_class=num_classes is not None,
        num_groups=32,
        num_head_channels=64,
    )


def _tiny_model(in_channels: int) -> ADMConfig:
    """A 32-px class-conditional U-Net for CPU runs on the synthetic dataset (one class per category)."""
    return tiny_adm_config(32, in_channels, 32, num_classes=len(CATEGORIES))


def _synth_model(in_channels: int) -> ADMConfig:
    """The shipped synth-benchmark U-Net: 32 px, four levels down to 4 px (global shape at no extra CPU cost)."""
    return ADMConfig(
        image_size=32,
        in_channels=in_channels,
        model_channels=32,
        out_channels=4,
        num_res_blocks=1,
        attention_resolutions=[16, 8],
        channel_mult=[1, 2, 2, 2],
        num_classes=len(CATEGORIES),
        has_null_class=True,
        num_groups=8,
        num_head_channels=16,
    )


_OFFICIAL_TRAINER = {"log_every": 500, "sample_every": 10_000, "save_every": 50_000, "max_steps": 1_000_000}
_TINY_TRAINER = {
    "batch_size": 8,
    "max_steps": 2000,
    "learning_rate": 5e-4,  # a 0.8M-parameter model tolerates it and learns far sooner than at 1e-4
    "ema_rate": 0.995,
    "num_workers": 0,
    "log_every": 50,
    "sample_every": 500,
    "save_every": 500,
    "sample_steps": 10,
}

# The synth benchmark recipe (see iterview/weights/synth/MODEL_CARD.md): small-scale speed-ups over the official
# trainer, which are Min-SNR-5 weighting, EMA warm-up, lr 1e-3 and gradient clipping.
_SYNTH_TRAINER = {
    "batch_size": 32,
    "learning_rate": 1e-3,
    "ema_rate": 0.999,
    "ema_warmup": True,
    "min_snr_gamma": 5.0,
    "grad_clip": 1.0,
    "num_workers": 0,
    "log_every": 50,
    "sample_every": 500,
    "save_every": 250,
    "sample_steps": 20,
    "guidance": 1.0,
}

_SYNTH_REFINE = {"mixed_precision": "bf16", "channels_last": True}

PRESETS: dict[str, TrainConfig] = {
    # official configs/*.json; use_fp16 true there -> mixed_precision fp16 here
    "rgbd_imagenet_adm_128_large_cfg": TrainConfig(_official_model(4, 256, 1000), batch_size=16, **_OFFICIAL_TRAINER),
    "rgbd_imagenet_adm_128_large_cond": TrainConfig(
        _official_model(10, 256, 1000), batch_size=16, mixed_precision="fp16", **_OFFICIAL_TRAINER
    ),
    "rgbd_singlecategory_adm_128_small": TrainConfig(
        _official_model(4, 128, None), batch_size=8, mixed_precision="fp16", **_OFFICIAL_TRAINER
    ),
    "rgbd_singlecategory_adm_128_small_cond": TrainConfig(
        _official_model(10, 128, None), batch_size=8, mixed_precision="fp16", **_OFFICIAL_TRAINER
    ),
    "tiny": TrainConfig(_tiny_model(4), **_TINY_TRAINER),
    "tiny_cond": TrainConfig(_tiny_model(10), **_TINY_TRAINER),
    "synth_u": TrainConfig(_synth_model(4), max_steps=2750, **_SYNTH_TRAINER),
    "synth_c": TrainConfig(_synth_model(10), max_steps=2750, warp_pixel_scale=4.0, **_SYNTH_TRAINER),
    # The second stage of the shipped models (--init-from the first stage's EMA): bf16 + channels_last for speed,
    # G_u back to the official unweighted ε-MSE (Min-SNR-5 left its low-noise end, the fine grain, undertrained),
    # G_c as a v-prediction network (it copies the condition at high noise, where ε-prediction cannot).
    "synth_u_refine": TrainConfig(
        _synth_model(4),
        max_steps=4750,
        **(_SYNTH_TRAINER | _SYNTH_REFINE | {"learning_rate": 5e-4, "min_snr_gamma": None}),
    ),
    "synth_c_refine": TrainConfig(
        replace(_synth_model(10), prediction="v"),
        max_steps=3250,
        warp_pixel_scale=4.0,
        **(_SYNTH_TRAINER | _SYNTH_REFINE),
    ),
}
# The third stage (--init-from the second stage's EMA): the second stage's recipe, lr annealed to 0 by a cosine.
PRESETS["synth_u_anneal"] = replace(PRESETS["synth_u_refine"], max_steps=5000, lr_schedule="cosine")
PRESETS["synth_c_anneal"] = replace(PRESETS["synth_c_refine"], max_steps=3500, lr_schedule="cosine")
# The fourth stage of G_c (--init-from the third stage's EMA): the depth channel's error weighted 4x, annealed again.
PRESETS["synth_c_depth"] = replace(PRESETS["synth_c_anneal"], max_steps=5000, learning_rate=5e-4, depth_loss_weight=4.0)
