"""Training throughput: our step (the body of the training loop: `iterview.training.trainer.loss_of`, backward,
clipping, fused AdamW step, EMA update) vs a plain re-statement of the official fp32 step, same model, same batch,
in one run. Prints one JSON line with images/s and ratios.

The official step (diffusion/trainers/basic.py in fp32 mode + ClassifierFreeGuidance / InpaintCFG
training_losses): label dropout, t ~ U{0..999}, the G_c input assembly, ε-MSE, backward, per-parameter AdamW
(PyTorch 1.11 had no foreach/fused kernels), a per-parameter EMA loop and `loss.item()` every step for the log.

    python benchmarks/bench_train.py                        # GPU: single-category G_u (105M) at 128 px
    python benchmarks/bench_train.py --preset tiny --batch-size 8 --precisions no
    python benchmarks/bench_train.py --quick                # seconds: checks that it runs, times nothing useful
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.state import AcceleratorState

from iterview.diffusion.schedule import DiffusionSchedule
from iterview.models.checkpoint import build_model
from iterview.training.config import get_preset
from iterview.training.ema import ema_copy, update_ema
from iterview.training.trainer import loss_of, make_optimizer


def official_step(model, optimizer, ema_params, schedule, batch, p_uncond=0.1, rate=0.9999):
    x0, classes = batch["x_0"], batch.get("classes")
    optimizer.zero_grad()
    if classes is not None:
        classes = torch.where(torch.rand(classes.shape, device=x0.device) < p_uncond, -1, classes)
    t = torch.randint(0, schedule.num_timesteps, (x0.shape[0],), device=x0.device)
    noise = torch.randn_like(x0)
    x_t = schedule.q_sample(x0, t, noise)
    if "y" in batch:  # InpaintCFG.make_cond_inputs: fresh noise in the holes, 10 channels
        y, mask, mask_rgb = batch["y"], batch["mask"], batch["mask_rgb"]
        rgb = y[:, :3] * mask_rgb + torch.randn_like(y[:, :3]) * (1 - mask_rgb)
        depth = y[:, 3:] * mask + torch.randn_like(y[:, 3:]) * (1 - mask)
        x_t = torch.cat([x_t, mask_rgb, rgb, depth, mask], dim=1)
    loss = F.mse_loss(model(x_t, t, classes), noise)
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        for e, p in zip(ema_params, model.parameters(), strict=True):
            e.mul_(rate).add_(p, alpha=1 - rate)
    return loss.item()


def timed(step, warmup: int, steps: int, device: torch.device) -> float:
    """Seconds per step after warm-up."""
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def time_official(base, schedule, batch, args, device) -> float:
    model = copy.deepcopy(base).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0, foreach=False)
    ema_params = [p.detach().clone() for p in model.parameters()]
    return timed(lambda: official_step(model, optimizer, ema_params, schedule, batch), args.warmup, args.steps, device)


def time_ours(base, config, schedule, batch, precision, compiled, args, device) -> float:
    config = copy.deepcopy(config)
    config.mixed_precision, config.compile = precision, compiled
    accelerator = Accelerator(
        mixed_precision=precision, cpu=device.type == "cpu", dynamo_backend="inductor" if compiled else "no"
    )
    try:
        net = copy.deepcopy(base).to(accelerator.device).train()
        ema = ema_copy(net)
        model, optimizer = accelerator.prepare(net, make_optimizer(net, config))
        generator = torch.Generator(accelerator.device).manual_seed(0)

        def step():  # the body of the loop in `trainer._run`, for one micro-batch
            with accelerator.accumulate(model):
                loss = loss_of(model, batch, schedule, config, generator)
                accelerator.backward(loss)
                if config.grad_clip is not None and accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            update_ema(ema, net, config.ema_rate)

        return timed(step, args.warmup + 2 * compiled, args.steps, device)
    finally:
        accelerator.free_memory()
        AcceleratorState._reset_state()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default=None, help="default: rgbd_singlecategory_adm_128_small on GPU, tiny on CPU")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--precisions", default=None, help="ours: comma list of no,bf16,fp16 (default no,bf16)")
    parser.add_argument("--compile", action="store_true", help="also time ours with torch.compile (bf16)")
    parser.add_argument("--cpu", action="store_true")
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run: tiny, batch 2, one step, fp32")
    args = parser.parse_args()
    if args.quick:
        args.preset, args.batch_size, args.steps, args.warmup, args.precisions = "tiny", 2, 1, 1, "no"

    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    config = get_preset(args.preset or ("rgbd_singlecategory_adm_128_small" if device.type == "cuda" else "tiny"))
    config.batch_size = args.batch_size
    size, generator = config.model.image_size, torch.Generator().manual_seed(0)
    batch = {"x_0": torch.rand(args.batch_size, config.model.out_channels, size, size, generator=generator) * 2 - 1}
    if config.model.num_classes is not None:
        batch["classes"] = torch.randint(0, config.model.num_classes, (args.batch_size,), generator=generator)
    if config.inpaint:
        batch["y"] = torch.rand(args.batch_size, 4, size, size, generator=generator) * 2 - 1
        batch["mask"] = batch["mask_rgb"] = (
            torch.rand(args.batch_size, 1, size, size, generator=generator) > 0.3
        ).float()
    batch = {k: v.to(device) for k, v in batch.items()}
    schedule = DiffusionSchedule.linear(config.timesteps)
    torch.manual_seed(0)
    base = build_model(config.model)
    images = {"official_fp32": args.batch_size / time_official(base, schedule, batch, args, device)}
    variants = [(p, False) for p in (args.precisions or "no,bf16").split(",")] + [("bf16", True)] * args.compile
    for precision, compiled in variants:
        name = {"no": "ours_fp32"}.get(precision, f"ours_{precision}") + ("_compile" if compiled else "")
        images[name] = args.batch_size / time_ours(base, config, schedule, batch, precision, compiled, args, device)

    record = {
        "bench": "train_step",
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "preset": args.preset or ("rgbd_singlecategory_adm_128_small" if device.type == "cuda" else "tiny"),
        "parameters": sum(p.numel() for p in base.parameters()),
        "batch_size": args.batch_size,
        "images_per_s": {k: round(v, 2) for k, v in images.items()},
    }
    record["speedup_vs_official_fp32"] = {
        k: round(v / images["official_fp32"], 3) for k, v in images.items() if k != "official_fp32"
    }
    print(json.dumps(record))


if __name__ == "__main__":
    main()
