"""Models shipped inside the package, loadable by name: `iterview sample --uncond synth --cond synth`.

A shipped set is a folder `iterview/weights/<name>/` with `g_u/` and `g_c/` (our model format), optionally
`classifier/`, an `inference.json` (the geometry and sampling settings the models were trained for) and a
`MODEL_CARD.md`.
"""

from __future__ import annotations

import json
from pathlib import Path

WEIGHTS_ROOT = Path(__file__).resolve().parent.parent / "weights"
ROLES = {"uncond": "g_u", "cond": "g_c", "classifier": "classifier"}
INFERENCE_FILE = "inference.json"


def shipped_names() -> list[str]:
    """Names of the model sets shipped with the package."""
    if not WEIGHTS_ROOT.is_dir():
        return []
    return sorted(p.name for p in WEIGHTS_ROOT.iterdir() if (p / "MODEL_CARD.md").is_file())


def is_shipped(spec: str | Path) -> bool:
    """True if spec names a shipped model set (and no file or folder of that name exists here)."""
    return isinstance(spec, str | Path) and not Path(spec).exists() and str(spec) in shipped_names()


def resolve_model(spec: str | Path, role: str) -> Path:
    """The weights path for `spec`: a shipped set's model for `role` (uncond, cond or classifier), or spec itself."""
    if role not in ROLES:
        raise ValueError(f"unknown model role {role!r}; expected one of {sorted(ROLES)}")
    if not is_shipped(spec):
        return Path(spec)
    path = WEIGHTS_ROOT / str(spec) / ROLES[role]
    if not path.is_dir():
        raise FileNotFoundError(f"the shipped model set {spec!r} has no {role} model ({path})")
    return path


def inference_settings(spec: str | Path) -> dict:
    """The inference settings a shipped set was trained for ({} for anything else): geometry, guidance,
    sampler."""
    if not is_shipped(spec):
        return {}
    path = WEIGHTS_ROOT / str(spec) / INFERENCE_FILE
    return json.loads(path.read_text()) if path.is_file() else {}
