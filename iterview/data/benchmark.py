"""The synth benchmark: a fixed, versioned recipe of synthetic RGBD data with held-out ground truth.

`write_benchmark(root)` writes a training split, a disjoint held-out split (other seed) and, for the first
held-out scenes, exact renders on the 3x9 grid of cameras around their true view 0:

    root/benchmark.json         the recipe (version, sizes, seeds, counts)
    root/train/, root/heldout/  synth datasets in the official layout (labels = categories)
    root/truth/<index>.npz      rgb (27, 3, S, S) uint8, depth (27, 1, S, S) float32 linear z, modelviews (27, 4, 4)

Everything depends only on the recipe: the same recipe gives the same files.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from iterview.data.synth import scene_for_index, write_synth_dataset
from iterview.errors import UserError, read_json
from iterview.io import atomic_path
from iterview.pipeline.viewsets import grid_viewset_3x9

RECIPE_FILE = "benchmark.json"


@dataclass(frozen=True)
class BenchmarkRecipe:
    """Version 1: 32² bench-style scenes, 10,000 for training, 1,000 held out, 3x9 truth for 32 of them."""

    version: int = 1
    style: str = "bench"
    image_size: int = 32
    train_seed: int = 0
    train_count: int = 10_000
    heldout_seed: int = 1
    heldout_count: int = 1_000
    truth_scenes: int = 32


BENCHMARK = BenchmarkRecipe()


def truth_cameras() -> torch.Tensor:
    """The official 3x9 cameras (view k = 3·yaw_index + pitch_index) around the true view 0. (27, 4, 4)"""
    return grid_viewset_3x9().modelviews


def write_benchmark(root: str | Path, recipe: BenchmarkRecipe = BENCHMARK) -> Path:
    """Write (or finish writing) the benchmark of `recipe` into root; refuses a folder of another recipe."""
    root = Path(root)
    recipe_path = root / RECIPE_FILE
    if recipe_path.is_file() and read_json(recipe_path, "benchmark recipe") != asdict(recipe):
        raise ValueError(f"{root} holds another benchmark recipe ({recipe_path}); use another folder")
    root.mkdir(parents=True, exist_ok=True)
    with atomic_path(recipe_path) as tmp:
        tmp.write_text(json.dumps(asdict(recipe), indent=1) + "\n")
    size, style = recipe.image_size, recipe.style
    if recipe.train_count:
        write_synth_dataset(root / "train", recipe.train_count, size, recipe.train_seed, style)
    write_synth_dataset(root / "heldout", recipe.heldout_count, size, recipe.heldout_seed, style)
    cameras = truth_cameras()
    for index in range(recipe.truth_scenes):
        path = truth_path(root, index)
        if path.is_file():
            continue
        rgb, depth = scene_for_index(recipe.heldout_seed, index, style).render(cameras, size)
        path.parent.mkdir(exist_ok=True)
        with atomic_path(path) as tmp, tmp.open("wb") as f:
            np.savez(
                f,
                rgb=(rgb * 255).round().to(torch.uint8).numpy(),
                depth=depth.numpy(),
                modelviews=cameras.numpy(),
            )
    return root


def truth_path(root: str | Path, index: int) -> Path:
    """The file of held-out scene `index`: its 3x9 true views (RGB, linear depth, cameras), see the module docstring."""
    return Path(root) / "truth" / f"{index:06d}.npz"


def read_recipe(root: str | Path) -> BenchmarkRecipe:
    """The recipe a benchmark folder was written with."""
    path = Path(root) / RECIPE_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{root} is not a synth benchmark (no {RECIPE_FILE}); write one with `iterview synth {root} --preset bench`"
        )
    data = read_json(path, "benchmark recipe")
    try:
        return BenchmarkRecipe(**data)
    except TypeError:
        fix = f"write it again with `iterview synth {root} --preset bench`"
        raise UserError("unreadable benchmark recipe", path, "not the fields of a BenchmarkRecipe", fix) from None


def load_truth(root: str | Path, index: int) -> dict[str, torch.Tensor]:
    """Held-out scene `index`'s exact 3x9 renders: rgb (27, 3, S, S) in [0, 1], depth, modelviews."""
    with np.load(truth_path(root, index), allow_pickle=False) as data:
        return {
            "rgb": torch.from_numpy(data["rgb"]).float() / 255,
            "depth": torch.from_numpy(data["depth"]),
            "modelviews": torch.from_numpy(data["modelviews"]),
        }
