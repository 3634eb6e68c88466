"""Camera sets for multi-view sampling: the official `uncond`, `random` and `3x9`, a 360° orbit, cameras on the
swing video path, and custom files of (yaw, pitch, radius) or 4×4 world->camera matrices. Cameras orbit the
origin (view 0 at (0, 0, 1))."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from iterview.errors import parse_problem
from iterview.geometry.cameras import orbit_camera

YAWS_3X9 = (0.0, 0.15, -0.15, 0.30, -0.30, 0.45, -0.45, 0.60, -0.60)
PITCHES_3X9 = (0.0, 0.15, -0.15)
# Official `utils.reorder`: rows are pitch -0.15, 0, +0.15; columns run from yaw +0.6 to -0.6.
GRID_3X9 = (
    (23, 17, 11, 5, 2, 8, 14, 20, 26),
    (21, 15, 9, 3, 0, 6, 12, 18, 24),
    (22, 16, 10, 4, 1, 7, 13, 19, 25),
)
RANDOM_YAW_STD = 0.3
RANDOM_PITCH_STD = 0.15
NAMED_VIEWSETS = ("uncond", "random", "3x9", "orbit", "swing")
# The official swing video path (render.py): yaw 0.6·cos t, pitch 0.15·sin t.
SWING_YAW, SWING_PITCH = 0.6, 0.15


@dataclass
class Viewset:
    """modelviews: (V, 4, 4) world->camera, generated in this order (view 0 by G_u); grid: rows of view
    indices for the display grid (-1 = empty tile)."""

    name: str
    modelviews: torch.Tensor
    grid: tuple[tuple[int, ...], ...]

    def __len__(self) -> int:
        return self.modelviews.shape[0]


def uncond_viewset() -> Viewset:
    """The front camera alone."""
    return Viewset("uncond", orbit_camera(torch.zeros(1), torch.zeros(1)), ((0,),))


def random_viewset(generator: torch.Generator | None = None) -> Viewset:
    """[front, one random camera] with yaw ~ N(0, 0.3²), pitch ~ N(0, 0.15²), unclipped as in the official
    evaluation set, but drawn from `generator` so each instance's camera is reproducible."""
    device = generator.device if generator is not None else None
    draw = torch.randn(2, generator=generator, device=device).cpu() * torch.tensor([RANDOM_YAW_STD, RANDOM_PITCH_STD])
    yaw, pitch = draw.tolist()
    return Viewset("random", orbit_camera(torch.tensor([0.0, yaw]), torch.tensor([0.0, pitch])), ((0, 1),))


def grid_viewset_3x9() -> Viewset:
    """The official 27 views: `for yaw in YAWS: for pitch in PITCHES`, so view k = 3·yaw_index + pitch_index."""
    yaw, pitch = torch.tensor(YAWS_3X9).repeat_interleave(3), torch.tensor(PITCHES_3X9).repeat(9)
    return Viewset("3x9", orbit_camera(yaw, pitch), GRID_3X9)


def orbit_viewset(views: int = 16, pitch: float = 0.0, radius: float = 1.0) -> Viewset:
    """A full 360° orbit in equal yaw steps, generated outward alternately to +yaw and -yaw (like 3x9) so
    both halves meet behind the object; the grid shows one row from +yaw to -yaw around the back."""
    if views < 2:
        raise ValueError(f"an orbit needs at least 2 views, got {views}")
    order = [0, *[k for step in range(1, views) for k in (step, -step)][: views - 1]]
    yaw = torch.tensor(order, dtype=torch.float32) * (2 * math.pi / views)
    display = sorted(range(views), key=lambda i: -order[i])
    return Viewset("orbit", orbit_camera(yaw, torch.full_like(yaw, pitch), radius), (tuple(display),))


def swing_viewset(views: int = 8) -> Viewset:
    """The front view, then `views` cameras on the swing video path at t = 2πk/views, generated nearest to the
    front first, so that the swing video looks only where views were generated. The grid is the 3x9 layout:
    rows pitch −, 0, + (those with a camera), columns from +yaw to −yaw, empty tiles where no camera sits."""
    if views < 2:
        raise ValueError(f"a swing needs at least 2 cameras besides the front, got {views}")
    t = torch.arange(views) * (2 * math.pi / views)
    path = torch.stack([SWING_YAW * t.cos(), SWING_PITCH * t.sin()], dim=1)
    order = sorted(range(views), key=lambda k: (float(path[k].square().sum()), k))
    yaw_pitch = torch.cat([torch.zeros(1, 2), path[order]])
    yaw, pitch = yaw_pitch.unbind(1)
    columns = sorted({round(float(y), 6) for y in yaw}, reverse=True)
    grid = [[-1] * len(columns) for _ in range(3)]
    for view, (y, p) in enumerate(yaw_pitch.tolist()):
        row = 1 if abs(p) < 1e-6 else (0 if p < 0 else 2)
        grid[row][columns.index(round(y, 6))] = view
    rows = tuple(tuple(row) for row in grid if max(row) >= 0)
    return Viewset("swing", orbit_camera(yaw, pitch), rows)


def load_cameras(path: str | Path) -> torch.Tensor:
    """Read a JSON or YAML camera file -> modelviews (V, 4, 4).

    The file is a list (or {"views": [...]}) whose entries are each either {"yaw", "pitch", "radius"}
    (radians; radius defaults to 1) on the orbit around the origin, or a 4×4 world->camera matrix
    (OpenGL camera: x right, y up, looking down -z).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"camera file not found: {path}")
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as error:
        why = parse_problem(error)
        raise ValueError(f"{path}: expected JSON or YAML camera list, could not parse it: {why}") from None
    views = data.get("views") if isinstance(data, dict) else data
    if not isinstance(views, list) or not views:
        raise ValueError(
            f"{path}: expected a non-empty list of cameras (or {{'views': [...]}}), got {type(data).__name__}"
        )
    return torch.stack([_parse_camera(entry, f"{path}: camera {i}") for i, entry in enumerate(views)])


def _parse_camera(entry: object, where: str) -> torch.Tensor:
    if isinstance(entry, dict):
        unknown = set(entry) - {"yaw", "pitch", "radius"}
        if unknown or not {"yaw", "pitch"} <= set(entry):
            raise ValueError(f"{where}: expected keys yaw, pitch and optional radius, got {sorted(entry)}")
        try:
            yaw, pitch = float(entry["yaw"]), float(entry["pitch"])
            radius = float(entry.get("radius", 1.0))
        except (TypeError, ValueError):
            raise ValueError(f"{where}: yaw, pitch and radius must be numbers, got {entry!r}") from None
        if not all(math.isfinite(v) for v in (yaw, pitch, radius)):
            raise ValueError(f"{where}: yaw, pitch and radius must be finite, got {entry!r}")
        if not radius > 0:
            raise ValueError(f"{where}: radius must be positive, got {radius}")
        return orbit_camera(yaw, pitch, radius)
    try:
        matrix = torch.tensor(entry, dtype=torch.float32)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"{where}: expected a {{yaw, pitch, radius}} mapping or a 4×4 matrix, got {entry!r}"
        ) from error
    if matrix.shape != (4, 4) or not torch.isfinite(matrix).all():
        raise ValueError(f"{where}: expected a finite 4×4 matrix, got shape {tuple(matrix.shape)}")
    if not torch.allclose(matrix[3], torch.tensor([0.0, 0.0, 0.0, 1.0])):
        raise ValueError(
            f"{where}: the last row of a world->camera matrix must be [0, 0, 0, 1], got {matrix[3].tolist()}"
        )
    rotation = matrix[:3, :3]
    if not torch.allclose(rotation @ rotation.T, torch.eye(3), atol=1e-4) or rotation.det() < 0:
        raise ValueError(f"{where}: the upper 3×3 block must be a rotation (orthonormal, det +1)")
    return matrix


def custom_viewset(path: str | Path) -> Viewset:
    """Cameras from a file (see `load_cameras`), generated in file order and shown in one row."""
    modelviews = load_cameras(path)
    return Viewset(Path(path).stem, modelviews, (tuple(range(len(modelviews))),))


def make_viewset(spec: str, generator: torch.Generator | None = None) -> Viewset:
    """`uncond`, `random` (drawn from generator), `3x9`, `orbit` / `orbit:N` (N views), `swing` / `swing:N` (the
    front and N cameras on the swing video path), or a camera file."""
    name, _, arg = spec.partition(":")
    if name == "uncond":
        return uncond_viewset()
    if name == "random":
        return random_viewset(generator)
    if name == "3x9":
        return grid_viewset_3x9()
    if name == "orbit":
        if arg and not arg.isdigit():
            raise ValueError(f"expected orbit or orbit:N with N views, got {spec!r}")
        return orbit_viewset(int(arg) if arg else 16)
    if name == "swing":
        if arg and not arg.isdigit():
            raise ValueError(f"expected swing or swing:N with N cameras besides the front, got {spec!r}")
        return swing_viewset(int(arg) if arg else 8)
    if Path(spec).suffix.lower() in (".json", ".yaml", ".yml"):
        return custom_viewset(spec)
    raise ValueError(
        f"unknown viewset {spec!r}: expected one of {', '.join(NAMED_VIEWSETS)}, orbit:N, swing:N or a .json/.yaml file"
    )


def viewset_name(spec: str) -> str:
    """The name used in output folders: the spec for built-ins, the file stem for camera files."""
    return Path(spec).stem if Path(spec).suffix.lower() in (".json", ".yaml", ".yml") else spec.replace(":", "")
