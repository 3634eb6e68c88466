"""Generated scenes on disk without pickle: npz of plain arrays + JSON cameras."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from iterview.errors import npz_error, read_json
from iterview.geometry.cameras import zbuffer_to_linear
from iterview.geometry.inference import OFFICIAL_GEOMETRY, InferenceGeometry
from iterview.geometry.mesh import FUSION_PADDING, Mesh, map_mesh, rgbd_to_mesh
from iterview.io import atomic_path, write_json

SCENE_FORMAT = "iterview.scene"
# Version 2 records the inference geometry; version 1 files carry only fov, near and far (the rest official).
SCENE_VERSION = 2
READABLE_VERSIONS = (1, 2)


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez_compressed with fixed zip timestamps, so the same scene always gives the same bytes."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w") as file:
                np.lib.format.write_array(file, np.ascontiguousarray(array), allow_pickle=False)


def _stem(path: str | Path) -> Path:
    path = Path(path)
    return path.with_suffix("") if path.suffix in (".npz", ".json") else path


@dataclass
class Scene:
    """rgbd: (V, 4, H, W) in [-1, 1], depth channel = z-buffer of the geometry's (near, far); modelviews:
    (V, 4, 4); geometry: how the views were sampled, and so how they are meshed, rendered and measured.

    known: optional (V, 1, H, W) bool, the pixels of each view that were conditioned on earlier views (the
    aggregation mask); seed: the instance's seed; info: how the scene was made (JSON-serialisable, e.g. the
    models and depth source of a lifted photo); made_by: the record of the run that sampled it
    (`iterview.pipeline.runinfo.run_record`).
    """

    rgbd: torch.Tensor
    modelviews: torch.Tensor
    geometry: InferenceGeometry = OFFICIAL_GEOMETRY
    label: int | None = None
    seed: int | None = None
    known: torch.Tensor | None = None
    info: dict | None = None
    made_by: dict | None = None

    def __post_init__(self) -> None:
        views = self.rgbd.shape[0]
        if self.rgbd.ndim != 4 or self.rgbd.shape[1] != 4 or self.rgbd.shape[2] != self.rgbd.shape[3]:
            raise ValueError(f"scene rgbd must be (V, 4, N, N), got {tuple(self.rgbd.shape)}")
        if self.modelviews.shape != (views, 4, 4):
            raise ValueError(f"scene modelviews must be ({views}, 4, 4), got {tuple(self.modelviews.shape)}")
        if self.known is not None and self.known.shape != (views, 1, *self.rgbd.shape[2:]):
            raise ValueError(f"scene known mask must be ({views}, 1, H, W), got {tuple(self.known.shape)}")

    def __len__(self) -> int:
        return self.rgbd.shape[0]

    @property
    def fov(self) -> float:
        """Field of view in degrees."""
        return self.geometry.fov

    @property
    def near(self) -> float:
        """Near plane of the depth channel's z-buffer."""
        return self.geometry.near

    @property
    def far(self) -> float:
        """Far plane of the depth channel's z-buffer."""
        return self.geometry.far

    @property
    def depth(self) -> torch.Tensor:
        """Linear depth along -z: (V, 1, H, W)."""
        return zbuffer_to_linear(self.rgbd[:, 3:] * 0.5 + 0.5, self.near, self.far)

    def to(self, device: torch.device | str) -> Scene:
        """The same scene (every field) with its tensors on device."""
        known = None if self.known is None else self.known.to(device)
        return replace(self, rgbd=self.rgbd.to(device), modelviews=self.modelviews.to(device), known=known)

    def meshes(
        self, padding: int | Literal["frustum"] | None = FUSION_PADDING
    ) -> tuple[list[Mesh], list[torch.Tensor]]:
        """One mesh (batch 1) and texture (1, 3, N, N) per view, meshed with the scene's geometry; the default
        padding as the official `load_scene`."""
        mesh, texture = rgbd_to_mesh(self.rgbd, self.modelviews, self.geometry, padding)
        return [map_mesh(mesh, lambda v, i=view: v[i : i + 1]) for view in range(len(self))], list(texture.split(1))

    def save(self, path: str | Path) -> Path:
        """Atomically write `<path>.npz` (arrays) and `<path>.json` (cameras, metadata); the JSON is written last
        so its presence marks a complete scene. Returns the .npz path."""
        stem = _stem(path)
        arrays = {"rgbd": self.rgbd.detach().float().cpu().numpy()}
        if self.known is not None:
            arrays["known"] = self.known.detach().bool().cpu().numpy()
        with atomic_path(stem.with_suffix(".npz")) as tmp:
            _write_npz(tmp, arrays)
        meta = {
            "format": SCENE_FORMAT,
            "version": SCENE_VERSION,
            "views": len(self),
            "image_size": self.rgbd.shape[-1],
            "geometry": self.geometry.to_dict(),
            "label": self.label,
            "seed": self.seed,
            "modelviews": self.modelviews.detach().float().cpu().tolist(),
        }
        if self.info is not None:
            meta["info"] = self.info
        if self.made_by is not None:
            meta["made_by"] = self.made_by
        write_json(meta, stem.with_suffix(".json"))
        return stem.with_suffix(".npz")

    @classmethod
    def load(cls, path: str | Path) -> Scene:
        """Read a scene written by `save` (path with or without .npz/.json). Never unpickles."""
        stem = _stem(path)
        for file in (stem.with_suffix(".npz"), stem.with_suffix(".json")):
            if not file.is_file():
                raise FileNotFoundError(f"scene file not found: {file} (a scene is a .npz + .json pair)")
        meta = read_json(stem.with_suffix(".json"), "scene file")
        if not isinstance(meta, dict) or meta.get("format") != SCENE_FORMAT:
            found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
            raise ValueError(f"{stem}.json: expected format {SCENE_FORMAT!r}, got {found!r}")
        if meta.get("version") not in READABLE_VERSIONS:
            raise ValueError(f"{stem}.json: unsupported scene version {meta.get('version')} (expected {SCENE_VERSION})")
        try:
            with np.load(stem.with_suffix(".npz"), allow_pickle=False) as data:
                if "rgbd" not in data:
                    raise ValueError(f"{stem}.npz: expected an 'rgbd' array, found {sorted(data.files)}")
                rgbd = torch.from_numpy(data["rgbd"]).float()
                known = torch.from_numpy(data["known"]) if "known" in data else None
        except (zipfile.BadZipFile, EOFError, OSError, KeyError) as error:
            raise npz_error(stem.with_suffix(".npz"), error) from None
        geometry = _read_geometry(meta, stem)
        try:
            return cls(
                rgbd=rgbd,
                modelviews=torch.tensor(meta["modelviews"], dtype=torch.float32),
                geometry=geometry,
                label=meta.get("label"),
                seed=meta.get("seed"),
                known=known,
                info=meta.get("info"),
                made_by=meta.get("made_by"),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{stem}.json does not describe this scene: {type(error).__name__} {error}") from None


def _read_geometry(meta: dict, stem: Path) -> InferenceGeometry:
    """The scene's geometry; a version 1 file records only fov, near and far, the rest is official."""
    values = meta.get("geometry", {k: meta[k] for k in ("fov", "near", "far") if k in meta})
    if not isinstance(values, dict):
        raise ValueError(f"{stem}.json: 'geometry' must be an object, got {type(values).__name__}")
    try:
        return InferenceGeometry.from_dict(values)
    except ValueError as error:
        raise ValueError(f"{stem}.json: {error}") from error


def find_scenes(path: str | Path) -> list[Path]:
    """Scene stems (a .json with its .npz) of a scene file, or under a folder recursively, sorted."""
    path = Path(path)
    if path.suffix in (".npz", ".json"):
        stem = path.with_suffix("")
        for file in (stem.with_suffix(".npz"), stem.with_suffix(".json")):
            if not file.is_file():
                raise FileNotFoundError(f"scene file not found: {file} (a scene is a .npz + .json pair)")
        return [stem]
    if not path.is_dir():
        raise FileNotFoundError(f"expected a scene file, a scenes folder or a run folder, found nothing at {path}")
    stems = sorted(p.with_suffix("") for p in path.rglob("*.json") if p.with_suffix(".npz").is_file())
    if not stems:
        raise FileNotFoundError(f"no scenes (a .json + .npz pair each) under {path}")
    return stems
