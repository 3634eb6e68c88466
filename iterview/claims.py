"""Which job owns an output folder: `prepare`, `synth` and `convert` never write into a folder that holds
another dataset or model unless told to (`--overwrite`), so a rerun can resume but never replace data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from iterview.errors import UserError, read_json
from iterview.io import atomic_path

PREPARE_FILE = "prepare.json"
SYNTH_FILE = "synth.json"
# What a dataset folder may hold; --overwrite removes exactly these, never anything else.
DATASET_ENTRIES = ("images", "depths", "dataset.json", SYNTH_FILE, PREPARE_FILE, "prepare_report.json")
MODEL_ENTRIES = ("model.safetensors", "config.json")
_OWNERS = {SYNTH_FILE: "synth", PREPARE_FILE: "prepare", "benchmark.json": "benchmark", "checkpoints": "training"}


def folder_owner(root: Path) -> str | None:
    """What made the dataset or model in root: synth, prepare, benchmark, training, model, dataset (an index
    or images of unknown origin), or None for a missing or dataset-free folder."""
    for name, owner in _OWNERS.items():
        if (root / name).exists():
            return owner
    if any((root / name).exists() for name in MODEL_ENTRIES):
        return "model"
    if any((root / name).exists() for name in DATASET_ENTRIES):
        return "dataset"
    return None


def claim_dataset(
    root: Path, job: str, record: dict, overwrite: bool, option: str = "OUT_DIR", clear: bool = True
) -> None:
    """Let `job` (prepare or synth) write into root: refuse a folder holding another dataset (another job's,
    or this job's with another `record`) unless overwrite, which first removes the old dataset's files (only
    where clear: the main process of a multi-process run)."""
    owner = folder_owner(root)
    found = _record(root, job) if owner == job else None
    if owner is None or (owner == job and found == record):
        return
    if not overwrite:
        why = (
            f"it holds a {job} dataset made with other settings ({_changes(found, record)})"
            if owner == job
            else f"it holds {'a ' + owner if owner != 'dataset' else 'another'} dataset or model"
        )
        raise UserError(
            f"refusing to write a {job} dataset",
            f"{option} {root}",
            why,
            "pass another folder, the same settings to resume, or --overwrite to replace it",
        )
    if owner in ("training", "model", "benchmark"):
        raise UserError(
            f"refusing to write a {job} dataset",
            f"{option} {root}",
            f"it holds a {owner}, not a dataset",
            "pass another folder",
        )
    for name in DATASET_ENTRIES if clear else ():
        path = root / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def write_record(root: Path, job: str, record: dict) -> None:
    """Record what a prepare run was made with (synth keeps its own synth.json)."""
    if job == "prepare":
        with atomic_path(root / PREPARE_FILE) as tmp:
            tmp.write_text(json.dumps(record, indent=1))


def claim_model_dir(directory: Path, overwrite: bool, option: str = "--output") -> None:
    """Refuse to write a model into a folder that already holds one (or a dataset, a run) unless overwrite."""
    owner = folder_owner(directory)
    if owner is None or (owner == "model" and overwrite):
        return
    raise UserError(
        "refusing to write a model",
        f"{option} {directory}",
        f"it already holds a {owner}",
        "pass another folder" + (", or --overwrite to replace the model" if owner == "model" else ""),
    )


def _record(root: Path, job: str) -> dict | None:
    if job == "synth":
        found = read_json(root / SYNTH_FILE, "synth dataset record")
        found = {k: found.get(k) for k in ("seed", "image_size", "style")} if isinstance(found, dict) else None
        if found is not None and found["style"] is None:
            found["style"] = "classic"
        return found
    return read_json(root / PREPARE_FILE, "prepare record")


def _changes(found: dict | None, record: dict) -> str:
    found = found or {}
    return ", ".join(f"{k}: {found.get(k)!r} -> {record[k]!r}" for k in record if found.get(k) != record.get(k))
