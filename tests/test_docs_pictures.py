"""docs/make_pictures.py, which regenerates the README's pictures of the shipped models, runs (quick mode) and
lays its panels out as the README shows them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from iterview.data.benchmark import BENCHMARK
from iterview.data.synth import CATEGORIES
from iterview.demo import QUICK

ROOT = Path(__file__).resolve().parents[1]


def test_quick_pictures_have_the_readme_layout(tmp_path):
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "docs/make_pictures.py", "--quick", "--work", str(tmp_path / "work")]
    result = subprocess.run([*command, "--docs", str(tmp_path / "docs")], cwd=ROOT, env=env, capture_output=True)
    assert result.returncode == 0, result.stderr.decode()[-2000:]

    size = BENCHMARK.image_size * 2  # views are upscaled 2x
    grid = np.asarray(Image.open(tmp_path / "docs" / "synth_3x9.png"))
    panels = len(CATEGORIES)  # one scene per class, colour over depth: 3 rows of 9 views each
    assert grid.shape == (2 * 3 * size, panels * 9 * size + (panels - 1) * 24, 3)
    assert (grid[:, : 9 * size] != 255).any(axis=-1).mean() > 0.9  # the first panel is an image, not white space

    gif = Image.open(tmp_path / "docs" / "synth_swing.gif")
    assert gif.n_frames == QUICK.frames

    lift = np.asarray(Image.open(tmp_path / "docs" / "lift_synth.png"))
    assert lift.shape == (2 * 3 * size + 12, size + 2 * 9 * size + 2 * 24, 3)  # two scenes: view 0, lifted, truth
