"""Training G_u and G_c: one loop on accelerate (devices, DDP, gradient accumulation, mixed precision).

Fixes of the official trainer: resume works and restores everything (EMA included); the EMA starts from the
fine-tune weights; every epoch reshuffles (set_epoch); micro-batch losses are averaged, not summed.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import ProjectConfiguration, TorchDynamoPlugin, is_tensorboard_available
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, default_collate
from tqdm.auto import tqdm

from iterview.data.datasets import RGBDDataset, WarpPairDataset
from iterview.diffusion.guidance import inpaint_input
from iterview.diffusion.schedule import DiffusionSchedule, ModelFn, randn_like
from iterview.io import save_png
from iterview.models.checkpoint import build_model, expand_input_channels, load_weights, read_state_dict
from iterview.seeds import derive_seed
from iterview.training.config import TrainConfig
from iterview.training.ema import ema_copy, update_ema
from iterview.training.samples import sample_grid
from iterview.training.state import (
    TrainState,
    checkpoint_dirs,
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    weights_dir,
)

CONFIG_FILE = "train_config.json"
LOG_FILE = "log.jsonl"


def train(
    config: TrainConfig,
    output_dir: str | Path,
    resume: bool = False,
    init_from: str | Path | None = None,
    cpu: bool = False,
    progress: bool = True,
) -> Path:
    """Train until config.max_steps; returns the EMA weights folder of the last checkpoint (for `load_model`).

    resume: continue from the newest checkpoint in output_dir (a fresh start if there is none).
    init_from: weights to start a new run from (our model folder, checkpoint or run folder: its EMA; or an
    official `.pt`); input channels they lack (G_u -> G_c) start at zero. Launch with `accelerate launch` for
    several processes or machines.
    """
    output_dir = Path(output_dir)
    accelerator = Accelerator(
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.grad_accum,
        cpu=cpu,
        log_with="tensorboard" if is_tensorboard_available() else None,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "tensorboard")),
        dynamo_plugin=_dynamo_plugin(config.compile),
    )
    if config.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        _enable_cpu_fp16(accelerator)
    try:
        return _run(accelerator, config, output_dir, resume, init_from, progress)
    finally:
        accelerator.end_training()
        AcceleratorState._reset_state()  # so a later train() in this process may pick another precision


def _dynamo_plugin(compile: bool) -> TorchDynamoPlugin:
    """Inductor with static shapes when compiling: the batch size is fixed, and a shape dynamo saw change in an
    earlier compile of the same code (e.g. `compile_for_inference` in this process) must not make it symbolic."""
    return TorchDynamoPlugin(backend="inductor", dynamic=False) if compile else TorchDynamoPlugin(backend="no")


def _enable_cpu_fp16(accelerator: Accelerator) -> None:
    """Switch on accelerate's own fp16 path (autocast in `prepare`, loss scaling in `backward` and the optimiser
    step) on the CPU, before anything is prepared: accelerate (1.16) leaves fp16 off there and trains in fp32
    without a word, although torch autocasts to fp16 and has a GradScaler on the CPU."""
    accelerator.native_amp = True
    accelerator.scaler = torch.amp.GradScaler("cpu")


@dataclass
class Run:
    """Everything the loop works with, set up fresh or resumed: model is the prepared (DDP/compiled) module,
    net the bare one; batches yields (batch, epoch, next batch index); sample_batch: the grids' fixed inputs
    (main process only)."""

    model: nn.Module
    net: nn.Module
    ema: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: DiffusionSchedule
    generator: torch.Generator
    state: TrainState
    batches: Iterator[tuple[dict[str, torch.Tensor], int, int]]
    sample_batch: dict[str, torch.Tensor] | None


def _run(
    accelerator: Accelerator,
    config: TrainConfig,
    output_dir: Path,
    resume: bool,
    init_from: str | Path | None,
    progress: bool,
) -> Path:
    """The loop: one optimiser step over grad_accum micro-batches and the EMA update per iteration, then the log
    record, the sample grid and the checkpoint when their step comes."""
    run = setup_run(accelerator, config, output_dir, resume, init_from)
    model, net, optimizer, state, device = run.model, run.net, run.optimizer, run.state, accelerator.device
    images_per_step = config.batch_size * config.grad_accum * accelerator.num_processes
    bar = tqdm(
        total=config.max_steps, initial=state.step, unit="step", disable=not (progress and accelerator.is_main_process)
    )
    window = LossWindow(torch.zeros((), device=device))
    model.train()
    while state.step < config.max_steps:
        tick = time.perf_counter()
        total = torch.zeros((), device=device)  # on device, so the step never waits for the GPU
        scale = _loss_scale(accelerator)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(config, state.step)
        for _ in range(config.grad_accum):
            batch, state.epoch, state.batch = next(run.batches)
            with accelerator.accumulate(model):
                loss = loss_of(model, batch, run.schedule, config, run.generator)
                accelerator.backward(loss)
                if config.grad_clip is not None and accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            total += loss.detach()
        if scale is None or _loss_scale(accelerator) >= scale:  # else an fp16 overflow: no update, nothing to average
            update_ema(run.ema, net, ema_rate_at(config, state.step))
        state.step += 1
        window.add(total / config.grad_accum, time.perf_counter() - tick)
        bar.update()

        if state.step % config.log_every == 0 or state.step == config.max_steps:
            record = window.record(accelerator, state, optimizer, images_per_step)
            _write_log(accelerator, output_dir / LOG_FILE, record)
            bar.set_postfix(loss=f"{record['loss']:.4f}", img_s=f"{record['images_per_s']:.1f}")
        if state.step % config.sample_every == 0 and accelerator.is_main_process:
            generator = _sample_generator(config, device)
            grid = sample_grid(net, run.schedule, run.sample_batch, config.sample_steps, config.guidance, generator)
            save_png(grid, output_dir / "samples" / f"step_{state.step:07d}.png")
        if state.step % config.save_every == 0 or state.step == config.max_steps:
            _save(accelerator, output_dir, state, net, run.ema, config, optimizer, run.generator)
    bar.close()
    return checkpoint_path(output_dir, state.step) / "ema"  # the last step is always saved


def setup_run(
    accelerator: Accelerator, config: TrainConfig, output_dir: Path, resume: bool, init_from: str | Path | None
) -> Run:
    """Build the dataset, model, EMA, optimiser and generator, restored from the newest checkpoint when resuming
    (init_from only seeds a fresh run); writes the run's config and trims its log to the resumed step."""
    device, rank, world = accelerator.device, accelerator.process_index, accelerator.num_processes
    checkpoint = latest_checkpoint(output_dir) if resume else None
    if not resume and checkpoint_dirs(output_dir):
        raise ValueError(f"{output_dir} already holds checkpoints: pass resume (--resume) or another output folder")
    dataset = make_dataset(config)
    if len(dataset) // world < config.batch_size:
        raise ValueError(
            f"{config.data_dir} has {len(dataset)} items, too few for batch_size {config.batch_size} on each of "
            f"{world} processes"
        )
    with torch.random.fork_rng(devices=[]):  # reproducible init, same on every device, global RNG untouched
        torch.manual_seed(config.seed)
        net = build_model(config.model).to(device)
    if checkpoint is None and init_from is not None:
        init_weights(net, init_from)
    elif init_from is not None:
        accelerator.print(f"resuming from {checkpoint.name}: init_from {init_from} is not used")
    if config.channels_last:
        net = net.to(memory_format=torch.channels_last)
    ema, optimizer, generator = ema_copy(net), make_optimizer(net, config), torch.Generator(device)
    state = _restore(accelerator, checkpoint, net, ema, optimizer, generator, config)
    model, optimizer = accelerator.prepare(net, optimizer)
    if accelerator.scaler is not None and state.scaler is not None:
        accelerator.scaler.load_state_dict(state.scaler)

    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        config.save(output_dir / CONFIG_FILE)
        _truncate_log(output_dir / LOG_FILE, state.step)
    accelerator.init_trackers("iterview")
    accelerator.print(
        f"training {sum(p.numel() for p in net.parameters()):,} parameters on {world} × {device}, "
        f"{config.batch_size * config.grad_accum * world} images per step, from step {state.step}"
    )
    return Run(
        model=model,
        net=net,
        ema=ema,
        optimizer=optimizer,
        schedule=DiffusionSchedule.linear(config.timesteps),
        generator=generator,
        state=state,
        batches=_batches(dataset, config, rank, world, state.epoch, state.batch, device),
        sample_batch=_sample_batch(dataset, config, device) if accelerator.is_main_process else None,
    )


def _restore(
    accelerator: Accelerator,
    checkpoint: Path | None,
    net: nn.Module,
    ema: nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    config: TrainConfig,
) -> TrainState:
    """Load the checkpoint (if any) into net, ema, optimizer and the RNGs; a run resumed on another number of
    processes keeps its position in images, not batches. The optimiser takes weight decay from config."""
    seed, weight_decay = config.seed, config.weight_decay
    device, rank, world = accelerator.device, accelerator.process_index, accelerator.num_processes
    if checkpoint is None:
        generator.manual_seed(derive_seed(seed, rank, 0))
        return TrainState(world_size=world)
    state, rng = load_checkpoint(checkpoint, net, ema, optimizer)
    _restore_rng(rng, state, generator, rank, world, device, seed)
    for group in optimizer.param_groups:  # the config decides (the loop sets lr each step from config too)
        group["weight_decay"] = weight_decay
    if state.world_size != world:
        accelerator.print(f"resuming a {state.world_size}-process run on {world}: data order and noise will differ")
        state.batch = state.batch * state.world_size // world
        state.world_size = world
    return state


@dataclass
class LossWindow:
    """Losses (on device: summing never waits for the GPU) and step times since the last log record."""

    loss: torch.Tensor
    steps: int = 0
    seconds: float = 0.0
    start: float = field(default_factory=time.perf_counter)

    def add(self, loss: torch.Tensor, seconds: float) -> None:
        """Count one step's mean loss and duration."""
        self.loss += loss
        self.steps += 1
        self.seconds += seconds

    def record(
        self, accelerator: Accelerator, state: TrainState, optimizer: torch.optim.Optimizer, images_per_step: int
    ) -> dict[str, float]:
        """The log record of the window (loss averaged over processes), then an empty window."""
        record = {
            "step": state.step,
            "epoch": state.epoch,
            "loss": accelerator.reduce(self.loss, "mean").item() / self.steps,
            "images_per_s": images_per_step * self.steps / self.seconds,
            "elapsed_s": time.perf_counter() - self.start,
            "lr": optimizer.param_groups[0]["lr"],
        }
        if accelerator.scaler is not None:
            record["loss_scale"] = accelerator.scaler.get_scale()
        self.loss.zero_()
        self.steps, self.seconds = 0, 0.0
        return record


def _write_log(accelerator: Accelerator, path: Path, record: dict[str, float]) -> None:
    """Append the record to log.jsonl (main process) and to the trackers (TensorBoard)."""
    if accelerator.is_main_process:
        with path.open("a") as f:
            f.write(json.dumps(record) + "\n")
    accelerator.log({k: v for k, v in record.items() if k != "step"}, step=record["step"])


def loss_of(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    schedule: DiffusionSchedule,
    config: TrainConfig,
    generator: torch.Generator,
) -> torch.Tensor:
    """The official ε-prediction loss on one micro-batch: label dropout (and the G_c input) in
    `conditioned_model`, t ~ U{0..T-1}, noise, x_t = q_sample(x_0, t, noise), the (Min-SNR-weighted) ε-MSE.
    model: the prepared (DDP/compiled) module; batch as in `conditioned_model`."""
    model_fn, x0 = conditioned_model(model, batch, config.p_uncond, generator), batch["x_0"]
    t = torch.randint(0, schedule.num_timesteps, (x0.shape[0],), generator=generator, device=x0.device)
    noise = randn_like(x0, generator)
    eps = model_fn(schedule.q_sample(x0, t, noise), t)
    return schedule.eps_loss(eps, noise, t, config.min_snr_gamma, config.depth_loss_weight)


def learning_rate_at(config: TrainConfig, step: int) -> float:
    """The learning rate of optimiser step `step` (0-based): constant, or cosine-annealed to 0 at max_steps.
    A function of the step alone, so a resumed run continues the schedule exactly."""
    if config.lr_schedule == "constant":
        return config.learning_rate
    return 0.5 * config.learning_rate * (1 + math.cos(math.pi * min(step, config.max_steps) / config.max_steps))


def ema_rate_at(config: TrainConfig, step: int) -> float:
    """The EMA rate of the update after `step` optimiser steps: config.ema_rate, ramped up as
    (1 + step) / (10 + step) over the first steps when config.ema_warmup is set."""
    return min(config.ema_rate, (1 + step) / (10 + step)) if config.ema_warmup else config.ema_rate


def _loss_scale(accelerator: Accelerator) -> float | None:
    """The fp16 loss scale (None without loss scaling); the scaler halves it exactly when it skips a step.

    A skip is read from here, not from `accelerator.optimizer_step_was_skipped`: the fused AdamW of the GPU skips
    inside its kernel, and accelerate then reports the step as taken. Reading it waits for the GPU, as the scaler's
    own skip check does for unfused optimisers."""
    return accelerator.scaler.get_scale() if accelerator.scaler is not None else None


def make_optimizer(net: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW (official lr 1e-4, wd 0, default betas), fused into one kernel per step on the GPU."""
    fused = next(net.parameters()).device.type == "cuda"
    return torch.optim.AdamW(net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay, fused=fused)


def conditioned_model(
    model: nn.Module, batch: dict[str, torch.Tensor], p_uncond: float, generator: torch.Generator
) -> ModelFn:
    """The model as model_fn(x_t, t) -> ε on one batch: classes dropped to the null class (-1) with probability
    p_uncond (drawn now), and for G_c the official 10-channel input with fresh hole noise at every call.
    G_u batch: "x_0" (B, 4, S, S) in [-1, 1], optional "classes" (B,); G_c adds "y" (B, 4, S, S), "mask" and
    "mask_rgb" (B, 1, S, S)."""
    classes = batch.get("classes")
    if classes is not None and p_uncond > 0:
        drop = torch.rand(classes.shape, generator=generator, device=classes.device) < p_uncond
        classes = classes.masked_fill(drop, -1)
    if "y" in batch:
        return lambda x_t, t: model(
            inpaint_input(x_t, batch["y"], batch["mask"], batch["mask_rgb"], generator), t, classes
        )
    return lambda x_t, t: model(x_t, t, classes)


def make_dataset(config: TrainConfig) -> RGBDDataset:
    """RGBD images for G_u, forward-backward warp pairs for G_c, checked against the model's classes."""
    if not config.data_dir:
        raise ValueError("the training config has no data_dir: set it (--data) to a prepared dataset folder")
    size = config.model.image_size
    if config.inpaint:
        dataset = WarpPairDataset(
            config.data_dir,
            size,
            augments=tuple(config.augments),
            std=config.camera_std,
            seed=config.seed,
            pixel_scale=config.warp_pixel_scale,
        )
    else:
        dataset = RGBDDataset(config.data_dir, size)
    wanted, found = config.model.num_classes, dataset.num_classes
    if wanted is not None and (found is None or found > wanted):
        raise ValueError(
            f"the model has {wanted} classes but {config.data_dir} has {found or 'no'} labels: set "
            "model.num_classes to the dataset's class count, or null for an unconditional model"
        )
    return dataset


def init_weights(model: nn.Module, path: str | Path) -> None:
    """Load fine-tune weights into model; tensors narrower along the input channels are zero-padded."""
    state_dict = read_state_dict(weights_dir(path))
    load_weights(model, expand_input_channels(state_dict, model))


def _batches(
    dataset: Dataset, config: TrainConfig, rank: int, world: int, epoch: int, start: int, device: torch.device
) -> Iterator[tuple[dict[str, torch.Tensor], int, int]]:
    """Endless batches of this process's shard; yields (batch, epoch, next batch index), so any position can be
    resumed. The order depends only on (seed, epoch); warp pairs depend on (seed, epoch, index)."""
    keep_classes = config.model.num_classes is not None
    size = config.batch_size
    while True:
        sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, seed=config.seed, drop_last=True)
        sampler.set_epoch(epoch)
        indices = list(sampler)
        count = len(indices) // size
        if isinstance(dataset, WarpPairDataset):
            dataset.set_epoch(epoch)
        loader = DataLoader(
            dataset,
            batch_size=size,
            sampler=indices[start * size : count * size],
            num_workers=config.num_workers,
            pin_memory=device.type == "cuda",
            generator=torch.Generator().manual_seed(derive_seed(config.seed, rank, epoch)),  # else it draws global RNG
        )
        for index, batch in enumerate(loader, start + 1):
            yield (
                {k: v.to(device, non_blocking=True) for k, v in batch.items() if keep_classes or k != "classes"},
                epoch,
                index,
            )
        epoch, start = epoch + 1, 0


def _sample_batch(dataset: RGBDDataset, config: TrainConfig, device: torch.device) -> dict[str, torch.Tensor]:
    """The fixed inputs of every sample grid: the first items (G_c conditions) and one class per column."""
    count = min(config.num_samples, len(dataset))
    batch = default_collate([dataset[i] for i in range(count)])
    batch.pop("pose", None)
    if config.model.num_classes is not None:
        batch["classes"] = torch.arange(count) % config.model.num_classes
    else:
        batch.pop("classes", None)
    return {k: v.to(device) for k, v in batch.items()}


def _sample_generator(config: TrainConfig, device: torch.device) -> torch.Generator:
    """The same noise at every grid, so grids from different steps compare."""
    return torch.Generator(device).manual_seed(config.seed)


def _rng_states(generator: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    """This process's RNG states: our generator (noise, timesteps, label dropout) and torch's global ones
    (dropout layers)."""
    states = {"generator": generator.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def _restore_rng(
    rng: dict[str, torch.Tensor],
    state: TrainState,
    generator: torch.Generator,
    rank: int,
    world: int,
    device: torch.device,
    seed: int,
) -> None:
    if state.world_size != world:
        generator.manual_seed(derive_seed(seed, rank, state.step))
        return
    generator.set_state(rng["generator"][rank].cpu())
    torch.set_rng_state(rng["torch"][rank].cpu())
    if "cuda" in rng and device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"][rank].cpu(), device)


def _fingerprint(module: nn.Module) -> torch.Tensor:
    """(P, 2) float64: sum and sum of squares of every parameter, to compare replicas across processes."""
    return torch.stack([torch.stack([p.double().sum(), p.double().square().sum()]) for p in module.parameters()])


def _save(
    accelerator: Accelerator,
    output_dir: Path,
    state: TrainState,
    net: nn.Module,
    ema: nn.Module,
    config: TrainConfig,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
) -> None:
    """Every process contributes its RNG states and replica fingerprints; the main process writes."""
    device = accelerator.device
    rng = {k: accelerator.gather(v.to(device)[None]) for k, v in _rng_states(generator, device).items()}
    for name, module in (("model", net), ("ema", ema)):
        prints = accelerator.gather(_fingerprint(module).detach()[None])
        state.consistency[name] = (prints - prints[0]).abs().max().item()
    if accelerator.is_main_process:
        if any(state.consistency.values()):
            accelerator.print(f"warning: the processes' weights differ at step {state.step}: {state.consistency}")
        state.scaler = accelerator.scaler.state_dict() if accelerator.scaler is not None else None
        save_checkpoint(
            output_dir, state, net, ema, config.model, optimizer, rng, config.to_dict(), keep_last=config.keep_last
        )
    accelerator.wait_for_everyone()


def _truncate_log(path: Path, step: int) -> None:
    """Drop log records past the checkpoint a run resumes from, so the log reads as one uninterrupted run."""
    if not path.is_file():
        return
    lines = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(line + "\n" for line in lines))
    tmp.replace(path)
