"""Training checkpoints, written whole or not at all.

Layout of `<output>/checkpoints/step_0001000/`:
- `model/`, `ema/`: `model.safetensors` + `config.json` each, loadable by `load_model` for sampling;
- `optimizer.safetensors`: the optimiser state (tensors; the rest as JSON metadata);
- `rng.safetensors`: every process's generator states, one row per rank;
- `state.json`: step, data position, loss-scaler state and the training config.
The folder is assembled under a hidden temporary name and renamed into place, so a crash never leaves a
half-written checkpoint behind a valid name.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from iterview.config import ADMConfig
from iterview.errors import UserError, read_json
from iterview.io import atomic_path
from iterview.models.checkpoint import load_weights, read_state_dict, save_model

CHECKPOINTS = "checkpoints"
_STEP_DIR = re.compile(r"step_(\d+)")


@dataclass
class TrainState:
    """Where a run stands: optimiser steps done and the next batch (per process) of the data order."""

    step: int = 0
    epoch: int = 0
    batch: int = 0
    world_size: int = 1
    scaler: dict | None = None
    consistency: dict = field(default_factory=dict)  # max |difference| between ranks of weight fingerprints


def checkpoint_dirs(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(output_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _STEP_DIR.fullmatch(p.name)]
    return sorted(found, key=lambda p: int(p.name[5:]))


def checkpoint_path(output_dir: str | Path, step: int) -> Path:
    """The folder of the checkpoint at step."""
    return Path(output_dir) / CHECKPOINTS / f"step_{step:07d}"


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint folder, or None."""
    dirs = checkpoint_dirs(output_dir)
    return dirs[-1] if dirs else None


def weights_dir(path: str | Path) -> Path:
    """The weights to sample from or fine-tune from: a model folder, or the EMA of a checkpoint, or the EMA of
    the latest checkpoint of a run folder. Files (official `.pt`, `.safetensors`) are returned unchanged."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"weights not found: {path}")
    if path.is_file() or (path / "model.safetensors").is_file():
        return path
    if (path / "ema" / "model.safetensors").is_file():
        return path / "ema"
    latest = latest_checkpoint(path)
    if latest is None:
        raise FileNotFoundError(
            f"{path} holds no model.safetensors, ema/ or {CHECKPOINTS}/step_*: expected a model folder, a "
            "checkpoint or a training run"
        )
    return latest / "ema"


def save_checkpoint(
    output_dir: str | Path,
    state: TrainState,
    model: nn.Module,
    ema: nn.Module,
    model_config: ADMConfig,
    optimizer: torch.optim.Optimizer,
    rng: dict[str, torch.Tensor],
    train_config: dict,
    keep_last: int | None = None,
) -> Path:
    """Write checkpoint `step_{step:07d}` atomically, then drop all but the newest keep_last."""
    final = checkpoint_path(output_dir, state.step)
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # left by a crash during an earlier save
    tmp.mkdir(parents=True)
    try:
        save_model(model, model_config, tmp / "model")
        save_model(ema, model_config, tmp / "ema")
        tensors, meta = _flatten_optimizer(optimizer.state_dict())
        # Through atomic_path for its umask handling: safetensors itself creates files 0600.
        with atomic_path(tmp / "optimizer.safetensors") as file:
            save_file(tensors, file, metadata={"optimizer": json.dumps(meta)})
        with atomic_path(tmp / "rng.safetensors") as file:
            save_file({k: v.contiguous().cpu() for k, v in rng.items()}, file)
        (tmp / "state.json").write_text(json.dumps({**asdict(state), "config": train_config}, indent=2) + "\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if keep_last is not None:
        for old in checkpoint_dirs(output_dir)[:-keep_last]:
            shutil.rmtree(old)
    return final


def load_checkpoint(
    directory: str | Path, model: nn.Module, ema: nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[TrainState, dict[str, torch.Tensor]]:
    """Restore weights and optimiser state in place; returns the run state and the per-rank RNG rows."""
    directory = Path(directory)
    load_weights(model, read_state_dict(directory / "model"))
    load_weights(ema, read_state_dict(directory / "ema"))
    opt_file = directory / "optimizer.safetensors"
    with safe_open(opt_file, framework="pt") as f:
        meta = json.loads(f.metadata()["optimizer"])
    optimizer.load_state_dict(_unflatten_optimizer(load_file(opt_file), meta))
    saved = read_json(directory / "state.json", "training state")
    try:
        state = TrainState(**{key: value for key, value in saved.items() if key != "config"})
    except (TypeError, AttributeError):
        why = "not the fields of a training state"
        raise UserError(
            "unreadable training state", directory / "state.json", why, "resume from another checkpoint"
        ) from None
    return state, load_file(directory / "rng.safetensors")


def _flatten_optimizer(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimiser state_dict -> safetensors tensors `state.{param}.{name}` + JSON for everything else."""
    tensors, scalars = {}, {}
    for index, entries in state_dict["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{name}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    for key, value in meta["scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    # JSON turned tuples (AdamW betas) into lists
    groups = [
        {k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in g.items()}
        for g in meta["param_groups"]
    ]
    return {"state": state, "param_groups": groups}
