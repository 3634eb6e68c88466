"""Seconds per 3x9 instance: official sampler settings (G_u DDPM-1000, G_c DDIM-50) vs the fast settings
(DPM-Solver++(2M), 20 steps each), same tiny random models, same machine, one run. Prints one JSON line.

    python benchmarks/bench_pipeline.py [--size 16] [--batch 1] [--fast-steps 20] [--device cpu] [--quick]

On a shared CPU set OMP_NUM_THREADS=1: tiny convolutions on oversubscribed cores are many times slower.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from iterview.diffusion.presets import OFFICIAL_COND, OFFICIAL_UNCOND, SamplerChoice
from iterview.diffusion.schedule import DiffusionSchedule
from iterview.models.checkpoint import tiny_adm
from iterview.pipeline.multiview import MultiViewPipeline
from iterview.pipeline.viewsets import grid_viewset_3x9


def time_instances(pipeline: MultiViewPipeline, batch: int, device: str) -> tuple[float, int]:
    """Seconds per instance and network evaluations (U-Net forward passes) per batch."""
    calls = 0

    def count(*_: object) -> None:
        nonlocal calls
        calls += 1

    hooks = [m.register_forward_hook(count) for m in (pipeline.g_u, pipeline.g_c)]
    modelviews = grid_viewset_3x9().modelviews.expand(batch, 27, 4, 4)
    generators = [torch.Generator(device).manual_seed(seed) for seed in range(batch)]
    start = time.perf_counter()
    pipeline(modelviews, generators, torch.arange(batch, device=device) % 10)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / batch
    for hook in hooks:
        hook.remove()
    return seconds, calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--fast-steps", type=int, default=20)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run: 8 px, 50-step schedule, 2 steps")
    args = parser.parse_args()
    if args.quick:
        args.size, args.fast_steps = 8, 2
    schedule = DiffusionSchedule.linear(50) if args.quick else None
    official_cond = SamplerChoice(OFFICIAL_COND.name, 2) if args.quick else OFFICIAL_COND
    g_u, g_c = (
        tiny_adm(perturb=False, image_size=args.size, in_channels=c, model_channels=32).to(args.device) for c in (4, 10)
    )
    fast = SamplerChoice("dpmpp", args.fast_steps)
    official_s, official_calls = time_instances(
        MultiViewPipeline(g_u, g_c, schedule, sampler_uncond=OFFICIAL_UNCOND, sampler_cond=official_cond),
        args.batch,
        args.device,
    )
    fast_s, fast_calls = time_instances(
        MultiViewPipeline(g_u, g_c, schedule, sampler_uncond=fast, sampler_cond=fast), args.batch, args.device
    )
    print(
        json.dumps(
            {
                "bench": "pipeline_3x9",
                "device": args.device,
                "image_size": args.size,
                "batch": args.batch,
                "official": {
                    "sampler": "ddpm1000+ddim50",
                    "s_per_instance": round(official_s, 3),
                    "unet_calls": official_calls,
                },
                "fast": {
                    "sampler": f"dpmpp{args.fast_steps}+dpmpp{args.fast_steps}",
                    "s_per_instance": round(fast_s, 3),
                    "unet_calls": fast_calls,
                },
                "speedup": round(official_s / fast_s, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
