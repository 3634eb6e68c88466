"""Every shell command of the README's ```bash blocks is run here as a user would type it, or listed in NOT_RUN
with the reason (a download, a set-up line, or the test that covers it elsewhere).

Commands run with the installed `iterview` command (this tree's code, through PYTHONPATH) in a scratch folder,
in chains where one example's output feeds the next. To keep the suite fast a few are made cheaper by the
explicit `cheaper` / `extra` fields of their Step: smaller counts, fewer sampler or training steps, fewer video
frames, `--quick`; and a path the README writes for the official ImageNet run (or as `...`) is replaced by the
run folder that the chain's own `iterview sample` made. Everything else is the README's text. HF_HUB_OFFLINE=1
proves that the commands run here need no download.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SHIPPED_INFERENCE = ROOT / "iterview" / "weights" / "synth" / "inference.json"
COMMAND_TIMEOUT_S = 300

OFFICIAL_WEIGHTS = "needs a download: the official ImageNet checkpoints and configs (HuggingFace JeffreyXiang/ivid)"
IMAGENET = "needs a download: the ImageNet images"
HUB_DEPTH = "needs a download: a depth model from the Hugging Face hub"
SET_UP = "set-up of the environment the tests run in"


@dataclass(frozen=True)
class Step:
    """One README command, run in the chain's scratch folder.

    command: exactly as in the README (continuations joined, whitespace collapsed, comment dropped);
    cheaper: (README text, text run instead) pairs; extra: options appended to make it cheap;
    produces: globs (relative to the scratch folder) that must each match a file afterwards;
    prints: text its output must hold; check: a further check of what it wrote."""

    command: str
    produces: tuple[str, ...] = ()
    cheaper: tuple[tuple[str, str], ...] = ()
    extra: str = ""
    prints: str = ""
    check: Callable[[Path], None] | None = None

    def to_run(self) -> str:
        """The command line that runs: the README's, with the substitutions applied and the extra options."""
        command = self.command
        for readme_text, cheap_text in self.cheaper:
            command = command.replace(readme_text, cheap_text)
        return f"{command} {self.extra}".strip()


@dataclass(frozen=True)
class Chain:
    """README commands that run in order in one scratch folder, after `prepare` wrote the user's own inputs;
    slow: the chain takes a minute or more."""

    name: str
    steps: tuple[Step, ...]
    prepare: Callable[[Path], None] | None = None
    slow: bool = False


def readme_commands(text: str) -> list[str]:
    """Every command of the ```bash blocks of a README text, in order: `\\` continuations joined, comments
    dropped, `&&` chains split into their commands, whitespace collapsed."""
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"(?:^|\s)#.*$", "", line)
            commands += [" ".join(part.split()) for part in line.split("&&") if part.strip()]
    return commands


# ---- the user's own inputs, written before a chain runs


def _own_photos_and_depths(root: Path) -> None:
    """photos/<class>/<name>.png and my_depths/<class>/<name>.npy (z, positive), as a user would bring them."""
    rng = np.random.default_rng(0)
    for name in ("cat/a", "cat/b", "dog/c"):
        (root / "photos" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "my_depths" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(root / "photos" / f"{name}.png")
        np.save(root / "my_depths" / f"{name}.npy", rng.uniform(1.0, 4.0, (48, 64)).astype(np.float32))


def _small_benchmark(root: Path) -> None:
    """data/bench with the benchmark's recipe at a few images per split (the full one is 11,000 images), and one
    held-out image with its depth as synth.png / synth_depth.npz for `iterview lift`; truth for the first 5
    held-out scenes (the README lifts scene 4 onto its true cameras)."""
    from iterview.data.benchmark import BENCHMARK, write_benchmark

    bench = write_benchmark(
        root / "data" / "bench", replace(BENCHMARK, train_count=32, heldout_count=16, truth_scenes=5)
    )
    shutil.copy(bench / "heldout" / "images" / "box" / "000000.png", root / "synth.png")
    shutil.copy(bench / "heldout" / "depths" / "box" / "000000.npz", root / "synth_depth.npz")


# ---- checks of what a command wrote, beyond its files


def _scene_has_the_shipped_settings(root: Path) -> None:
    """The README: the shipped models bring the geometry and guidance they were trained for (inference.json)."""
    shipped = json.loads(SHIPPED_INFERENCE.read_text())
    scene = json.loads((root / RUN / "scenes" / f"scene_{SCENE}.json").read_text())
    for key, value in shipped["geometry"].items():
        assert scene["geometry"][key] == pytest.approx(value), f"scene geometry {key}: {scene['geometry'][key]}"
    assert scene["made_by"]["guidance"]["strength"] == shipped["guidance"]


def _depth_became_official_disparity(root: Path) -> None:
    """The README's mapping for --depth-kind depth: D = 6250 / z, at the image's resolution."""
    z = np.load(root / "my_depths" / "dog" / "c.npy")
    disparity = np.load(root / "data" / "photos" / "depths" / "dog" / "c.npz")["arr_0"]
    np.testing.assert_allclose(disparity.astype(np.float32), 6250 / z, rtol=2e-3)


def _measures_both_models(root: Path) -> None:
    metrics = json.loads((root / "metrics.json").read_text())
    assert metrics["uncond"]["num_fake"] == 8 and metrics["cond"]["scenes"] == 1


def _images_of_the_count(count: int) -> Callable[[Path], None]:
    def check(root: Path) -> None:
        assert len(json.loads((root / "data" / "synth" / "dataset.json").read_text())["images"]) == count

    return check


# ---- the chains

# what the bench chain's `iterview sample` makes
RUN = "samples/viewset_3x9_steps_uddim2+eta1_cddim2+cfg81-578_guidance1.0"
SCENE = "class001_seed00001"
FEW_SAMPLER_STEPS = "--steps-uncond 2 --steps-cond 2"
ONE_TRAINING_STEP = "--set max_steps=1"


def _trained(run: str) -> tuple[str, ...]:
    return (f"{run}/checkpoints/step_0000001/ema/model.safetensors", f"{run}/train_config.json", f"{run}/log.jsonl")


def _exported(folder: str) -> tuple[str, ...]:
    files = ("pointcloud.ply", "mesh.ply", "mesh.glb", "nerf/transforms.json", "nerf/transforms_train.json")
    return tuple(f"{folder}/{name}" for name in (*files, "nerf/transforms_test.json", "nerf/points3d.ply"))


CHAINS = (
    Chain(
        "synth-dataset",
        (
            Step(
                "iterview synth data/synth --count 2000 --size 128 --seed 0",
                ("data/synth/dataset.json", "data/synth/images/*/*.png", "data/synth/depths/*/*.npz"),
                cheaper=(("--count 2000", "--count 3"),),
                check=_images_of_the_count(3),
            ),
        ),
    ),
    Chain(
        "prepare-own-depths",
        (
            Step(
                "iterview prepare photos/ data/photos --depth-from my_depths/ --depth-kind depth",
                ("data/photos/dataset.json", "data/photos/images/cat/a.png", "data/photos/depths/dog/c.npz"),
                check=_depth_became_official_disparity,
            ),
        ),
        prepare=_own_photos_and_depths,
    ),
    Chain(
        "train-gu-then-gc",
        (
            Step(
                "iterview synth data/synth --count 512 --size 32",
                ("data/synth/dataset.json",),
                cheaper=(("--count 512", "--count 16"),),
                check=_images_of_the_count(16),
            ),
            Step(
                "iterview train --preset tiny --data data/synth --output runs/gu",
                _trained("runs/gu"),
                extra=ONE_TRAINING_STEP,
                prints="runs/gu/checkpoints/step_0000001/ema",
            ),
            Step(
                "iterview train --preset tiny_cond --data data/synth --output runs/gc --init-from runs/gu",
                _trained("runs/gc"),
                extra=ONE_TRAINING_STEP,
            ),
        ),
    ),
    Chain(
        "synth-benchmark",  # shipped models, retraining, lift, render, export, eval
        (
            Step(
                "iterview sample --uncond synth --cond synth --viewset 3x9 --sampler fast --seeds 0-3",
                tuple(
                    f"{RUN}/{path}"
                    for path in (
                        f"grids/rgb_{SCENE}.png",
                        f"grids/depth_{SCENE}.png",
                        f"conds/rgb_cond_{SCENE}.png",
                        f"conds/depth_cond_{SCENE}.png",
                        f"scenes/scene_{SCENE}.npz",
                        f"scenes/scene_{SCENE}.json",
                        "run.json",
                    )
                ),
                cheaper=(("--seeds 0-3", "--seeds 1"),),
                extra=FEW_SAMPLER_STEPS,
                check=_scene_has_the_shipped_settings,
            ),
            Step(
                "iterview eval --benchmark data/bench --uncond synth --cond synth --sampler fast --output metrics.json",
                ("metrics.json", "benchmark-eval/uncond/images/*.png", "benchmark-eval/cond/grids/*.png"),
                extra=f"--num-samples 8 --heldout-scenes 1 {FEW_SAMPLER_STEPS}",
                check=_measures_both_models,
            ),
            Step(
                "iterview train --preset synth_u --data data/bench/train --output runs/synth_u --cpu",
                _trained("runs/synth_u"),
                extra=ONE_TRAINING_STEP,
            ),
            Step(
                "iterview train --preset synth_c --data data/bench/train --output runs/synth_c --cpu "
                "--init-from runs/synth_u",
                _trained("runs/synth_c"),
                extra=ONE_TRAINING_STEP,
            ),
            Step(
                "iterview train --preset synth_u_refine --data data/bench/train --output runs/synth_u2 --cpu "
                "--init-from runs/synth_u",
                _trained("runs/synth_u2"),
                extra=ONE_TRAINING_STEP,
            ),
            Step(
                "iterview train --preset synth_c_refine --data data/bench/train --output runs/synth_c2 --cpu "
                "--init-from runs/synth_c",
                _trained("runs/synth_c2"),
                extra=ONE_TRAINING_STEP,
            ),
            Step(
                "iterview train --preset synth_u_anneal --data data/bench/train --output runs/synth_u3 --cpu "
                "--init-from runs/synth_u2",
                _trained("runs/synth_u3"),
                extra=ONE_TRAINING_STEP,
            ),
            Step(
                "iterview train --preset synth_c_anneal --data data/bench/train --output runs/synth_c3 --cpu "
                "--init-from runs/synth_c2",
                _trained("runs/synth_c3"),
                extra=ONE_TRAINING_STEP,
            ),
            Step(
                "iterview train --preset synth_c_depth --data data/bench/train --output runs/synth_c4 --cpu "
                "--init-from runs/synth_c3",
                _trained("runs/synth_c4"),
                extra=ONE_TRAINING_STEP,
            ),
            Step(
                "python -m iterview.eval.classifier data/bench/train data/bench/heldout runs/classifier",
                ("runs/classifier/classifier.safetensors", "runs/classifier/config.json"),
                extra="--epochs 1",
            ),
            Step(
                "iterview demo --uncond runs/synth_u3 --cond runs/synth_c4 --out demo-retrained",
                ("demo-retrained/report.html", "demo-retrained/report.json"),
                extra="--quick",
            ),
            Step(
                "iterview lift synth.png --cond runs/synth_c --depth synth_depth.npz --depth-kind official "
                "--output out",
                (
                    "out/scenes/scene_seed00000.npz",
                    "out/scenes/scene_seed00000.json",
                    "out/grids/rgb_seed00000.png",
                    "out/grids/depth_seed00000.png",
                    "out/videos/scene_seed00000.mp4",
                    "out/videos/scene_seed00000_depth.mp4",
                    *_exported("out/exports/scene_seed00000"),
                ),
                extra="--sampler fast",
            ),
            Step(
                'python -c "import json; from iterview.data.benchmark import load_truth; '
                "json.dump(load_truth('data/bench', 4)['modelviews'].tolist(), open('cameras_4.json', 'w'))\"",
                ("cameras_4.json",),
                cheaper=((".tolist()", "[:3].tolist()"),),  # three of the 27 cameras
            ),
            Step(
                "iterview lift data/bench/heldout/images/cone/000004.png --depth "
                "data/bench/heldout/depths/cone/000004.npz --cond synth --class 1 --viewset cameras_4.json "
                "--sampler fast --output lifted/cone",
                ("lifted/cone/scenes/scene_class001_seed00000.npz", "lifted/cone/grids/rgb_class001_seed00000.png"),
            ),
            Step(
                "iterview render samples/imagenet128/viewset_3x9_steps_u1000_c50_guidance0.5 --traj random",
                (f"{RUN}/results/scene_{SCENE}.png",),
                cheaper=(("samples/imagenet128/viewset_3x9_steps_u1000_c50_guidance0.5", RUN),),
            ),
            Step(
                "iterview render samples/imagenet128/viewset_3x9_steps_u1000_c50_guidance3.0 --traj swing --frames 60",
                (f"{RUN}/videos/scene_{SCENE}.mp4", f"{RUN}/videos/scene_{SCENE}_depth.mp4"),
                cheaper=(
                    ("samples/imagenet128/viewset_3x9_steps_u1000_c50_guidance3.0", RUN),
                    ("--frames 60", "--frames 2"),
                ),
            ),
            Step(
                "iterview export samples/.../scenes/scene_class001_seed00001.npz --output-dir exports/",
                _exported(f"exports/scene_{SCENE}"),
                cheaper=(("samples/...", RUN),),
            ),
            Step("iterview eval --scenes samples/run/scenes", prints="PSNR", cheaper=(("samples/run", RUN),)),
        ),
        prepare=_small_benchmark,
        slow=True,
    ),
)

NOT_RUN = {
    "python3 -m venv .venv": SET_UP,
    ". .venv/bin/activate": SET_UP,
    'pip install -e ".[dev]"': SET_UP,
    'pip install -e ".[app]"': SET_UP,
    "sudo apt-get update -qq": SET_UP,
    "sudo apt-get install -y -qq chromium chromium-driver": SET_UP,
    "python -m pytest": "the test suite itself, which holds this file",
    "iterview demo": "the full demo (minutes); its reduced run with the shipped models is "
    "tests/test_demo.py::test_quick_demo_shows_every_class_and_measures_it",
    "iterview demo --out demo": "the full demo (minutes); its reduced run with the shipped models is "
    "tests/test_demo.py::test_quick_demo_shows_every_class_and_measures_it",
    "iterview demo --out demo-trained --train": "hours of training; the reduced run is "
    "tests/test_demo.py::test_demo_trains_from_scratch_with_the_synth_recipe",
    "python benchmarks/bench_quality.py --bench data/bench --official-images 1000 --out bench-quality --settings "
    "official_cond,fast,unipc10_window,unipc6_window,ddim10_window,dpmpp20,ddim10,official_uncond": (
        "the full measurement takes hours on a CPU; its --quick mode runs in "
        "tests/test_benchmarks.py::test_benchmark_quick_mode_prints_one_json_line"
    ),
    "iterview synth data/bench --preset bench": "writes the full benchmark, 11,000 images (about 2 min); the "
    "command runs on a smaller recipe in tests/test_data_synth.py::test_synth_preset_bench_claims_its_splits_with_"
    "the_recipe_style, and the chain here writes that layout with fewer images",
    "iterview sample --uncond ckpts/imagenet128_uncond.pt --config-uncond configs/rgbd_imagenet_adm_128_large_cfg.json "
    "--cond ckpts/imagenet128_cond.pt --config-cond configs/rgbd_imagenet_adm_128_large_cond.json --num-samples 10000 "
    "--classes uniform --viewset random --guidance 0.5 --output-dir samples/imagenet128": OFFICIAL_WEIGHTS,
    "iterview sample ... --num-samples 10000 --classes uniform --viewset 3x9 --guidance 0.5 "
    "--output-dir samples/imagenet128": OFFICIAL_WEIGHTS,
    "iterview sample --uncond ckpts/imagenet128_uncond.pt --config-uncond configs/rgbd_imagenet_adm_128_large_cfg.json "
    "--cond ckpts/imagenet128_cond.pt --config-cond configs/rgbd_imagenet_adm_128_large_cond.json --viewset 3x9 "
    "--seeds 0-8 --guidance 3.0 --output-dir samples/imagenet128": OFFICIAL_WEIGHTS,
    "iterview train --preset rgbd_imagenet_adm_128_large_cond --data data/imagenet --output runs/imagenet_gc "
    "--init-from ckpts/imagenet128_uncond.pt": OFFICIAL_WEIGHTS,
    "iterview convert ckpts/imagenet128_cond.pt --config configs/rgbd_imagenet_adm_128_large_cond.json "
    "--output models/g_c": OFFICIAL_WEIGHTS,
    "iterview convert ckpts/imagenet128_uncond.pt --config configs/rgbd_imagenet_adm_128_large_cfg.json "
    "--output models/g_u --fp32": OFFICIAL_WEIGHTS,
    "iterview lift photo.jpg --cond ckpts/imagenet128_cond.pt --config-cond "
    "configs/rgbd_imagenet_adm_128_large_cond.json --depth-model depth-anything/Depth-Anything-V2-Large-hf "
    "--viewset swing --output lifted/photo": OFFICIAL_WEIGHTS,
    "iterview eval --fake samples/imagenet128/viewset_random_steps_u1000_c50_guidance0.5/results "
    "--real data/imagenet/images --real-stats stats/imagenet128.safetensors": IMAGENET,
    "iterview eval --fake samples/run/results --real data/imagenet/images "
    "--real-stats stats/imagenet128.safetensors --output metrics.json": f"{IMAGENET}; image metrics run in "
    "tests/test_eval_cli.py::test_eval_writes_image_metrics_and_reuses_the_real_cache",
    "accelerate launch --multi_gpu --num_processes 8 -m iterview train --preset rgbd_imagenet_adm_128_large_cfg "
    "--data data/imagenet --output runs/imagenet_gu": f"{IMAGENET} and 8 GPUs; two processes train in "
    "tests/test_training.py::test_two_processes_keep_identical_weights",
    "accelerate launch --multi_gpu --num_machines 2 --machine_rank 0 --main_process_ip 10.0.0.1 "
    "--main_process_port 29500 --num_processes 16 -m iterview train --config imagenet.yaml "
    "--output /shared/runs/gu": f"{IMAGENET} and two machines; two processes train in "
    "tests/test_training.py::test_two_processes_keep_identical_weights",
    "iterview prepare photos/ data/photos --depth-model Intel/dpt-beit-large-512": HUB_DEPTH,
    "iterview prepare photos/ data/photos --depth-model depth-anything/Depth-Anything-V2-Large-hf": HUB_DEPTH,
    "iterview prepare photos/ data/photos --depth-model ./my-local-model-folder --batch-size 16 --half": f"{HUB_DEPTH} "
    "(saved locally); a local model folder runs in "
    "tests/test_data_prepare.py::test_prepare_with_a_model_handles_every_image_kind (--half acts on CUDA only)",
    "accelerate launch --multi_gpu --num_processes 8 -m iterview prepare photos/ data/photos": f"{HUB_DEPTH} (the "
    "default); two processes run in tests/test_data_prepare.py::test_accelerate_launch_shards_over_two_processes",
    "torchrun --nproc_per_node 4 -m iterview prepare photos/ data/photos --cpu": f"{HUB_DEPTH} (the default); two "
    "processes run in tests/test_data_prepare.py::test_accelerate_launch_shards_over_two_processes",
    "accelerate launch --num_processes 4 -m iterview.cli sample --uncond ... --cond ... --seeds 0-999": "its models "
    "are left out (...); two processes sample in "
    "tests/test_kill_resume.py::test_accelerate_launch_of_sampling_splits_the_seeds_and_matches_one_process",
    "iterview lift a.jpg b.png c.webp --cond runs/gc --depth-model Intel/dpt-beit-large-512 --class 207 "
    "--viewset 3x9 --pad --sampler fast --output lifted/": f"{HUB_DEPTH}; a batch with --pad runs in "
    "tests/test_pipeline_lift.py::test_cli_batch_lifts_the_good_photos_and_reports_the_bad",
    "iterview app": "a server that runs until stopped; started by "
    "tests/test_webapp_browser.py::test_generate_and_lift_in_a_real_browser",
    "iterview app --uncond runs/gu --cond runs/gc --port 8080": "a server that runs until stopped; started with "
    "model folders by tests/test_webapp_browser.py::test_generate_and_lift_in_a_real_browser",
}


def _run_commands() -> list[str]:
    return [step.command for chain in CHAINS for step in chain.steps]


def test_readme_commands_are_read_as_a_shell_reads_them():
    text = "```bash\niterview a \\\n    --b 1   # a comment\n# a line of comment\nx && iterview c\n```\n"
    text += "```python\nz\n```"
    assert readme_commands(text) == ["iterview a --b 1", "x", "iterview c"]


def test_every_readme_command_is_run_or_listed_with_a_reason():
    commands = set(readme_commands(README.read_text()))
    run = set(_run_commands())
    unaccounted = sorted(commands - run - set(NOT_RUN))
    assert not unaccounted, f"README commands neither run by a chain here nor listed in NOT_RUN: {unaccounted}"
    gone = sorted((run | set(NOT_RUN)) - commands)
    assert not gone, f"commands of this file that the README no longer has: {gone}"
    assert not run & set(NOT_RUN), f"both run and listed as not run: {sorted(run & set(NOT_RUN))}"


def test_every_substitution_changes_its_command():
    for chain in CHAINS:
        for step in chain.steps:
            for readme_text, _ in step.cheaper:
                assert readme_text in step.command, f"{readme_text!r} is not in {step.command!r}"


def test_every_test_named_as_covering_a_command_exists():
    for command, reason in NOT_RUN.items():
        for path, name in re.findall(r"(tests/\w+\.py)::(\w+)", reason):
            source = ROOT / path
            assert source.is_file() and f"def {name}(" in source.read_text(), f"{path}::{name} ({command})"


def _iterview_command() -> str:
    """The installed console script beside this Python (what a user types), else the one on PATH."""
    found = shutil.which("iterview", path=str(Path(sys.executable).parent)) or shutil.which("iterview")
    if found is None:
        pytest.fail('the iterview command is not installed: pip install -e ".[dev]"', pytrace=False)
    return found


def _run(step: Step, cwd: Path, env: dict[str, str]) -> None:
    argv = shlex.split(step.to_run())
    argv[0] = {"iterview": _iterview_command(), "python": sys.executable}[argv[0]]
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"`{step.to_run()}` exited with {result.returncode}:\n{output[-3000:]}"
    missing = [pattern for pattern in step.produces if not any(cwd.glob(pattern))]
    assert not missing, f"`{step.to_run()}` did not write {missing}"
    assert step.prints in output, f"`{step.to_run()}` did not print {step.prints!r}:\n{output[-3000:]}"
    if step.check is not None:
        step.check(cwd)


@pytest.mark.parametrize(
    "chain", [pytest.param(c, id=c.name, marks=[pytest.mark.slow] if c.slow else []) for c in CHAINS]
)
def test_readme_examples_run_as_written(chain: Chain, tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))
    if chain.prepare is not None:
        chain.prepare(tmp_path)
    for step in chain.steps:
        _run(step, tmp_path, env)
