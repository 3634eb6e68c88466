"""The trainer's precision and speed modes on the CPU: fp16 (autocast + loss scaling), bf16, channels_last and
torch.compile, each against the float32 eager run of the same seed, data and noise.

Tolerances are a few times what was measured over seeds 0-2 on this 16-px U-Net (lr 1e-3): per-step losses of
fp16 stay within 1.8e-4 (relative) of float32 over 30 steps, bf16 within 2.5e-3; the unit round-offs are 4.9e-4
(fp16) and 3.9e-3 (bf16)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from accelerate.utils import is_compiled_module
from safetensors.torch import load_file
from torch import nn

import iterview.training.trainer as trainer
from iterview.data.synth import write_synth_dataset
from iterview.models.adm import compile_for_inference
from iterview.models.checkpoint import build_model, load_model
from iterview.training.config import TrainConfig
from iterview.training.state import checkpoint_path
from tests.test_training import losses, small_config

pytestmark = pytest.mark.usefixtures("one_thread")

INITIAL_LOSS_SCALE = 2.0**16  # torch.amp.GradScaler's default init_scale; each overflow halves it (backoff 0.5)
LOSS_TOLERANCE = {"fp16": 1e-3, "bf16": 1e-2}  # relative, per step, against float32
TIMING_KEYS = ("images_per_s", "elapsed_s")
CHECKPOINT_FILES = ("model/model.safetensors", "ema/model.safetensors", "optimizer.safetensors", "rng.safetensors")


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return write_synth_dataset(tmp_path_factory.mktemp("synth"), count=16, image_size=32, seed=0)


@contextmanager
def conv_outputs() -> Iterator[set[tuple[torch.dtype, bool]]]:
    """Collects (dtype, is channels_last) of every Conv2d output computed inside the block."""
    seen: set[tuple[torch.dtype, bool]] = set()

    def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if isinstance(module, nn.Conv2d):
            seen.add((output.dtype, output.is_contiguous(memory_format=torch.channels_last)))

    handle = nn.modules.module.register_module_forward_hook(record)
    try:
        yield seen
    finally:
        handle.remove()


def poison_batch(monkeypatch: pytest.MonkeyPatch, epoch: int, index: int) -> None:
    """Scale x_0 of one batch (by its place in the data order, so a resumed run meets it too) by 1e10: even at
    t = T - 1 (sqrt(ᾱ) = 0.006) x_t passes float16's largest value, 65504, so the fp16 forward overflows."""
    real_batches = trainer._batches

    def batches(*args) -> Iterator[tuple[dict[str, torch.Tensor], int, int]]:
        for batch, batch_epoch, batch_index in real_batches(*args):
            if (batch_epoch, batch_index) == (epoch, index):
                batch = {**batch, "x_0": batch["x_0"] * 1e10}
            yield batch, batch_epoch, batch_index

    monkeypatch.setattr(trainer, "_batches", batches)


def fused_adamw(net: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay, fused=True)


def train_with_a_crash(config: TrainConfig, run: Path, monkeypatch: pytest.MonkeyPatch, crash_in_step: int) -> None:
    """Train, die inside step crash_in_step (after the log line of the step before), then resume to the end."""
    real_loss, calls = trainer.loss_of, []
    crash_call = (crash_in_step - 1) * config.grad_accum + 1  # the step's first micro-batch

    def crashing_loss(*args, **kwargs) -> torch.Tensor:
        calls.append(1)
        if len(calls) == crash_call:
            raise KeyboardInterrupt
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(trainer, "loss_of", crashing_loss)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(config, run, progress=False)
    monkeypatch.setattr(trainer, "loss_of", real_loss)
    assert len(losses(run)) == crash_in_step - 1
    trainer.train(config, run, resume=True, progress=False)


def log_records(run: Path) -> list[dict]:
    """log.jsonl without the wall-clock fields."""
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in record.items() if k not in TIMING_KEYS} for record in records]


def checkpoint_tensors(run: Path, step: int, name: str) -> dict[str, torch.Tensor]:
    return load_file(checkpoint_path(run, step) / name)


def assert_same_run(a: Path, b: Path, step: int) -> None:
    """Same log (loss scale included) and bit-identical checkpoint files and state at step."""
    assert log_records(a) == log_records(b)
    for name in CHECKPOINT_FILES:
        tensors_a, tensors_b = checkpoint_tensors(a, step, name), checkpoint_tensors(b, step, name)
        assert tensors_a.keys() == tensors_b.keys() and all(torch.equal(tensors_a[k], tensors_b[k]) for k in tensors_a)
    state_a, state_b = (json.loads((checkpoint_path(r, step) / "state.json").read_text()) for r in (a, b))
    assert state_a == state_b


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def assert_losses_close(curve: list[float], reference: list[float], tolerance: float) -> None:
    assert len(curve) == len(reference)
    assert all(abs(c - r) <= tolerance * r for c, r in zip(curve, reference, strict=True)), (curve, reference)


@pytest.mark.parametrize("precision, conv_dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_mixed_precision_loss_follows_float32(synth, tmp_path, precision, conv_dtype):
    """Same batches, timesteps and noise as float32: the convolutions really run in the low precision (accelerate
    alone would train fp16 on the CPU in float32), every step's loss stays within the tolerance of the float32
    loss, both fall, only fp16 logs a loss scale, and the saved weights stay float32."""
    trainer.train(small_config(synth, max_steps=20, grad_clip=1.0), tmp_path / "fp32", progress=False)
    with conv_outputs() as seen:
        config = small_config(synth, max_steps=20, grad_clip=1.0, mixed_precision=precision)
        trainer.train(config, tmp_path / precision, progress=False)
    assert seen == {(conv_dtype, False)}
    reference, curve = losses(tmp_path / "fp32"), losses(tmp_path / precision)
    assert curve != reference
    assert_losses_close(curve, reference, LOSS_TOLERANCE[precision])
    assert sum(curve[-5:]) < 0.85 * sum(curve[:5])  # 0.72-0.78 over seeds 0-2
    scales = {record.get("loss_scale") for record in log_records(tmp_path / precision)}
    assert scales == ({INITIAL_LOSS_SCALE} if precision == "fp16" else {None})
    for name in ("model", "ema"):
        weights = checkpoint_tensors(tmp_path / precision, 20, f"{name}/model.safetensors")
        assert {v.dtype for v in weights.values()} == {torch.float32}


@pytest.mark.parametrize("fused", [False, True])
def test_fp16_overflow_skips_the_optimiser_step_and_the_ema_update(synth, tmp_path, monkeypatch, fused):
    """A step whose fp16 gradients overflow leaves weights, EMA and optimiser state as they were and halves the
    loss scale; the next step trains again. fused: the single-kernel AdamW the trainer uses on GPUs (the CPU has
    one too), which skips inside its kernel where the unfused one is never called."""
    if fused:
        monkeypatch.setattr(trainer, "make_optimizer", fused_adamw)
    poison_batch(monkeypatch, epoch=0, index=3)
    config = small_config(synth, max_steps=4, save_every=1, keep_last=None, mixed_precision="fp16")
    trainer.train(config, tmp_path / "run", progress=False)

    records = log_records(tmp_path / "run")
    half = INITIAL_LOSS_SCALE / 2
    assert [r["loss_scale"] for r in records] == [INITIAL_LOSS_SCALE, INITIAL_LOSS_SCALE, half, half]
    assert not torch.tensor([r["loss"] for r in records]).isfinite()[2]
    model, ema = (checkpoint_tensors(tmp_path / "run", 2, f"{n}/model.safetensors") for n in ("model", "ema"))
    assert max_difference(model, ema) > 0  # an EMA update would have moved the EMA towards the model
    for name in CHECKPOINT_FILES[:3]:
        before, skipped = checkpoint_tensors(tmp_path / "run", 2, name), checkpoint_tensors(tmp_path / "run", 3, name)
        assert all(torch.equal(before[k], skipped[k]) for k in before), name
        assert max_difference(skipped, checkpoint_tensors(tmp_path / "run", 4, name)) > 0, name


def test_fp16_resume_restores_the_loss_scale(synth, tmp_path, monkeypatch):
    """The step-3 checkpoint holds a halved loss scale (step 2 overflowed): a run killed in step 5 and resumed from
    it logs the same scales and losses and ends bit-identical to one that never stopped."""
    poison_batch(monkeypatch, epoch=0, index=2)
    config = small_config(synth, max_steps=6, save_every=3, keep_last=None, mixed_precision="fp16")
    trainer.train(config, tmp_path / "straight", progress=False)
    train_with_a_crash(config, tmp_path / "resumed", monkeypatch, crash_in_step=5)

    state = json.loads((checkpoint_path(tmp_path / "resumed", 3) / "state.json").read_text())
    assert state["scaler"]["scale"] == INITIAL_LOSS_SCALE / 2
    assert_same_run(tmp_path / "straight", tmp_path / "resumed", 6)


def test_bf16_channels_last_resume_is_bit_identical(synth, tmp_path, monkeypatch):
    """The synth presets' mode: bf16 autocast on channels_last weights, killed in step 5 and resumed from the
    step-3 checkpoint (optimiser state is saved contiguous and loaded back beside channels_last weights)."""
    config = small_config(synth, max_steps=6, save_every=3, keep_last=None, mixed_precision="bf16", channels_last=True)
    trainer.train(config, tmp_path / "straight", progress=False)
    train_with_a_crash(config, tmp_path / "resumed", monkeypatch, crash_in_step=5)
    assert_same_run(tmp_path / "straight", tmp_path / "resumed", 6)
    assert json.loads((checkpoint_path(tmp_path / "resumed", 6) / "state.json").read_text())["scaler"] is None


@pytest.mark.parametrize("precision, conv_dtype", [("no", torch.float32), ("bf16", torch.bfloat16)])
def test_channels_last_run_matches_a_contiguous_one(synth, tmp_path, precision, conv_dtype):
    """Same seed with and without channels_last: the convolutions do run NHWC, the losses agree, and the saved EMA
    loads (as an ordinary NCHW model) and computes what the contiguous run's does.

    In float32 the weights agree to round-off (measured 2.4e-6 after 6 steps, where each step moves a weight by up
    to lr = 1e-3), losses within 1.2e-7 and EMA outputs within 1.9e-7 (relative). In bf16 the two layouts round
    differently and Adam turns a rounding-sized change of a near-zero gradient into a whole step (7.4e-4 measured),
    so bf16 compares losses (1.3e-5 measured) and EMA outputs (1.2e-4)."""
    tolerance = 1e-6 if precision == "no" else 1e-3
    runs = {}
    for channels_last in (False, True):
        runs[channels_last] = tmp_path / f"channels_last_{channels_last}"
        config = small_config(synth, max_steps=6, mixed_precision=precision, channels_last=channels_last)
        with conv_outputs() as seen:
            trainer.train(config, runs[channels_last], progress=False)
        assert seen == {(conv_dtype, channels_last)}
    assert_losses_close(losses(runs[True]), losses(runs[False]), tolerance)
    if precision == "no":
        weights = (checkpoint_tensors(runs[c], 6, "model/model.safetensors") for c in (False, True))
        assert max_difference(*weights) <= 1e-5

    generator = torch.Generator().manual_seed(0)
    x_t, t = torch.randn(4, 4, 16, 16, generator=generator), torch.tensor([10, 300, 600, 900])
    classes = torch.tensor([0, 1, 2, -1])
    outputs = []
    for channels_last in (False, True):
        ema, _ = load_model(checkpoint_path(runs[channels_last], 6) / "ema")
        saved = checkpoint_tensors(runs[channels_last], 6, "ema/model.safetensors")
        assert all(torch.equal(v, saved[k]) for k, v in ema.state_dict().items())
        with torch.no_grad():
            outputs.append(ema(x_t, t, classes))
    assert (outputs[0] - outputs[1]).abs().max() <= tolerance * outputs[0].abs().max()


def spy_on_prepared_model(monkeypatch: pytest.MonkeyPatch) -> list[nn.Module]:
    """Records the prepared model of every run."""
    real_setup, prepared = trainer.setup_run, []

    def setup_run(*args, **kwargs) -> trainer.Run:
        run = real_setup(*args, **kwargs)
        prepared.append(run.model)
        return run

    monkeypatch.setattr(trainer, "setup_run", setup_run)
    return prepared


@pytest.mark.slow
@pytest.mark.usefixtures("fresh_dynamo")
def test_compiled_training_matches_eager_and_resumes(synth, tmp_path, monkeypatch):
    """compile: true trains an inductor-compiled model (the first compile takes 1-3 minutes on a 2-core CPU; the
    resumed run reuses the compiled graphs). Inductor's fused kernels round differently from eager ones: measured
    over 6 steps, losses within 1.2e-7 (relative) and weights within 2.2e-6 of the eager run's; a compiled run killed
    in step 5 and resumed ends bit-identical to an uninterrupted compiled one. An inference compile of the same
    U-Net code at other shapes first (as `iterview sample --compile` in this process) must not make the training
    graphs symbolic in their sizes (inductor failed on them)."""
    config = small_config(synth, max_steps=6, save_every=3, keep_last=None)
    other = replace(config.model, image_size=2 * config.model.image_size)
    with torch.no_grad():
        x = torch.randn(1, other.in_channels, other.image_size, other.image_size)
        compile_for_inference(build_model(other))(x, torch.tensor([5]), torch.tensor([0]))
    trainer.train(config, tmp_path / "eager", progress=False)
    compiled = small_config(synth, max_steps=6, save_every=3, keep_last=None, compile=True)
    prepared = spy_on_prepared_model(monkeypatch)
    trainer.train(compiled, tmp_path / "compiled", progress=False)
    train_with_a_crash(compiled, tmp_path / "resumed", monkeypatch, crash_in_step=5)

    assert len(prepared) == 3 and all(is_compiled_module(model) for model in prepared)
    assert_losses_close(losses(tmp_path / "compiled"), losses(tmp_path / "eager"), 1e-6)
    for name in ("model", "ema"):
        eager, inductor = (
            checkpoint_tensors(tmp_path / r, 6, f"{name}/model.safetensors") for r in ("eager", "compiled")
        )
        assert max_difference(eager, inductor) <= 1e-5, name
    assert_same_run(tmp_path / "compiled", tmp_path / "resumed", 6)
