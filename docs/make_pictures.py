"""Regenerate the README's pictures of the shipped synth models (about 4 minutes on two CPU cores):

- docs/synth_3x9.png: the 3x9 grids (colour over depth) of `iterview demo`'s scene of every class;
- docs/synth_swing.gif: the demo's fusion video of its first scene;
- docs/lift_synth.png: held-out benchmark images lifted with their true depth onto the cameras of their ground
  truth (`iterview lift`), beside the exact renders.

    python docs/make_pictures.py [--work pictures-work] [--models synth] [--docs docs] [--quick]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
from PIL import Image

from iterview.data.benchmark import BENCHMARK, load_truth, write_benchmark
from iterview.data.datasets import derive_seed
from iterview.data.layout import read_index
from iterview.demo import FULL, QUICK, run_demo
from iterview.io import make_grid
from iterview.pipeline.lift import lift_photo
from iterview.pipeline.scene import Scene
from iterview.pipeline.viewsets import GRID_3X9

DOCS = Path(__file__).resolve().parent
SCALE, GAP = 2, 24  # nearest-neighbour upscaling of the 32-px views; white space between panels
LIFT_CLASSES = ("cone", "cylinder")  # the first held-out scene of each is lifted


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """A (3, H, W) tensor in [0, 1] as an (H, W, 3) uint8 array."""
    return (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def upscale(image: np.ndarray) -> np.ndarray:
    return image.repeat(SCALE, axis=0).repeat(SCALE, axis=1)


def side_by_side(panels: list[np.ndarray], gap: int = GAP) -> np.ndarray:
    """Panels (H_i, W_i, 3) uint8, centred vertically on a white strip."""
    height = max(p.shape[0] for p in panels)
    strip = []
    for k, panel in enumerate(panels):
        column = np.full((height, panel.shape[1], 3), 255, np.uint8)
        top = (height - panel.shape[0]) // 2
        column[top : top + panel.shape[0]] = panel
        strip += [column] if k == 0 else [np.full((height, gap, 3), 255, np.uint8), column]
    return np.concatenate(strip, axis=1)


def demo_pictures(work: Path, models: str, docs: Path, quick: bool) -> None:
    run_demo(work / "demo", QUICK if quick else FULL, uncond=models, cond=models)
    samples = work / "demo" / "samples"
    grids = []
    for rgb in sorted((samples / "grids").glob("rgb_*.png")):
        depth = rgb.with_name(rgb.name.replace("rgb_", "depth_"))
        grids.append(upscale(np.concatenate([iio.imread(rgb)[..., :3], iio.imread(depth)[..., :3]], axis=0)))
    Image.fromarray(side_by_side(grids)).save(docs / "synth_3x9.png", optimize=True)
    video = next(p for p in sorted((samples / "videos").glob("scene_*.mp4")) if not p.stem.endswith("_depth"))
    frames = [Image.fromarray(frame) for frame in iio.imread(video)]
    frames[0].save(docs / "synth_swing.gif", save_all=True, append_images=frames[1:], duration=80, loop=0)


def lift_picture(work: Path, models: str, docs: Path) -> None:
    recipe = replace(BENCHMARK, train_count=0, heldout_count=20, truth_scenes=20)  # image i is the same in any size
    root = write_benchmark(work / "bench", recipe)
    index = read_index(root / "heldout")
    rows = []
    for name in LIFT_CLASSES:
        i = next(k for k in range(recipe.truth_scenes) if index.images[k].split("/")[-2] == name)
        truth = load_truth(root, i)
        cameras = work / f"cameras_{i}.json"
        cameras.write_text(json.dumps(truth["modelviews"].tolist()))
        label, seed = index.label_of(i), derive_seed(0, i)
        out = lift_photo(
            root / "heldout" / index.images[i],
            work / "lift" / name,
            models,
            depth=root / "heldout" / index.depths[i],
            class_label=label,
            viewset=str(cameras),
            seed=seed,
            sampler="fast",
        )
        scene = Scene.load(out / "scenes" / f"scene_class{label:03d}_seed{seed:05d}")
        lifted, true = (scene.rgbd[:, :3] * 0.5 + 0.5).clamp(0, 1), truth["rgb"]
        panels = [true[0], make_grid(lifted, GRID_3X9), make_grid(true, GRID_3X9)]
        rows.append(side_by_side([upscale(to_uint8(p)) for p in panels]))
    blank = np.full((GAP // 2, rows[0].shape[1], 3), 255, np.uint8)
    picture = np.concatenate([rows[0], blank, rows[1]], axis=0)
    Image.fromarray(picture).save(docs / "lift_synth.png", optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("pictures-work"), help="folder for the runs behind them")
    parser.add_argument("--models", default="synth", help="a shipped model set")
    parser.add_argument("--docs", type=Path, default=DOCS, help="where the pictures go")
    parser.add_argument("--quick", action="store_true", help="seconds: the quick demo (for the test suite)")
    args = parser.parse_args()
    args.docs.mkdir(parents=True, exist_ok=True)
    demo_pictures(args.work, args.models, args.docs, args.quick)
    lift_picture(args.work, args.models, args.docs)


if __name__ == "__main__":
    main()
