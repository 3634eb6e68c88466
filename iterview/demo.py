"""`iterview demo`: the method end to end in minutes on a CPU, with the models shipped in the package.

Stages, each resumable (re-running the same command continues where it stopped):
held-out synth-benchmark scenes -> 3x9 viewsets of every class (G_u, then G_c) -> a fusion video -> novel views
of held-out scenes against their exact renders -> class accuracy and FID of first views -> one HTML report.
With `train=True` G_u and G_c are first trained from scratch on the benchmark's training split (the synth_u /
synth_c recipe, for as many steps as asked) and used instead of the shipped ones.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated

import torch
import typer

from iterview.data.benchmark import BENCHMARK


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of one demo run; the defaults aim at 5 minutes on two CPU cores with the shipped models."""

    scenes_per_class: int = 1  # 3x9 viewsets sampled for each class
    heldout_scenes: int = 4  # held-out scenes whose 3x9 views G_c generates from the true view 0
    first_views: int = 64  # class-conditional G_u samples for class accuracy and FID
    real_images: int = 256  # held-out real images for FID
    sampler: str = "fast"
    sampler_steps: int | None = None  # None: the preset's (fast: ancestral DDIM-25 and DDIM-10)
    frames: int = 48  # fusion video frames (swing)
    video_size: int = 96
    train_images: int = 10_000  # --train: training split size
    steps_uncond: int = 3000  # --train: G_u steps
    steps_cond: int = 1500  # --train: G_c steps
    seed: int = 0


FULL = DemoConfig()
QUICK = DemoConfig(
    sampler_steps=3,
    heldout_scenes=1,
    first_views=16,
    real_images=16,
    frames=4,
    video_size=32,
    train_images=64,
    steps_uncond=4,
    steps_cond=2,
)


@contextlib.contextmanager
def _stage(name: str, timings: dict[str, float]) -> Iterator[None]:
    from rich.console import Console

    Console(stderr=True).rule(f"[bold]{name}")
    start = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - start, 2)


def run_demo(
    out_dir: str | Path,
    config: DemoConfig = FULL,
    uncond: str | Path = "synth",
    cond: str | Path = "synth",
    train: bool = False,
    cpu: bool = False,
    progress: bool = True,
) -> Path:
    """Run every stage into out_dir and return the HTML report's path. uncond / cond: G_u and G_c (a shipped set,
    training runs or model folders); `train`: train both from scratch into out_dir first and use them."""
    from iterview.data.benchmark import write_benchmark
    from iterview.eval.benchmark import novel_view_metrics, uncond_metrics
    from iterview.eval.classifier import load_classifier
    from iterview.models.shipped import resolve_model
    from iterview.pipeline.loading import load_pipeline, sampler_summary

    out = Path(out_dir)
    device = torch.device("cuda" if torch.cuda.is_available() and not cpu else "cpu")
    timings: dict[str, float] = {}
    recipe = replace(
        BENCHMARK,
        train_count=config.train_images if train else 0,
        heldout_count=config.real_images,
        truth_scenes=config.heldout_scenes,
    )
    with _stage("held-out benchmark scenes", timings):
        data = write_benchmark(out / "data", recipe)
    if train:
        uncond, cond = _train(out, data, config, cpu, progress, timings)
    steps = config.sampler_steps
    pipeline = load_pipeline(uncond, cond, config.sampler, steps, steps, device=device, progress=progress)
    with _stage("sample 3x9 viewsets of every class", timings):
        scenes = _sample_scenes(out / "samples", pipeline, config, progress)
    with _stage("render a fusion video", timings):
        videos = _video(out / "samples", scenes[0], pipeline, config, progress)
    with _stage("novel views of held-out scenes", timings):
        cond_metrics = novel_view_metrics(data, pipeline, out / "heldout", config.heldout_scenes, config.seed)
    with _stage("first views: class accuracy and FID", timings):
        classifier = load_classifier(resolve_model("synth", "classifier"), device)
        batch = min(config.first_views, 32)
        image_metrics = uncond_metrics(
            data, pipeline, classifier, out / "first_views", config.first_views, config.seed, batch, progress
        )
    metrics = {"first_views": image_metrics, "novel_views": cond_metrics, "sampling": sampler_summary(pipeline)}
    return _report(out, scenes, videos, metrics, timings, config)


def _train(
    out: Path, data: Path, config: DemoConfig, cpu: bool, progress: bool, timings: dict[str, float]
) -> tuple[Path, Path]:
    """G_u, then G_c fine-tuned from it, with the synth_u / synth_c presets (resumable)."""
    from iterview.training.config import get_preset
    from iterview.training.trainer import train

    def configured(preset: str, steps: int):
        every = max(steps // 4, 1)
        return replace(
            get_preset(preset),
            data_dir=str(data / "train"),
            max_steps=steps,
            save_every=every,
            log_every=every,
            sample_every=steps,
            keep_last=1,
            seed=config.seed,
            batch_size=min(get_preset(preset).batch_size, config.train_images),
        )

    with _stage("train G_u (first view)", timings):
        g_u = train(configured("synth_u", config.steps_uncond), out / "g_u", resume=True, cpu=cpu, progress=progress)
    with _stage("train G_c (novel views, from G_u)", timings):
        g_c = train(
            configured("synth_c", config.steps_cond),
            out / "g_c",
            resume=True,
            init_from=g_u,
            cpu=cpu,
            progress=progress,
        )
    return g_u, g_c


def _sample_scenes(run: Path, pipeline, config: DemoConfig, progress: bool) -> list[Path]:
    """`scenes_per_class` 3x9 viewsets of each class, seeds 0.. with class = seed mod classes. A run folder made
    by other models or settings is refused (a rerun of the same demo resumes)."""
    from iterview.pipeline.runinfo import pipeline_record, recorded_run
    from iterview.pipeline.sampling import sample_viewset

    classes = pipeline.g_u.num_classes or 1
    seeds = list(range(config.seed, config.seed + classes * config.scenes_per_class))
    record = pipeline_record(pipeline)
    with recorded_run(run, record, option="--out"):
        sample_viewset(
            pipeline.g_u,
            pipeline.g_c,
            run,
            seeds,
            viewset="3x9",
            batch_size=len(seeds),
            sampler_uncond=pipeline.sampler_uncond,
            sampler_cond=pipeline.sampler_cond,
            guidance=pipeline.guidance,
            geometry=pipeline.geometry,
            progress=progress,
            made_by=record,
        )
    return sorted((run / "scenes").glob("scene_*.npz"))[: len(seeds)]


def _video(run: Path, scene_path: Path, pipeline, config: DemoConfig, progress: bool) -> list[Path]:
    """The swing fusion video (colour and depth) of the first scene."""
    from iterview.pipeline.scene import Scene
    from iterview.render.video import render_scene_video

    name = scene_path.stem
    videos = [run / "videos" / f"{name}.mp4", run / "videos" / f"{name}_depth.mp4"]
    if all(v.is_file() for v in videos):
        return videos
    return render_scene_video(
        Scene.load(scene_path), run, name, "swing", config.frames, progress=progress, size=config.video_size
    )


def _report(
    out: Path, scenes: list[Path], videos: list[Path], metrics: dict, timings: dict, config: DemoConfig
) -> Path:
    from iterview.eval.report import Report, ReportSection

    report = Report("iterview demo", metrics=metrics, timings=timings)
    run = out / "samples"
    for path in scenes:
        suffix = path.stem.removeprefix("scene_")
        report.sections.append(
            ReportSection(
                f"Scene {suffix}: 27 views (3 pitches × 9 yaws), colour and depth",
                images=[run / "grids" / f"rgb_{suffix}.png", run / "grids" / f"depth_{suffix}.png"],
            )
        )
    report.sections.append(
        ReportSection("Free-view video (fusion rendering, swing trajectory): colour and depth", videos=videos)
    )
    for index in range(min(config.heldout_scenes, 4)):
        report.sections.append(
            ReportSection(
                f"Held-out scene {index}: generated views (top) and the exact renders (bottom), colour and depth",
                images=[out / "heldout" / "grids" / f"{name}_{index:04d}.png" for name in ("generated", "truth")],
                note="View 0 (centre) is the true image; G_c generates the 26 others from it.",
            )
        )
    report.sections.append(
        ReportSection("Class-conditional first views (G_u), classes in turn", images=[out / "first_views" / "grid.png"])
    )
    return report.write(out / "report.html")


def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for everything the demo writes.")] = Path("demo"),
    uncond: Annotated[
        str, typer.Option(help="G_u: a shipped set (synth), a training run or a model folder.")
    ] = "synth",
    cond: Annotated[str, typer.Option(help="G_c: a shipped set (synth), a training run or a model folder.")] = "synth",
    train: Annotated[
        bool, typer.Option("--train", help="Train G_u and G_c from scratch first (synth_u / synth_c recipe).")
    ] = False,
    steps_uncond: Annotated[int | None, typer.Option(help="With --train: G_u training steps.")] = None,
    steps_cond: Annotated[int | None, typer.Option(help="With --train: G_c training steps.")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="A reduced run of seconds (for CI).")] = False,
    cpu: Annotated[bool, typer.Option("--cpu", help="Run on the CPU even when a GPU is present.")] = False,
    threads: Annotated[
        int | None, typer.Option(help="CPU threads for torch (default: all cores; 1 is faster on a busy machine).")
    ] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")] = True,
) -> None:
    """Show the method working in minutes on a CPU: 3x9 scenes of every class from the shipped synth models, a
    fusion video, novel views of held-out scenes against the truth, class accuracy and FID, in an HTML report.

    Re-running the same command resumes it. `--train` trains the models from scratch first (hours on a CPU).
    """
    if threads is not None:
        if threads < 1:
            raise typer.BadParameter(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    config = QUICK if quick else FULL
    for name, value in (("steps_uncond", steps_uncond), ("steps_cond", steps_cond)):
        if value is not None:
            if value < 1:
                raise typer.BadParameter(f"--{name.replace('_', '-')} must be >= 1, got {value}")
            config = replace(config, **{name: value})
    report = run_demo(out, config, uncond, cond, train=train, cpu=cpu, progress=progress)
    typer.echo(f"report: {report}")
