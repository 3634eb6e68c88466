"""Sampler cost: official DDPM-1000 and DDIM-50 vs our solvers (DPM-Solver++ 2M / 3M, UniPC), on one tiny ADM U-Net.

Prints one JSON line: U-Net evaluations and wall time of each sampler, the speed-up of DPM-Solver++(2M) with
20 steps, and how far each deterministic sampler lands from the probability-flow ODE solution (DDIM with all
1000 steps) on the same start noise (relative L2 error), so speed is read next to accuracy. Also times
classifier-free guidance as the official two forward passes vs our one batched pass. About half a minute on
an idle CPU.

    python benchmarks/bench_sampler.py [--device cuda] [--batch 2] [--threads 1] [--quick]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from iterview.diffusion.guidance import classifier_free
from iterview.diffusion.samplers import ddim_sample, ddpm_sample, dpmpp_2m_sample, dpmpp_3m_sample, unipc_sample
from iterview.diffusion.schedule import DiffusionSchedule
from iterview.models.checkpoint import tiny_adm


def timed(fn) -> tuple[torch.Tensor, float]:
    """fn's result and its wall seconds (synchronised on CUDA)."""
    start = time.perf_counter()
    out = fn()
    if out.is_cuda:
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


OURS = ("dpmpp2m20", "dpmpp3m10", "unipc10", "unipc5")


def sampler_runs(model: torch.nn.Module, x_T: torch.Tensor, schedule: DiffusionSchedule, classes: torch.Tensor) -> dict:
    """U-Net evaluations and seconds of each sampler from x_T, and each deterministic sampler's relative L2
    distance to the ODE solution (DDIM over every step)."""
    calls = [0]

    def model_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        return model(x, t, classes)

    generator = torch.Generator(x_T.device).manual_seed(0)
    runs = {
        "ddpm1000": lambda: ddpm_sample(model_fn, x_T, schedule, generator=generator),
        "ddim50": lambda: ddim_sample(model_fn, x_T, schedule, steps=50),
        "dpmpp2m20": lambda: dpmpp_2m_sample(model_fn, x_T, schedule, steps=20),
        "dpmpp3m10": lambda: dpmpp_3m_sample(model_fn, x_T, schedule, steps=10),
        "unipc10": lambda: unipc_sample(model_fn, x_T, schedule, steps=10),
        "unipc5": lambda: unipc_sample(model_fn, x_T, schedule, steps=5),
        "ode1000": lambda: ddim_sample(model_fn, x_T, schedule, steps=schedule.num_timesteps),
    }
    results, samples = {}, {}
    for name, run in runs.items():
        calls[0] = 0
        samples[name], seconds = timed(run)
        results[name] = {"unet_evals": calls[0], "seconds": round(seconds, 3)}
    ode = samples.pop("ode1000")
    results.pop("ode1000")
    for name in ("ddim50", *OURS):
        # Relative: a random tiny U-Net is no score model, and its samples reach large magnitudes.
        results[name]["rel_error_vs_ode"] = round(((samples[name] - ode).norm() / ode.norm()).item(), 5)
    return results


def cfg_step_seconds(model: torch.nn.Module, x_T: torch.Tensor, classes: torch.Tensor, repeats: int) -> dict:
    """One classifier-free guidance step as the official two forward passes vs our one batched pass."""
    t = torch.full((len(x_T),), 500, device=x_T.device)

    def two_passes() -> torch.Tensor:
        return 4 * model(x_T, t, classes) - 3 * model(x_T, t, None)

    batched = classifier_free(model, classes, 3.0)
    _, official = timed(lambda: torch.stack([two_passes() for _ in range(repeats)]))
    _, ours = timed(lambda: torch.stack([batched(x_T, t) for _ in range(repeats)]))
    return {
        "official_two_passes": round(official / repeats, 5),
        "ours_one_batched_pass": round(ours / repeats, 5),
        "ratio": round(official / ours, 2),
    }


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run: a 50-step schedule, batch 1")
    args = parser.parse_args()
    if args.quick:
        args.batch = 1
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = tiny_adm(model_channels=32).to(device).eval()
    schedule = DiffusionSchedule.linear(50 if args.quick else 1000)
    classes = torch.arange(args.batch, device=device) % 10
    x_T = torch.randn(args.batch, 4, 16, 16, generator=torch.Generator(device).manual_seed(0), device=device)
    results = sampler_runs(model, x_T, schedule, classes)
    fast = results["dpmpp2m20"]["seconds"]
    record = {
        "bench": "sampler",
        "device": str(device),
        "batch": args.batch,
        "image_size": 16,
        "official": {"ddpm1000": results["ddpm1000"], "ddim50": results["ddim50"]},
        "ours": {name: results[name] for name in OURS},
        "speedup_vs_ddpm1000": round(results["ddpm1000"]["seconds"] / fast, 1),
        "speedup_vs_ddim50": round(results["ddim50"]["seconds"] / fast, 2),
        "cfg_step_seconds": cfg_step_seconds(model, x_T, classes, 2 if args.quick else 20),
    }
    print(json.dumps(record))


if __name__ == "__main__":
    main()
