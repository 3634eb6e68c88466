import json

import pytest
import torch

from iterview.errors import UserError
from iterview.models.checkpoint import build_model, load_model
from iterview.training.ema import ema_copy, update_ema
from iterview.training.state import (
    TrainState,
    checkpoint_dirs,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    weights_dir,
)
from tests.test_training import small_config

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIG = small_config("unused").model


@pytest.fixture(scope="module")
def trained():
    """A model and its AdamW after two steps (so the optimiser has state)."""
    model = build_model(CONFIG)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(2, 4, 16, 16)
    for _ in range(2):
        model(x, torch.tensor([3, 500]), torch.tensor([0, -1])).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    return model, optimizer


def test_update_ema_is_the_official_moving_average(trained):
    model, _ = trained
    ema = ema_copy(model)
    with torch.no_grad():
        for p in ema.parameters():
            p.add_(torch.randn_like(p))
    before = [p.clone() for p in ema.parameters()]
    update_ema(ema, model, 0.9)
    for e, b, p in zip(ema.parameters(), before, model.parameters(), strict=True):
        torch.testing.assert_close(e, 0.9 * b + 0.1 * p.detach(), rtol=1e-6, atol=1e-6)
    assert not any(p.requires_grad for p in ema.parameters())


def test_ema_copy_starts_from_the_loaded_weights(trained):
    model, _ = trained
    ema = ema_copy(model)
    for e, p in zip(ema.state_dict().values(), model.state_dict().values(), strict=True):
        assert torch.equal(e, p)
    update_ema(ema, model, 0.9999)  # averaging identical weights changes nothing
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(e, p.detach())


def _save(tmp_path, step, trained, keep_last=None):
    model, optimizer = trained
    ema = ema_copy(model)
    rng = {"generator": torch.Generator().manual_seed(step).get_state()[None]}
    state = TrainState(step=step, epoch=1, batch=5)
    return save_checkpoint(tmp_path, state, model, ema, CONFIG, optimizer, rng, {"note": 1}, keep_last=keep_last)


def test_checkpoint_round_trip_restores_everything(tmp_path, trained):
    model, optimizer = trained
    path = _save(tmp_path, 12, trained)
    assert path.name == "step_0000012"
    fresh = build_model(CONFIG)
    fresh_ema = ema_copy(fresh)
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=1e-3)
    state, rng = load_checkpoint(path, fresh, fresh_ema, fresh_opt)
    assert (state.step, state.epoch, state.batch) == (12, 1, 5)
    assert torch.equal(rng["generator"][0], torch.Generator().manual_seed(12).get_state())
    for a, b in zip(fresh.state_dict().values(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    saved, loaded = optimizer.state_dict(), fresh_opt.state_dict()
    assert loaded["param_groups"] == saved["param_groups"]
    for index, entries in saved["state"].items():
        for name, value in entries.items():
            assert torch.equal(loaded["state"][index][name], value)
    assert json.loads((path / "state.json").read_text())["config"] == {"note": 1}
    # both weight folders are plain model folders for sampling
    ema_model, config = load_model(path / "ema")
    assert config == CONFIG and isinstance(ema_model, torch.nn.Module)


@pytest.mark.parametrize("content", ["{", '{"step": 3, "learning_rate": 1}', "[1]"])
def test_an_unreadable_training_state_is_one_clear_error(tmp_path, trained, content):
    path = _save(tmp_path, 3, trained)
    (path / "state.json").write_text(content)
    fresh = build_model(CONFIG)
    with pytest.raises(UserError, match=r"training state .*state\.json"):
        load_checkpoint(path, fresh, ema_copy(fresh), torch.optim.AdamW(fresh.parameters(), lr=1e-3))


def test_keep_last_and_latest(tmp_path, trained):
    for step in (5, 10, 15, 20):
        _save(tmp_path, step, trained, keep_last=2)
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step_0000015", "step_0000020"]
    assert latest_checkpoint(tmp_path).name == "step_0000020"
    assert latest_checkpoint(tmp_path / "nothing") is None


def test_a_failed_write_leaves_no_checkpoint(tmp_path, monkeypatch, trained):
    import iterview.training.state as state_module

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(state_module, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        _save(tmp_path, 3, trained)
    assert checkpoint_dirs(tmp_path) == []
    assert list((tmp_path / "checkpoints").iterdir()) == []


def test_weights_dir_resolves_runs_checkpoints_and_files(tmp_path, trained):
    _save(tmp_path, 4, trained)
    last = _save(tmp_path, 8, trained)
    assert weights_dir(tmp_path) == last / "ema"
    assert weights_dir(last) == last / "ema"
    assert weights_dir(last / "model") == last / "model"
    file = last / "model" / "model.safetensors"
    assert weights_dir(file) == file
    with pytest.raises(FileNotFoundError, match="weights not found"):
        weights_dir(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="expected a model folder"):
        weights_dir(tmp_path / "empty")
