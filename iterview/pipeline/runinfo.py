"""What made a sampling run: the identity of G_u and G_c, samplers, guidance and meshing, recorded in the run
folder (`run.json`) and in every scene file, so that a resumed run never mixes scenes of different models or
settings, and a scene file that is incomplete is sampled again."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from iterview.errors import UserError, read_json
from iterview.io import atomic_path
from iterview.validate import model_identity, network_identity

RUN_FILE = "run.json"
RUN_FORMAT = "iterview.run"


def run_record(
    weights_u: Path, model_u, weights_c: Path | None, model_c, sampler_u, sampler_c, guidance, geometry
) -> dict:
    """The identity of a run: content hashes of the models (weights + config), samplers, guidance, geometry.
    model_*: ADMConfig; sampler_*: SamplerChoice; guidance: Guidance; geometry: InferenceGeometry. In its JSON
    form (tuples as lists), so that it compares equal to the record read back from a run folder."""
    record = {
        "uncond": model_identity(weights_u, model_u),
        "cond": None if weights_c is None else model_identity(weights_c, model_c),
        "sampler_uncond": asdict(sampler_u),
        "sampler_cond": asdict(sampler_c),
        "guidance": asdict(guidance),
        "geometry": asdict(geometry),
    }
    return json.loads(json.dumps(record))


def pipeline_record(pipeline) -> dict:
    """The identity of a run sampled with a loaded MultiViewPipeline (e.g. the demo's): hashes of its G_u's and
    G_c's parameters, its samplers, guidance and geometry, in JSON form as `run_record`."""
    record = {
        "uncond": network_identity(pipeline.g_u),
        "cond": None if pipeline.g_c is None else network_identity(pipeline.g_c),
        "sampler_uncond": asdict(pipeline.sampler_uncond),
        "sampler_cond": asdict(pipeline.sampler_cond),
        "guidance": asdict(pipeline.guidance),
        "geometry": asdict(pipeline.geometry),
    }
    return json.loads(json.dumps(record))


def differences(found: dict, expected: dict) -> list[str]:
    """The top-level keys in which two records differ."""
    return sorted(key for key in {*found, *expected} if found.get(key) != expected.get(key))


def claim_record(path: Path, record: dict, scenes: Iterable[Path], what: str, option: str) -> bool:
    """Claim `what`, the folder of record file `path`, for `record`: True when it already holds that record; one
    of other models or settings, or `scenes` there without a record, is a UserError pointing to `option`; else
    the record (format + record) is written and False returned."""
    if path.is_file():
        found = read_json(path, f"{what} record")
        changed = differences(found.get("made_by", {}) if isinstance(found, dict) else {}, record)
        if changed:
            raise UserError(
                f"{what} made by other models or settings",
                path,
                f"differs in {', '.join(changed)}",
                f"pass another {option}, or the same models and options to resume",
            )
        return True
    if any(scenes):
        why = f"it holds scenes but no {path.name}, so what made them is unknown"
        raise UserError(f"{what} without a record", path.parent, why, f"pass another {option}")
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"format": RUN_FORMAT, "made_by": record}, indent=1))
    return False


@contextmanager
def recorded_run(root: Path, record: dict, option: str = "--output-dir") -> Iterator[Path]:
    """Claim run folder root for `record`: refuse a folder made by other models or settings (the error points
    to `option`, the command's output folder), write run.json (format + record) if new, and take it back again
    if the block fails before any scene was written."""
    path = root / RUN_FILE
    if claim_record(path, record, (root / "scenes").glob("*.json"), "run folder", option):
        yield root
        return
    try:
        yield root
    except BaseException:
        if not any((root / "scenes").glob("*.json")):
            path.unlink(missing_ok=True)
        raise


def scene_is_complete(stem: Path, record: dict) -> bool:
    """Whether scene `stem` (.json + .npz) is finished by this run: its JSON parses, names this run's record,
    and its archive is whole. A scene made by another record is a UserError (never silently redone)."""
    meta_path, npz = stem.with_suffix(".json"), stem.with_suffix(".npz")
    if not meta_path.is_file():
        return False
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    made_by = meta.get("made_by") if isinstance(meta, dict) else None
    if made_by is not None and made_by != record:
        raise UserError(
            "scene made by other models or settings",
            meta_path,
            f"differs in {', '.join(differences(made_by, record))}",
            "move it away or pass another --output-dir",
        )
    try:
        with zipfile.ZipFile(npz) as archive:
            return "rgbd.npy" in archive.namelist() and archive.testzip() is None
    except (OSError, zipfile.BadZipFile, EOFError):
        return False
