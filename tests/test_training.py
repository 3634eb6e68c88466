import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

import iterview.training.trainer as trainer
from iterview.cli import app
from iterview.config import ADMConfig
from iterview.data.synth import write_synth_dataset
from iterview.diffusion.schedule import DiffusionSchedule, randn_like
from iterview.models.checkpoint import load_model, read_state_dict
from iterview.training.config import load_config
from iterview.training.state import checkpoint_dirs

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
# A 16-px two-level U-Net (about 0.2M parameters): a CPU step takes milliseconds.
SMALL = {
    "model.image_size": 16,
    "model.model_channels": 16,
    "model.num_groups": 4,
    "model.num_head_channels": 8,
    "model.attention_resolutions": [8],
    "batch_size": 4,
    "num_workers": 0,
    "log_every": 1,
    "sample_every": 1000,
    "save_every": 1000,
    "learning_rate": 1e-3,
}


def overrides(data: Path, **fields) -> list[str]:
    return [f"{k}={json.dumps(v)}" for k, v in {**SMALL, "data_dir": str(data), **fields}.items()]


def small_config(data: Path, preset: str = "tiny", **fields):
    return load_config(preset=preset, overrides=overrides(data, **fields))


def losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return write_synth_dataset(tmp_path_factory.mktemp("synth"), count=16, image_size=32, seed=0)


def test_tiny_model_learns_on_synth_data(synth, tmp_path):
    config = small_config(synth, max_steps=30, grad_clip=1.0)
    weights = trainer.train(config, tmp_path / "run", progress=False)
    curve = losses(tmp_path / "run")
    assert len(curve) == 30
    assert sum(curve[-5:]) / 5 < 0.75 * sum(curve[:5]) / 5  # about 0.58 vs 0.97 over seeds 0-2
    assert weights == tmp_path / "run" / "checkpoints" / "step_0000030" / "ema"
    model, model_config = load_model(weights)
    assert model_config == config.model
    eps = model(torch.randn(2, 4, 16, 16), torch.tensor([10, 900]), torch.tensor([1, -1]))
    assert eps.shape == (2, 4, 16, 16) and eps.abs().sum() > 0  # trained: the zero-initialised head moved


@pytest.mark.parametrize(
    ("preset", "lr_schedule"), [("tiny", "constant"), ("tiny_cond", "constant"), ("tiny", "cosine")]
)
def test_interrupted_and_resumed_run_matches_an_uninterrupted_one(synth, tmp_path, monkeypatch, preset, lr_schedule):
    # batch 2 × 2 micro-batches: 4 steps per epoch, so the resumed part crosses into epoch 1 (new warp pairs)
    config = small_config(
        synth, preset, max_steps=7, save_every=3, keep_last=None, batch_size=2, grad_accum=2, lr_schedule=lr_schedule
    )
    trainer.train(config, tmp_path / "straight", progress=False)

    real_update, calls = trainer.update_ema, []

    def crash_in_step_5(*args):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt  # killed after the step-3 checkpoint and the step-4 log line
        real_update(*args)

    monkeypatch.setattr(trainer, "update_ema", crash_in_step_5)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(config, tmp_path / "resumed", progress=False)
    monkeypatch.setattr(trainer, "update_ema", real_update)
    assert [p.name for p in checkpoint_dirs(tmp_path / "resumed")] == ["step_0000003"]
    assert len(losses(tmp_path / "resumed")) == 4
    with pytest.raises(ValueError, match="already holds checkpoints"):
        trainer.train(config, tmp_path / "resumed", progress=False)
    trainer.train(config, tmp_path / "resumed", resume=True, progress=False)

    assert losses(tmp_path / "resumed") == losses(tmp_path / "straight")
    for name in ("model/model.safetensors", "ema/model.safetensors", "optimizer.safetensors", "rng.safetensors"):
        a = load_file(tmp_path / "straight" / "checkpoints" / "step_0000007" / name)
        b = load_file(tmp_path / "resumed" / "checkpoints" / "step_0000007" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    state = json.loads((tmp_path / "resumed" / "checkpoints" / "step_0000007" / "state.json").read_text())
    assert (state["step"], state["epoch"], state["batch"]) == (7, 1, 6)


def test_cosine_schedule_anneals_the_learning_rate_to_zero(synth, tmp_path):
    config = small_config(synth, "tiny", max_steps=8, lr_schedule="cosine", learning_rate=1e-3, log_every=1)
    assert trainer.learning_rate_at(config, 0) == pytest.approx(1e-3)
    assert trainer.learning_rate_at(config, 4) == pytest.approx(5e-4)  # half way: cos(π/2) = 0
    assert trainer.learning_rate_at(config, 2) == pytest.approx(1e-3 * (1 + 2**-0.5) / 2)
    assert trainer.learning_rate_at(config, 8) == 0.0
    trainer.train(config, tmp_path / "run", progress=False)
    logged = [json.loads(line)["lr"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert logged == pytest.approx([trainer.learning_rate_at(config, step) for step in range(8)])
    constant = small_config(synth, "tiny", max_steps=8, learning_rate=1e-3)
    assert {trainer.learning_rate_at(constant, step) for step in range(9)} == {1e-3}


def test_training_loss_weighs_the_depth_channel_as_configured():
    config = load_config(preset="tiny", overrides=["depth_loss_weight=3", "p_uncond=0"])
    schedule, x0 = DiffusionSchedule.linear(config.timesteps), torch.rand(2, 4, 8, 8)

    def zero(x: torch.Tensor, t: torch.Tensor, classes: torch.Tensor | None) -> torch.Tensor:
        return torch.zeros_like(x)  # ε = 0: the loss is the weighted noise²

    loss = trainer.loss_of(zero, {"x_0": x0}, schedule, config, torch.Generator().manual_seed(5))
    replay = torch.Generator().manual_seed(5)  # the draws of loss_of: t, then the noise
    torch.randint(0, config.timesteps, (2,), generator=replay)
    noise = randn_like(x0, replay)
    weights = torch.tensor([1.0, 1.0, 1.0, 3.0]).view(1, 4, 1, 1) * 4 / 6
    torch.testing.assert_close(loss, (noise.square() * weights).mean())


def test_official_checkpoint_initialises_g_c(synth, reference, tmp_path):
    """G_c fine-tunes from an official-format G_u .pt: x_t channels keep the weights, the new condition
    channels start at zero, and the EMA starts from these weights (the official trainer kept its own)."""
    official = reference / "adm_small_uncond" / "checkpoint.pt"
    g_u = ADMConfig.from_json(reference / "adm_small_uncond" / "config.json")
    channels = ADMConfig.from_json(reference / "adm_small_cond" / "config.json").in_channels
    g_c = {**g_u.to_dict(), "in_channels": channels}
    fields = {f"model.{k}": v for k, v in g_c.items()}
    config = small_config(synth, preset="tiny_cond", **fields, max_steps=1, learning_rate=0.0, sample_every=1)
    weights = trainer.train(config, tmp_path / "gc", init_from=official, progress=False)

    source = torch.load(official, weights_only=True)
    for name in ("model", "ema"):
        tuned = read_state_dict(weights.parent / name)
        first = tuned["input_blocks.0.0.weight"]
        assert first.shape[1] == channels
        assert torch.equal(first[:, : g_u.in_channels], source["input_blocks.0.0.weight"])
        assert not first[:, g_u.in_channels :].any()
        assert all(torch.equal(tuned[k], v) for k, v in source.items() if k != "input_blocks.0.0.weight"), name
    grid = Image.open(tmp_path / "gc" / "samples" / "step_0000001.png")
    # columns: num_samples items; rows: condition RGB/depth, sample RGB/depth, target RGB/depth
    assert grid.size == (config.num_samples * g_u.image_size, 6 * g_u.image_size)


def test_two_processes_keep_identical_weights(synth, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    dump = tmp_path / "ranks"
    dump.mkdir()
    script = str(Path(__file__).with_name("ddp_rank_weights.py"))
    launch += ["--main_process_port", str(port), script, str(dump), "--", "train", "--preset", "tiny", "--cpu"]
    launch += ["--output", str(tmp_path / "ddp"), "--no-progress"]
    for item in overrides(synth, max_steps=3, save_every=2, batch_size=2, grad_accum=2):
        launch += ["--set", item]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(launch, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for step in (2, 3):
        state = json.loads((tmp_path / "ddp" / "checkpoints" / f"step_{step:07d}" / "state.json").read_text())
        assert state["world_size"] == 2
        assert state["consistency"] == {"model": 0.0, "ema": 0.0}
        # each rank's own replica, written by that rank: identical across ranks and to the saved checkpoint
        for name in ("model", "ema"):
            saved = load_file(tmp_path / "ddp" / "checkpoints" / f"step_{step:07d}" / name / "model.safetensors")
            for rank in (0, 1):
                replica = load_file(dump / f"{name}_rank{rank}_step{step}.safetensors")
                assert replica.keys() == saved.keys(), (name, rank)
                assert all(torch.equal(replica[k], saved[k]) for k in saved), (name, rank, step)
    first = load_file(dump / "ema_rank1_step2.safetensors")
    assert any(not torch.equal(first[k], v) for k, v in load_file(dump / "ema_rank1_step3.safetensors").items())
    # 16 items / (2 ranks × batch 2) = 4 micro-batches per rank and epoch, 2 per step: step 3 is in epoch 1
    assert (state["epoch"], state["batch"]) == (1, 2)
    assert len(losses(tmp_path / "ddp")) == 3
    # a single process takes over from the same place in the epoch: 2 per-rank batches are 1 of twice the count
    config = small_config(synth, max_steps=4, batch_size=2, grad_accum=2)
    trainer.train(config, tmp_path / "ddp", resume=True, progress=False)
    state = json.loads((tmp_path / "ddp" / "checkpoints" / "step_0000004" / "state.json").read_text())
    assert (state["world_size"], state["epoch"], state["batch"]) == (1, 1, 6)


def test_train_command_runs_resumes_and_refuses_to_overwrite(synth, tmp_path):
    out = tmp_path / "cli"
    args = ["train", "--preset", "tiny", "--data", str(synth), "--output", str(out), "--no-progress"]
    settings = [a for item in overrides(synth, max_steps=2, sample_every=2, num_samples=3) for a in ("--set", item)]
    result = CliRunner().invoke(app, args + settings)
    assert result.exit_code == 0, result.output
    assert "EMA weights for sampling" in result.output
    assert Image.open(out / "samples" / "step_0000002.png").size == (3 * 16, 2 * 16)  # RGB row, depth row

    again = CliRunner().invoke(app, args + settings)
    assert again.exit_code == 2 and "already holds checkpoints" in again.output

    # --resume alone reuses the run's saved config; here it trains one more step
    more = CliRunner().invoke(app, ["train", "--output", str(out), "--resume", "--set", "max_steps=3", "--no-progress"])
    assert more.exit_code == 0, more.output
    assert [p.name for p in checkpoint_dirs(out)] == ["step_0000002", "step_0000003"]
    assert [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_bad_inputs_raise_clear_errors(synth, tmp_path):
    with pytest.raises(ValueError, match="no data_dir"):
        trainer.train(small_config(synth, data_dir=""), tmp_path / "a")
    with pytest.raises(ValueError, match=r"model has 2 classes but .* has 4 labels"):
        trainer.train(small_config(synth, **{"model.num_classes": 2}), tmp_path / "b")
    with pytest.raises(ValueError, match="too few for batch_size 64"):
        trainer.train(small_config(synth, batch_size=64), tmp_path / "c")
    result = CliRunner().invoke(app, ["train", "--preset", "huge", "--output", str(tmp_path / "d")])
    assert result.exit_code == 2 and "unknown preset 'huge'" in result.output
