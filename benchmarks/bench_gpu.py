"""The GPU run: U-Net throughput at batch 64 and seconds per 3x9 instance of the official ImageNet-128 architecture,
our official-equivalent path and our fast path side by side, against the official code's H200 figures.

- `unet`: images/s of the official ImageNet-128 G_u and G_c at --unet-batch, each in its official dtype layout
  (G_u float32, G_c with float16 blocks: `use_fp16` of its config) and computing attention as the official
  module does, against ours: `sdpa` (the module as trained), `fast` (`prepare_for_inference`), `fast+bf16`
  (bf16 autocast) and, with --compile, `compiled` (`compile_for_inference`). Max abs error against the official
  output beside each.
- `instance_b{N}`: one batch of N 3x9 instances (27 views) with those models: the official-equivalent path (G_u
  DDPM-1000, G_c DDIM-50, both with classifier-free guidance, the official modules) and the fast path (`--sampler
  fast`, `prepare_for_inference` modules): seconds for view 0, per further view and per instance. The official
  code on an H200 takes 20.2 s for view 0 and 1.22 s per further view at batch 1, 18.4 s per instance at batch 10.

The weights are random (perturbed from the official initialisation so that every layer acts): time does not
depend on them, and the released ones cannot be fetched here. The shipped synth models' instance is
`bench_pipeline.py --device cuda`, the geometry's `bench_warp.py` (it times every device present); the script
`benchmarks/gpu.sh` runs all three. Prints one JSON line; --out also appends each section's record to a JSON-lines
file as soon as it is measured, so a run cut short keeps what it finished.

    python benchmarks/bench_gpu.py [--device cuda] [--unet-batch 64] [--batches 1,10] [--compile] [--out F]
        [--quick]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from bench_unet import official_module

from iterview.diffusion.presets import OFFICIAL_COND, SamplerChoice, resolve_samplers
from iterview.diffusion.schedule import DiffusionSchedule
from iterview.geometry.inference import InferenceGeometry
from iterview.models.adm import ADMUNet, compile_for_inference, prepare_for_inference
from iterview.models.checkpoint import build_model
from iterview.pipeline.multiview import MultiViewPipeline
from iterview.pipeline.viewsets import grid_viewset_3x9
from iterview.training.config import get_preset

OFFICIAL_H200 = {"view0_s": 20.2, "further_view_s": 1.22, "instance_s_b10": 18.4}
PRESETS = {"uncond": "rgbd_imagenet_adm_128_large_cfg", "cond": "rgbd_imagenet_adm_128_large_cond"}
QUICK_PRESETS = {"uncond": "tiny", "cond": "tiny_cond"}


def random_model(preset: str, device: str, seed: int) -> ADMUNet:
    """The preset's U-Net in eval mode on device, official initialisation moved by 0.02·N(0, 1) per weight (the
    zero-initialised output layers would otherwise make every output equal)."""
    torch.manual_seed(seed)
    model = build_model(get_preset(preset).model).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    return model.to(device)


def official_dtypes(model: ADMUNet, preset: str, device: str) -> ADMUNet:
    """model switched (in place) to the official dtype layout: float16 blocks where the config says use_fp16 (on
    CUDA only: CPU float16 convolutions are an emulation), float32 elsewhere."""
    if get_preset(preset).mixed_precision == "fp16" and device.startswith("cuda"):
        model.convert_to_fp16()
    return model


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def median_seconds(call: Callable[[], object], device: str, repeats: int) -> float:
    """Median wall seconds of call() after two warm-up calls, the device synchronised around each."""
    for _ in range(2):
        call()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def autocast(model: torch.nn.Module, device: str) -> Callable:
    """model under bf16 autocast on device, with a float32 result."""

    def forward(*inputs: torch.Tensor) -> torch.Tensor:
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
            return model(*inputs).float()

    return forward


@torch.no_grad()
def unet_record(role: str, args: argparse.Namespace) -> dict:
    """Images/s, ratio to the official module and max abs error of each variant of one model."""
    preset = args.presets[role]
    model = official_dtypes(random_model(preset, args.device, seed=0), preset, args.device)
    official = official_module(model)
    fast = prepare_for_inference(copy.deepcopy(model))
    variants: dict[str, Callable] = {"official": official, "sdpa": model, "fast": fast}
    variants["fast+bf16"] = autocast(fast, args.device)
    if args.compile:
        variants["compiled"] = compile_for_inference(copy.deepcopy(model))
    generator = torch.Generator(args.device).manual_seed(0)
    size, batch = model.image_size, args.unet_batch
    x = torch.randn(batch, model.in_channels, size, size, device=args.device, generator=generator)
    t = torch.randint(0, 1000, (batch,), device=args.device, generator=generator)
    classes = torch.randint(0, model.num_classes, (batch,), device=args.device, generator=generator)
    reference = official(x, t, classes).float()
    record: dict = {"preset": preset, "batch": batch, "block_dtype": str(official.block_dtype)}
    seconds = {}
    for name, forward in variants.items():
        if forward is not official:
            record[f"{name}_max_abs_error"] = (forward(x, t, classes).float() - reference).abs().max().item()
        seconds[name] = median_seconds(lambda f=forward: f(x, t, classes), args.device, args.repeats)
    for name, value in seconds.items():
        record[f"{name}_images_per_s"] = round(batch / value, 1)
        record[f"{name}_ratio"] = round(seconds["official"] / value, 3)
    return record


def pipelines(args: argparse.Namespace) -> dict[str, MultiViewPipeline]:
    """The official-equivalent and the fast pipeline over the same random official-architecture models."""
    models = {
        role: official_dtypes(random_model(preset, args.device, seed=k), preset, args.device)
        for k, (role, preset) in enumerate(args.presets.items())
    }
    official = {role: official_module(model) for role, model in models.items()}
    fast = {role: prepare_for_inference(copy.deepcopy(model)) for role, model in models.items()}
    timesteps = 50 if args.quick else 1000
    schedule = DiffusionSchedule.linear(timesteps)
    geometry = InferenceGeometry.for_size(models["uncond"].image_size)
    uncond, cond = resolve_samplers("fast", timesteps=timesteps, steps_cond=2 if args.quick else None)
    official_samplers = SamplerChoice("ddpm", timesteps), SamplerChoice("ddim", 2) if args.quick else OFFICIAL_COND
    return {
        "official": MultiViewPipeline(
            official["uncond"], official["cond"], schedule, *official_samplers, geometry=geometry
        ),
        "fast": MultiViewPipeline(fast["uncond"], fast["cond"], schedule, uncond, cond, geometry=geometry),
    }


@torch.no_grad()
def instance_seconds(pipeline: MultiViewPipeline, batch: int, views: int, device: str) -> dict:
    """Seconds for view 0, per further view and per instance of one batch of `views`-view 3x9 instances, and the
    U-Net image evaluations per instance (counted at the models' forward calls)."""
    finished: list[float] = []
    evaluations = [0]

    def callback(step: dict) -> None:
        if "sample" in step:
            synchronize(device)
            finished.append(time.perf_counter())

    def count(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        evaluations[0] += len(inputs[0])

    modelviews = grid_viewset_3x9().modelviews[:views].expand(batch, views, 4, 4).to(device)
    generators = [torch.Generator(device).manual_seed(seed) for seed in range(batch)]
    classes = torch.arange(batch, device=device) % pipeline.g_u.num_classes
    hooks = [model.register_forward_hook(count) for model in (pipeline.g_u, pipeline.g_c)]
    synchronize(device)
    start = time.perf_counter()
    pipeline(modelviews, generators, classes, callback=callback)
    synchronize(device)
    total = time.perf_counter() - start
    for hook in hooks:
        hook.remove()
    further = (finished[-1] - finished[0]) / (views - 1)
    return {
        "view0_s": round(finished[0] - start, 3),
        "further_view_s": round(further, 4),
        "s_per_instance": round(total / batch, 3),
        "unet_evals": evaluations[0] // batch,
    }


def instance_record(paths: dict[str, MultiViewPipeline], batch: int, args: argparse.Namespace) -> dict:
    """Both paths at one batch size, the speed-up, and the official H200 figure for that batch."""
    record: dict = {"section": f"instance_b{batch}", "batch": batch, "views": args.views}
    for name, pipeline in paths.items():
        record[name] = instance_seconds(pipeline, batch, args.views, args.device)
    record["speedup"] = round(record["official"]["s_per_instance"] / record["fast"]["s_per_instance"], 2)
    h200 = OFFICIAL_H200
    if batch == 1:
        record["official_code_h200_s_per_instance"] = round(
            h200["view0_s"] + (args.views - 1) * h200["further_view_s"], 2
        )
    elif batch == 10:
        record["official_code_h200_s_per_instance"] = h200["instance_s_b10"]
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--unet-batch", type=int, default=64)
    parser.add_argument("--batches", default="1,10", help="instances per batch of the 3x9 runs, comma-separated")
    parser.add_argument("--views", type=int, default=27)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of the fast U-Net")
    parser.add_argument("--out", type=Path, help="append each section's record to this JSON-lines file")
    parser.add_argument("--quick", action="store_true", help="seconds: tiny models, 3 views, a 50-step schedule")
    args = parser.parse_args()
    if args.views < 2:
        parser.error("--views must be at least 2 (view 0 and a further view)")
    args.presets = QUICK_PRESETS if args.quick else PRESETS
    if args.quick:
        args.unet_batch, args.batches, args.views, args.repeats = 2, "1,2", 3, 1
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    result: dict = {"bench": "gpu", "device": device_name, "torch": torch.__version__, "official_h200": OFFICIAL_H200}

    def keep(record: dict) -> None:
        result[record.pop("section")] = record
        if args.out is not None:
            with args.out.open("a") as file:
                file.write(json.dumps({"device": device_name, **record}) + "\n")

    for role in ("uncond", "cond"):
        keep({"section": f"unet_{role}", **unet_record(role, args)})
    paths = pipelines(args)
    for batch in (int(b) for b in args.batches.split(",")):
        keep(instance_record(paths, batch, args))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
