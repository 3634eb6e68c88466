"""Seconds per 3x9 instance with the shipped models: the official-equivalent path (G_u DDPM-1000, G_c DDIM-50,
the module as trained) vs the fast path (`--sampler fast`: G_u ancestral DDIM-25, G_c DDIM-10 with
classifier-free guidance in a window of noise levels; `prepare_for_inference` U-Nets), same models, same seeds,
one run. Each path's time is split into the U-Net (timed around every forward), the aggregation and the meshing
(timed around the pipeline's calls) and the rest (sampler arithmetic, guidance, noise). Prints one JSON line.

    python benchmarks/bench_pipeline.py [--models synth] [--batch 1] [--steps-uncond 25] [--steps-cond 10]
        [--repeats 1] [--device cpu] [--quick]

On a shared CPU set OMP_NUM_THREADS=1: small convolutions on oversubscribed cores are many times slower.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace

import torch
from torch import nn

from iterview.diffusion.presets import OFFICIAL_COND, OFFICIAL_UNCOND, resolve_samplers
from iterview.diffusion.schedule import DiffusionSchedule
from iterview.models.adm import prepare_for_inference
from iterview.pipeline.loading import load_pipeline
from iterview.pipeline.multiview import MultiViewPipeline
from iterview.pipeline.viewsets import grid_viewset_3x9

STAGES = ("unet", "aggregation", "meshing")


class StageTimer:
    """Wall seconds spent inside the timed stages and U-Net image evaluations, accumulated over a run."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.evaluations = 0
        self._started = 0.0

    def wrap(self, stage: str, function: Callable) -> Callable:
        """function, with the wall time of each call added to `stage`."""

        def timed(*args, **kwargs):
            start = time.perf_counter()
            out = function(*args, **kwargs)
            self.seconds[stage] += time.perf_counter() - start
            return out

        return timed

    def hook_unet(self, model: nn.Module) -> list:
        """Forward hooks that time every call of model as "unet" and count its image evaluations (batch rows)."""

        def before(module: nn.Module, inputs: tuple) -> None:
            self._started = time.perf_counter()

        def after(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            self.seconds["unet"] += time.perf_counter() - self._started
            self.evaluations += len(inputs[0])

        return [model.register_forward_pre_hook(before), model.register_forward_hook(after)]


def run_instances(pipeline: MultiViewPipeline, batch: int, views: int, device: str) -> dict:
    """One batch of `views`-view 3x9 instances: seconds per instance, U-Net evaluations per instance and the
    share of the time in each stage."""
    timer = StageTimer()
    pipeline.aggregate = timer.wrap("aggregation", pipeline.aggregate)
    pipeline.mesh = timer.wrap("meshing", pipeline.mesh)
    hooks = [hook for model in {pipeline.g_u, pipeline.g_c} for hook in timer.hook_unet(model)]
    modelviews = grid_viewset_3x9().modelviews[:views].expand(batch, views, 4, 4).to(device)
    generators = [torch.Generator(device).manual_seed(seed) for seed in range(batch)]
    classes = torch.arange(batch, device=device) % pipeline.g_u.num_classes
    start = time.perf_counter()
    pipeline(modelviews, generators, classes)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    for hook in hooks:
        hook.remove()
    del pipeline.aggregate, pipeline.mesh
    shares = {stage: timer.seconds[stage] / seconds for stage in STAGES}
    shares["other"] = 1 - sum(shares.values())
    return {
        "s_per_instance": seconds / batch,
        "unet_evals": timer.evaluations // batch,
        "unet_evals_expected": pipeline.unet_evaluations(views, guided=True),
        "share": {k: round(v, 4) for k, v in shares.items()},
    }


def build_paths(args: argparse.Namespace) -> dict[str, MultiViewPipeline]:
    """The official-equivalent and the fast pipeline over the same models (the fast one on prepared copies)."""
    official = load_pipeline(args.models, args.models, device=args.device, fast_unet=False)
    clip = official.sampler_cond.clip
    schedule = DiffusionSchedule.linear(50) if args.quick else official.schedule
    official.schedule = schedule
    official.sampler_uncond = replace(OFFICIAL_UNCOND, steps=schedule.num_timesteps, clip=clip)
    official.sampler_cond = replace(OFFICIAL_COND, steps=2 if args.quick else OFFICIAL_COND.steps, clip=clip)
    fast = copy.copy(official)
    fast.g_u = prepare_for_inference(copy.deepcopy(official.g_u))
    fast.g_c = prepare_for_inference(copy.deepcopy(official.g_c))
    steps = schedule.num_timesteps
    uncond, cond = resolve_samplers("fast", None, None, args.steps_uncond, args.steps_cond, steps)
    fast.sampler_uncond, fast.sampler_cond = replace(uncond, clip=clip), replace(cond, clip=clip)
    return {"official": official, "fast": fast}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="synth")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--views", type=int, default=27)
    parser.add_argument("--steps-uncond", type=int, help="G_u steps of the fast path [the preset's]")
    parser.add_argument("--steps-cond", type=int, help="G_c steps of the fast path [the preset's]")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each path, alternating; the fastest counts")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="seconds: 3 views, a 50-step schedule, 2 steps")
    args = parser.parse_args()
    if args.quick:
        args.views, args.steps_uncond, args.steps_cond = 3, 2, 2
    paths = build_paths(args)
    runs: dict[str, list[dict]] = {name: [] for name in paths}
    with torch.no_grad():
        for _ in range(args.repeats):
            for name, pipeline in paths.items():
                runs[name].append(run_instances(pipeline, args.batch, args.views, args.device))
    best = {name: min(records, key=lambda r: r["s_per_instance"]) for name, records in runs.items()}
    for name, pipeline in paths.items():
        sampler = f"{pipeline.sampler_uncond.label}/{pipeline.sampler_cond.label}"
        best[name] = {"sampler": sampler, **best[name]}
    official, fast = best["official"], best["fast"]
    unet_seconds = {name: record["s_per_instance"] * record["share"]["unet"] for name, record in best.items()}
    record = {
        "bench": "pipeline_3x9",
        "device": args.device,
        "models": args.models,
        "views": args.views,
        "batch": args.batch,
        "official": official,
        "fast": fast,
        "speedup": round(official["s_per_instance"] / fast["s_per_instance"], 2),
        "evals_ratio": round(official["unet_evals"] / fast["unet_evals"], 2),
        "unet_s_per_eval_ratio": round(
            (unet_seconds["official"] / official["unet_evals"]) / (unet_seconds["fast"] / fast["unet_evals"]), 2
        ),
    }
    print(json.dumps(record))


if __name__ == "__main__":
    main()
