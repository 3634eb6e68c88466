"""Generated scenes on disk without pickle: npz of plain arrays + JSON cameras."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from iterview.errors import npz_error, read_json
from iterview.geometry.cameras import zbuffer_to_linear
from iterview.geometry.mesh import Mesh, depth_to_mesh
from iterview.io import atomic_path

SCENE_FORMAT = "iterview.scene"
SCENE_VERSION = 1
# Official meshing: 'frustum' skirts while sampling (§6.2), numeric padding 32 px when re-fusing saved scenes (§6.5).
SAMPLING_PADDING = "frustum"
FUSION_PADDING = 32


def rgbd_to_mesh(
    rgbd: torch.Tensor,
    modelview: torch.Tensor,
    near: float = 0.6,
    far: float = 5.0,
    fov: float = 45.0,
    padding: int | Literal["frustum"] | None = SAMPLING_PADDING,
    atol: float = 0.03,
    rtol: float = 0.03,
    erode_rgb: int = 3,
) -> tuple[Mesh, torch.Tensor]:
    """Official meshing of generated views. rgbd: (B, 4, N, N) in [-1, 1], depth channel = z-buffer (near, far);
    modelview: (B, 4, 4). Returns the mesh (with normals) and its texture (B, 3, N, N) = rgb·0.5 + 0.5, unclipped
    as in the official code."""
    x = rgbd * 0.5 + 0.5
    depth = zbuffer_to_linear(x[:, 3], near, far)
    mesh = depth_to_mesh(
        depth, modelview, fov=fov, padding=padding, atol=atol, rtol=rtol, erode_rgb=erode_rgb, compute_normals=True
    )
    return mesh, x[:, :3]


def map_mesh(mesh: Mesh, fn: Callable[[torch.Tensor], torch.Tensor]) -> Mesh:
    """Apply fn to every batched tensor of a mesh (e.g. to slice or expand the batch)."""
    tensors = {k: getattr(mesh, k) for k in ("position", "uv", "flag", "faces", "modelview", "normal")}
    return replace(mesh, **{k: fn(v) for k, v in tensors.items() if v is not None})


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
    """rgbd: (V, 4, H, W) in [-1, 1], depth channel = z-buffer for (near, far); modelviews: (V, 4, 4).

    known: optional (V, 1, H, W) bool, the pixels of each view that were conditioned on earlier views (the
    aggregation mask); seed: the instance's seed; made_by: the record of the run that sampled it
    (`iterview.pipeline.runinfo.run_record`).
    """

    rgbd: torch.Tensor
    modelviews: torch.Tensor
    fov: float = 45.0
    near: float = 0.6
    far: float = 5.0
    label: int | None = None
    seed: int | None = None
    known: torch.Tensor | None = None
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

    def to(self, device: torch.device | str) -> Scene:
        """The same scene with its tensors on device (every field kept)."""
        known = None if self.known is None else self.known.to(device)
        return replace(self, rgbd=self.rgbd.to(device), modelviews=self.modelviews.to(device), known=known)

    @property
    def depth(self) -> torch.Tensor:
        """Linear depth along -z: (V, 1, H, W)."""
        return zbuffer_to_linear(self.rgbd[:, 3:] * 0.5 + 0.5, self.near, self.far)

    def meshes(
        self,
        padding: int | Literal["frustum"] | None = FUSION_PADDING,
        atol: float = 0.03,
        rtol: float = 0.03,
        erode_rgb: int = 3,
    ) -> tuple[list[Mesh], list[torch.Tensor]]:
        """One mesh (batch 1) and texture (1, 3, N, N) per view; defaults as the official `load_scene`."""
        mesh, texture = rgbd_to_mesh(
            self.rgbd, self.modelviews, self.near, self.far, self.fov, padding, atol, rtol, erode_rgb
        )
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
            "fov": self.fov,
            "near": self.near,
            "far": self.far,
            "label": self.label,
            "seed": self.seed,
            "modelviews": self.modelviews.detach().float().cpu().tolist(),
        }
        if self.made_by is not None:
            meta["made_by"] = self.made_by
        with atomic_path(stem.with_suffix(".json")) as tmp:
            tmp.write_text(json.dumps(meta, indent=1))
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
        if meta.get("version") != SCENE_VERSION:
            raise ValueError(f"{stem}.json: unsupported scene version {meta.get('version')} (expected {SCENE_VERSION})")
        try:
            with np.load(stem.with_suffix(".npz"), allow_pickle=False) as data:
                if "rgbd" not in data:
                    raise ValueError(f"{stem}.npz: expected an 'rgbd' array, found {sorted(data.files)}")
                rgbd = torch.from_numpy(data["rgbd"]).float()
                known = torch.from_numpy(data["known"]) if "known" in data else None
        except (zipfile.BadZipFile, EOFError, OSError, KeyError) as error:
            raise npz_error(stem.with_suffix(".npz"), error) from None
        try:
            return cls(
                rgbd=rgbd,
                modelviews=torch.tensor(meta["modelviews"], dtype=torch.float32),
                fov=float(meta["fov"]),
                near=float(meta["near"]),
                far=float(meta["far"]),
                label=meta.get("label"),
                seed=meta.get("seed"),
                known=known,
                made_by=meta.get("made_by"),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{stem}.json does not describe this scene: {type(error).__name__} {error}") from None
