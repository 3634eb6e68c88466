"""Checks of what a user passes, run at the edge of each command before any work is done or folder made:
numeric options, and the G_u / G_c checkpoint pair."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from iterview.errors import UserError
from iterview.training.config import CONDITION_CHANNELS

MAX_GUIDANCE = 100.0  # far beyond any useful strength (the official one is 3); larger values only blow up
RGBD_CHANNELS = 4
MODEL_OPTIONS = {"uncond": "--uncond", "cond": "--cond", "classifier": "--classifier"}


def number(
    option: str,
    value: float,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
    below: float | None = None,
) -> float:
    """value, if finite and within [minimum, maximum] and (above, below) (open bounds); else a UserError."""
    bounds = [
        f">= {minimum:g}" if minimum is not None else "",
        f"> {above:g}" if above is not None else "",
        f"<= {maximum:g}" if maximum is not None else "",
        f"< {below:g}" if below is not None else "",
    ]
    wanted = " and ".join(b for b in bounds if b) or "a number"
    ok = math.isfinite(value)
    ok = ok and (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
    ok = ok and (above is None or value > above) and (below is None or value < below)
    if not ok:
        raise UserError("bad value", option, f"must be finite and {wanted}, got {value}", f"pass {option} {wanted}")
    return value


def at_least(option: str, value: int | None, minimum: int = 1) -> int | None:
    """value (None passes) if it is >= minimum; else a UserError."""
    if value is not None and value < minimum:
        raise UserError("bad value", option, f"must be >= {minimum}, got {value}", f"pass {option} {minimum} or more")
    return value


def depth_range(near: float, far: float, near_option: str = "--near", far_option: str = "--far") -> None:
    """0 < near < far, both finite."""
    number(near_option, near, above=0)
    number(far_option, far)
    if not far > near:
        raise UserError(
            "bad depth range",
            f"{near_option} {near} {far_option} {far}",
            "the far plane must lie beyond the near one",
            f"pass {far_option} greater than {near_option}",
        )


def sampling_options(
    guidance: float,
    fov: float | None,
    near: float | None,
    far: float | None,
    atol: float | None,
    rtol: float | None,
    erode_rgb: int | None,
) -> None:
    """The numeric options of `iterview sample`; None: the option was not given (the geometry's value is used)."""
    from iterview.geometry.inference import OFFICIAL_GEOMETRY

    number("--guidance", guidance, minimum=0, maximum=MAX_GUIDANCE)
    if fov is not None:
        number("--fov", fov, above=0, below=180)
    depth_range(OFFICIAL_GEOMETRY.near if near is None else near, OFFICIAL_GEOMETRY.far if far is None else far)
    for option, value in (("--atol", atol), ("--rtol", rtol)):
        if value is not None:
            number(option, value, minimum=0)
    at_least("--erode-rgb", erode_rgb, 1)


def model_pair(config_u, where_u: str | Path, config_c, where_c: str | Path | None) -> None:
    """G_u takes RGBD (4 channels), G_c RGBD + 6 condition channels (10), at the same resolution; say which
    is which when they are swapped or mismatched. config_*: anything with in_channels, out_channels and
    image_size (an ADMConfig or the ADMUNet itself); config_c None for G_u alone."""
    role_u = _role(config_u)
    if role_u != "G_u":
        swapped = "; it looks like G_c: swap --uncond and --cond" if role_u == "G_c" else ""
        raise UserError(
            "wrong model for G_u",
            f"--uncond {where_u}",
            f"G_u takes {RGBD_CHANNELS} input channels (RGBD), this model takes {config_u.in_channels}{swapped}",
            "pass the unconditional (first-view) model as --uncond",
        )
    if config_c is None:
        return
    role_c = _role(config_c)
    if role_c != "G_c":
        swapped = "; it looks like G_u: swap --uncond and --cond" if role_c == "G_u" else ""
        raise UserError(
            "wrong model for G_c",
            f"--cond {where_c}",
            f"G_c takes {RGBD_CHANNELS + CONDITION_CHANNELS} input channels (RGBD + conditions), this model takes "
            f"{config_c.in_channels}{swapped}",
            "pass the conditional (novel-view) model as --cond",
        )
    if config_u.image_size != config_c.image_size:
        raise UserError(
            "models of different resolutions",
            f"--uncond {where_u} --cond {where_c}",
            f"G_u makes {config_u.image_size}² images, G_c {config_c.image_size}²",
            "pass two models trained at the same image size",
        )


def _role(config) -> str:
    if config.in_channels == config.out_channels == RGBD_CHANNELS:
        return "G_u"
    if config.in_channels == RGBD_CHANNELS + CONDITION_CHANNELS and config.out_channels == RGBD_CHANNELS:
        return "G_c"
    return "other"


def model_identity(weights: str | Path, config) -> str:
    """A content hash (sha256, 16 hex digits) of a model's weights file and its config: what made a run."""
    path = Path(weights)
    digest = file_digest(path / "model.safetensors" if path.is_dir() else path)
    digest.update(json.dumps(config.to_dict(), sort_keys=True).encode())
    return digest.hexdigest()[:16]


def file_digest(path: str | Path):
    """A sha256 hash object fed with a file's bytes (read in 4 MiB blocks); `.hexdigest()` identifies the file."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest


def network_identity(model) -> str:
    """A content hash (sha256, hex) of a loaded network's (an nn.Module's) parameters and buffers, in any dtype;
    a `torch.compile`d module hashes as the module it wraps."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.removeprefix("_orig_mod.").encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def resolve_weights(spec: str | Path, role: str) -> Path:
    """The weights a user names for `role` (uncond, cond, classifier): a shipped set, a training run folder (its
    newest EMA), a checkpoint, a model folder or a weights file; a UserError naming the option otherwise."""
    from iterview.models.shipped import resolve_model, shipped_names
    from iterview.training.state import weights_dir

    try:
        return weights_dir(resolve_model(spec, role))
    except FileNotFoundError as error:
        shipped = ", ".join(shipped_names()) or "none"
        raise UserError(
            f"{role} model not found",
            f"{MODEL_OPTIONS.get(role, role)} {spec}",
            str(error),
            f"pass a shipped model set ({shipped}), a training run folder, a checkpoint, a model folder or an "
            "official .pt with its config",
        ) from None
