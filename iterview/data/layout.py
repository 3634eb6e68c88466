"""The official dataset layout: images/, depths/*.npz (fp16 disparity under arr_0) and dataset.json.

Single category: images/<name>.<ext>, depths/<name>.npz, dataset.json = {"images", "depths"}.
ImageNet style: images/<class>/<name>.<ext>, depths/<class>/<name>.npz and "labels" {class: index} in
dataset.json, classes sorted by name. Paths in dataset.json are relative to the root.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from iterview.data.images import IMAGE_EXTENSIONS, is_image_file
from iterview.errors import parse_problem
from iterview.io import atomic_path, write_json

INDEX_FILE = "dataset.json"
DEPTH_KEY = "arr_0"


@dataclass
class DatasetIndex:
    """Relative image and depth paths (same order) and, for class folders, the class -> label map."""

    images: list[str]
    depths: list[str]
    labels: dict[str, int] | None = None

    def label_of(self, index: int) -> int | None:
        """The label of item `index`: its image's parent folder name looked up in `labels` (official rule)."""
        if self.labels is None:
            return None
        return self.labels[Path(self.images[index]).parent.name]

    def to_json(self) -> dict:
        """The index as written to index.json (labels first, when there are any)."""
        data: dict = {"images": self.images, "depths": self.depths}
        if self.labels is not None:
            data = {"labels": self.labels, **data}
        return data


def depth_path_for(image_path: str) -> str:
    """images/<...>/<name>.<ext> -> depths/<...>/<name>.npz (only the final suffix is replaced)."""
    relative = Path(image_path).relative_to("images")
    return (Path("depths") / relative.with_suffix(".npz")).as_posix()


def scan_images(folder: str | Path) -> tuple[list[Path], bool]:
    """Image files under `folder`, sorted, relative to it, and whether they sit in class sub-folders.

    Either every image is directly in `folder` (one category) or every image is one level down in a class
    folder; anything else raises ValueError.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    files = sorted(
        p.relative_to(folder)
        for p in folder.rglob("*")
        if p.is_file() and is_image_file(p) and not p.name.startswith(".")
    )
    if not files:
        raise ValueError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) found under {folder}")
    depths = {len(p.parts) for p in files}
    if depths == {1}:
        return files, False
    if depths == {2}:
        return files, True
    raise ValueError(
        f"expected images either all directly in {folder} or all in class folders one level down, found "
        f"images at depths {sorted(depths)} (e.g. {files[0]} and {files[-1]})"
    )


def scan_index(root: str | Path) -> DatasetIndex:
    """Build the index from root/images (as the official loader does on first use, but sorted everywhere)."""
    root = Path(root)
    files, labelled = scan_images(root / "images")
    images = [(Path("images") / p).as_posix() for p in files]
    labels = {name: i for i, name in enumerate(sorted({p.parts[0] for p in files}))} if labelled else None
    return DatasetIndex(images, [depth_path_for(p) for p in images], labels)


def read_index(root: str | Path) -> DatasetIndex:
    """root/dataset.json if present (official or ours), otherwise a fresh scan of root/images."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    path = root / INDEX_FILE
    if not path.is_file():
        return scan_index(root)
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON: {parse_problem(error)}") from None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("images"), list)
        or not isinstance(data.get("depths"), list)
    ):
        raise ValueError(f"{path}: expected an object with lists 'images' and 'depths', found {type(data).__name__}")
    if len(data["images"]) != len(data["depths"]):
        raise ValueError(f"{path}: {len(data['images'])} images but {len(data['depths'])} depths")
    labels = data.get("labels")
    if labels is not None:
        folders = {Path(p).parent.name for p in data["images"]}
        missing = sorted(folders - set(labels))
        if missing:
            raise ValueError(f"{path}: image folders {missing[:5]} have no entry in 'labels'")
        labels = {str(k): int(v) for k, v in labels.items()}
    return DatasetIndex(list(data["images"]), list(data["depths"]), labels)


def write_index(root: str | Path, index: DatasetIndex) -> Path:
    """Write root/dataset.json atomically, merged with the index already there: its entries whose files still
    exist are kept (in their order), the new ones appended, so no rerun ever shrinks a dataset. Labels must
    agree with the existing ones (a relabelled class would silently change what trained models mean)."""
    root = Path(root)
    path = root / INDEX_FILE
    if path.is_file():
        index = merge_indexes(read_index(root), index, root)
    return write_json(index.to_json(), path)


def merge_indexes(old: DatasetIndex, new: DatasetIndex, root: Path) -> DatasetIndex:
    """old's entries whose image and depth exist under root, then new's entries not in old; merged labels."""
    pairs = {image: depth for image, depth in zip(old.images, old.depths, strict=True)}
    pairs = {i: d for i, d in pairs.items() if (root / i).is_file() and (root / d).is_file()}
    if pairs and (old.labels is None) != (new.labels is None):
        raise ValueError(
            f"{root / INDEX_FILE}: cannot merge a dataset with class folders and one without; use another folder"
        )
    for image, depth in zip(new.images, new.depths, strict=True):
        pairs.setdefault(image, depth)
    labels = new.labels if old.labels is None else dict(old.labels)
    if old.labels is not None and new.labels is not None:
        owner = {v: k for k, v in old.labels.items()}
        clash = sorted(k for k, v in new.labels.items() if old.labels.get(k, v) != v or owner.get(v, k) != k)
        if clash:
            raise ValueError(
                f"{root / INDEX_FILE}: the classes {clash[:5]} would get labels that the index already gives "
                "otherwise; write the new images into another dataset folder"
            )
        labels.update({k: v for k, v in new.labels.items() if k not in labels})
    return DatasetIndex(list(pairs), list(pairs.values()), labels)


def load_depth(path: str | Path) -> np.ndarray:
    """A depth map (H, W) float32 from an .npz: key arr_0 (the official layout) or its only array; no pickles."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"depth file not found: {path}")
    with np.load(path, allow_pickle=False) as archive:
        keys = list(archive.keys())
        if DEPTH_KEY not in keys and len(keys) != 1:
            raise ValueError(f"{path}: expected the depth under key {DEPTH_KEY!r}, found keys {keys}")
        depth = archive[DEPTH_KEY if DEPTH_KEY in keys else keys[0]]
    return as_depth_map(depth, path)


def as_depth_map(values: np.ndarray, source: str | Path) -> np.ndarray:
    """(H, W), (1, H, W) or (H, W, 1) -> (H, W) float32; anything else is a ValueError naming `source`."""
    depth = np.asarray(values, dtype=np.float32)
    if depth.ndim == 3 and 1 in (depth.shape[0], depth.shape[-1]):
        depth = depth.reshape(depth.shape[1:] if depth.shape[0] == 1 else depth.shape[:2])
    if depth.ndim != 2:
        raise ValueError(f"{source}: expected a 2-D depth map, found shape {depth.shape}")
    return depth


def same_aspect(first: tuple[int, int], second: tuple[int, int], tolerance: float = 0.01) -> bool:
    """Whether two (H, W) sizes share their aspect ratio within a relative tolerance."""
    return abs(first[1] * second[0] - first[0] * second[1]) <= tolerance * second[0] * second[1]


def save_depth(path: str | Path, disparity: np.ndarray) -> None:
    """Write official-scale disparity (H, W) as fp16 under arr_0, atomically."""
    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        np.savez(handle, np.asarray(disparity, dtype=np.float16))
