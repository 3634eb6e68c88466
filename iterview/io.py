"""Atomic file writes and image files (PNG, grids, colourised depth), shared by every long job."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image

PARTIAL_SUFFIX = ".partial"


@contextmanager
def atomic_path(path: str | Path, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` only if the block succeeds, so a killed job
    never leaves a half-written file under the final name. The temporary name is hidden and marked `.partial`
    (see `remove_partials`); `keep_suffix` appends the final suffix, for writers that infer the format from it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Unique per process and thread; created by the writer itself, so it gets the usual permissions.
    suffix = path.suffix if keep_suffix else ""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}{PARTIAL_SUFFIX}{suffix}")
    try:
        yield tmp
        if tmp.is_file():  # some writers (safetensors) create 0600 files: give the user's umask its say
            tmp.chmod(0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_json(data: object, path: str | Path, indent: int = 1) -> Path:
    """Atomically write data as JSON; returns path."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=indent))
    return Path(path)


def remove_partials(root: str | Path) -> int:
    """Delete the temporary files that killed writers left under root; returns how many. Call it only while no
    writer is active."""
    stale = [p for p in Path(root).rglob(f".*{PARTIAL_SUFFIX}*") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) or (H, W) in [0, 1] -> (H, W, C) or (H, W) uint8, clipped and truncated like the official
    `clip(x·255).astype(uint8)`, so saved results match the official files bit for bit."""
    array = (image.detach().float() * 255).clamp(0, 255).to(torch.uint8).cpu().numpy()
    return array.transpose(1, 2, 0) if array.ndim == 3 else array


def save_png(image: torch.Tensor, path: str | Path) -> Path:
    """Atomically write an RGB (3, H, W) or grey (1, H, W) image in [0, 1] as PNG."""
    array = to_uint8(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")
    return Path(path)


@cache
def _inferno_lut() -> torch.Tensor:
    from matplotlib import colormaps

    return torch.from_numpy(colormaps["inferno"](np.linspace(0, 1, 256))[:, :3]).float()


def colorize_depth(depth: torch.Tensor) -> torch.Tensor:
    """Official depth visualisation: inverted inferno, near = bright. depth: (..., 1, H, W) z-buffer in
    [0, 1] -> (..., 3, H, W) RGB in [0, 1]."""
    index = ((1 - depth.clamp(0, 1)) * 255).round().long().squeeze(-3)
    return _inferno_lut().to(depth.device)[index].movedim(-1, -3)


def make_grid(images: torch.Tensor, layout: Sequence[Sequence[int]]) -> torch.Tensor:
    """Tile images (N, C, H, W) into rows of view indices (-1 = an empty, zero tile) -> (C, R·H, K·W)."""
    blank = torch.zeros_like(images[0])
    rows = [torch.cat([images[i] if i >= 0 else blank for i in row], dim=-1) for row in layout]
    return torch.cat(rows, dim=-2)


@contextmanager
def removed_if_failed(folder: str | Path) -> Iterator[Path]:
    """Yield folder; if the block raises, delete the folders it created that are still empty, so a failed run
    leaves no empty output folders behind (folders that existed before are never touched)."""
    folder = Path(folder)
    top = None
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            break
        top = candidate
    try:
        yield folder
    except BaseException:
        if top is not None and top.is_dir():
            for path in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                _remove_if_empty(path)
            _remove_if_empty(top)
        raise


def _remove_if_empty(folder: Path) -> None:
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
