"""U-Net forward throughput: the official module's computation vs ours and its speed-ups, same weights, one run.

The official AdmUnet2d differs from ours only in its attention: QKVAttentionLegacy's two einsums with a float32
softmax, where ours calls scaled_dot_product_attention. Each variant is checked against the official output
(max abs error) and timed at batch 1 and batch 16. Prints one JSON line.

    python benchmarks/bench_unet.py [--model synth|official-128] [--quick] [--compile]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from collections.abc import Callable

import torch

from iterview.models.adm import ADMUNet, AttentionBlock
from iterview.models.checkpoint import build_model
from iterview.training.config import get_preset


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
    official = copy.deepcopy(model)
    for block in official.modules():
        if isinstance(block, AttentionBlock):
            block.forward = official_attention.__get__(block)
    return official


def timed(fn: Callable[[], torch.Tensor], repeats: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="synth", choices=["synth", "official-128"])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow to warm up)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    preset = "synth_u" if args.model == "synth" else "rgbd_imagenet_adm_128_large_cfg"
    config = get_preset(preset).model
    if args.quick:
        args.repeats = 1
    torch.manual_seed(0)
    model = build_model(config).eval()
    with torch.no_grad():
        for p in model.parameters():  # zero-initialised output layers would make every output equal
            p.add_(torch.randn_like(p) * 0.02)
    official = official_module(model)
    variants: dict[str, Callable] = {"sdpa": model}
    channels_last = copy.deepcopy(model).to(memory_format=torch.channels_last)
    variants["sdpa+channels_last"] = lambda x, t, y: channels_last(
        x.contiguous(memory_format=torch.channels_last), t, y
    )

    def bf16(x, t, y):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return channels_last(x.contiguous(memory_format=torch.channels_last), t, y).float()

    variants["sdpa+channels_last+bf16"] = bf16
    if args.compile:
        variants["compiled"] = torch.compile(model)
    record: dict = {"bench": "unet", "model": args.model, "threads": torch.get_num_threads()}
    for batch in (1, 16):
        x = torch.randn(batch, config.in_channels, config.image_size, config.image_size)
        t = torch.randint(0, 1000, (batch,))
        y = torch.randint(0, config.num_classes, (batch,)) if config.num_classes else None
        with torch.no_grad():
            reference = official(x, t, y)
            base = timed(lambda x=x, t=t, y=y: official(x, t, y), args.repeats)
            record[f"official_b{batch}_per_s"] = batch / base
            for name, fn in variants.items():
                error = (fn(x, t, y) - reference).abs().max().item()
                seconds = timed(lambda fn=fn, x=x, t=t, y=y: fn(x, t, y), args.repeats)
                record[f"{name}_b{batch}_per_s"] = batch / seconds
                record[f"{name}_b{batch}_ratio"] = base / seconds
                record[f"{name}_b{batch}_max_abs_error"] = error
    print(json.dumps(record))


if __name__ == "__main__":
    main()
