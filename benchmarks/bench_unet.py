"""U-Net throughput on one machine, side by side: the official module's computation vs ours and each speed-up,
same weights, one run, interleaved timings. Prints one JSON line.

The official AdmUnet2d differs from ours only in its attention: QKVAttentionLegacy's two einsums with a float32
softmax, where ours calls scaled_dot_product_attention. Inference variants, each checked against the official
output (max abs error; fp32 variants must stay within 1e-4) and timed at batch 1 and batch 16:

- `sdpa`: our module as trained; `sdpa+channels_last`: the same with channels_last memory;
- `token_attention`: attention on (B, T, C) tokens, so CPU SDPA runs its fused kernel;
- `token_attention+silu_inplace`: plus the SiLU after each GroupNorm in place (`prepare_for_inference` without
  channels_last); `fast`: `prepare_for_inference(model)`, all of the above;
- `fast+bf16`: `fast` under bf16 autocast (opt-in; AMX-BF16 CPUs); `compiled`: `compile_for_inference`, i.e.
  torch.compile of `fast` with frozen weights and a C++ wrapper, what `iterview sample --compile` runs (--compile).

Training steps (forward, backward, AdamW) per second at --train-batch: official, ours, channels_last, token-major
attention with channels_last, and bf16 autocast.

    python benchmarks/bench_unet.py [--model synth|official-128] [--repeats 10] [--compile] [--quick]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import time
from collections.abc import Callable

import torch

from iterview.models.adm import ADMUNet, AttentionBlock, compile_for_inference, prepare_for_inference
from iterview.models.checkpoint import build_model
from iterview.training.config import get_preset

Forward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
FP32_TOLERANCE = 1e-4


def official_attention(self: AttentionBlock, x: torch.Tensor) -> torch.Tensor:
    """QKVAttentionLegacy: per-head [q, k, v] split, scale ch^-¼ on q and k, einsum, float32 softmax, einsum."""
    b, c, *spatial = x.shape
    x = x.reshape(b, c, -1)
    qkv = self.qkv(self.norm(x)).reshape(b * self.num_heads, 3 * c // self.num_heads, -1)
    ch = c // self.num_heads
    q, k, v = qkv.split(ch, dim=1)
    scale = 1 / math.sqrt(math.sqrt(ch))
    weight = torch.einsum("bct,bcs->bts", q * scale, k * scale)
    weight = torch.softmax(weight.float(), dim=-1).type(weight.dtype)
    h = torch.einsum("bts,bcs->bct", weight, v).reshape(b, -1, x.shape[-1])
    return (x + self.proj_out(h)).reshape(b, c, *spatial)


def official_module(model: ADMUNet) -> ADMUNet:
    """A copy of model computing attention as the official module does."""
    official = copy.deepcopy(model)
    for block in official.modules():
        if isinstance(block, AttentionBlock):
            block.forward = official_attention.__get__(block)
    return official


def token_major(model: ADMUNet) -> ADMUNet:
    """A copy whose attention blocks run on (B, T, C) tokens, nothing else changed (trainable)."""
    model = copy.deepcopy(model)
    for block in model.modules():
        if isinstance(block, AttentionBlock):
            block.token_major = True
    return model


def bf16(model: ADMUNet) -> Forward:
    """model under bf16 autocast, with a float32 result."""

    def forward(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return model(x, t, y).float()

    return forward


def inference_variants(model: ADMUNet, compile_fast: bool) -> dict[str, Forward]:
    """The official formulation and each speed-up, as forward functions over copies of the same weights."""
    fast = prepare_for_inference(copy.deepcopy(model))
    variants: dict[str, Forward] = {
        "official": official_module(model),
        "sdpa": model,
        "sdpa+channels_last": copy.deepcopy(model).to(memory_format=torch.channels_last),
        "token_attention": token_major(model),
        "token_attention+silu_inplace": prepare_for_inference(copy.deepcopy(model), channels_last=False),
        "fast": fast,
        "fast+bf16": bf16(fast),
    }
    if compile_fast:
        variants["compiled"] = compile_for_inference(copy.deepcopy(model))
    return variants


def interleaved_seconds(calls: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds per call of each callable, after one warm-up call each, timed round-robin so that a
    change in machine load hits every variant alike."""
    for call in calls.values():
        call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(times) for name, times in samples.items()}


@torch.no_grad()
def measure_inference(variants: dict[str, Forward], inputs: tuple, batch: int, repeats: int) -> dict:
    """Max abs error against the official output, images per second and speed-up of each variant."""
    reference = variants["official"](*inputs)
    record = {}
    for name, forward in variants.items():
        if name != "official":
            record[f"{name}_b{batch}_max_abs_error"] = (forward(*inputs) - reference).abs().max().item()
    seconds = interleaved_seconds({name: lambda f=f: f(*inputs) for name, f in variants.items()}, repeats)
    for name, value in seconds.items():
        record[f"{name}_b{batch}_per_s"] = batch / value
        record[f"{name}_b{batch}_ratio"] = seconds["official"] / value
    return record


def measure_training(model: ADMUNet, inputs: tuple, repeats: int) -> dict:
    """Training steps per second (forward, ε-MSE, backward, AdamW step) of each formulation, as images/s."""
    setups = {
        "official": (official_module(model), False),
        "sdpa": (copy.deepcopy(model), False),
        "sdpa+channels_last": (copy.deepcopy(model).to(memory_format=torch.channels_last), False),
        "token_attention+channels_last": (token_major(model).to(memory_format=torch.channels_last), False),
        "sdpa+bf16": (copy.deepcopy(model), True),
    }
    noise = torch.randn_like(inputs[0][:, : model.out_channels])

    def step(network: ADMUNet, optimizer: torch.optim.Optimizer, autocast: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = (network(*inputs).float() - noise).square().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    calls = {}
    for name, (network, autocast) in setups.items():
        optimizer = torch.optim.AdamW(network.train().parameters(), lr=1e-4)
        calls[name] = lambda n=network, o=optimizer, a=autocast: step(n, o, a)
    seconds = interleaved_seconds(calls, repeats)
    batch = len(inputs[0])
    return {f"train_{name}_images_per_s": batch / value for name, value in seconds.items()} | {
        f"train_{name}_ratio": seconds["official"] / value for name, value in seconds.items()
    }


def random_inputs(model: ADMUNet, batch: int) -> tuple:
    """(x, timesteps, classes) of `batch` rows for model."""
    size = model.image_size
    x = torch.randn(batch, model.in_channels, size, size)
    classes = torch.randint(0, model.num_classes, (batch,)) if model.num_classes else None
    return x, torch.randint(0, 1000, (batch,)), classes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="synth", choices=["synth", "official-128"])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--train-batch", type=int, default=16)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (minutes to warm up)")
    parser.add_argument("--quick", action="store_true", help="seconds: one timed call per variant")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.train_batch = 1, 2
    preset = "synth_u" if args.model == "synth" else "rgbd_imagenet_adm_128_large_cfg"
    torch.manual_seed(0)
    model = build_model(get_preset(preset).model).eval()
    with torch.no_grad():
        for p in model.parameters():  # zero-initialised output layers would make every output equal
            p.add_(torch.randn_like(p) * 0.02)
    variants = inference_variants(model, args.compile)
    record: dict = {"bench": "unet", "model": args.model, "threads": torch.get_num_threads()}
    for batch in (1, 16):
        record |= measure_inference(variants, random_inputs(model, batch), batch, args.repeats)
    errors = [v for k, v in record.items() if k.endswith("max_abs_error") and "bf16" not in k]
    record["fp32_within_1e-4"] = max(errors) <= FP32_TOLERANCE
    record |= measure_training(model, random_inputs(model, args.train_batch), max(1, args.repeats // 2))
    print(json.dumps(record))


if __name__ == "__main__":
    main()
