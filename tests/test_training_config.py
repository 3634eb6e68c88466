import json

import pytest

from iterview.config import ADMConfig
from iterview.models.checkpoint import build_model
from iterview.training.config import PRESETS, TrainConfig, get_preset, load_config

OFFICIAL = {
    "rgbd_imagenet_adm_128_large_cfg": False,
    "rgbd_imagenet_adm_128_large_cond": True,
    "rgbd_singlecategory_adm_128_small": True,
    "rgbd_singlecategory_adm_128_small_cond": True,
}


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_official_presets_match_the_official_configs(reference, name):
    shipped = json.loads((reference / "adm_shapes" / f"{name}.json").read_text())
    preset = get_preset(name)
    official = ADMConfig.from_dict({**shipped["config"], "use_fp16": False})
    assert preset.model == official
    # official use_fp16 (fp16 convs + flattened fp32 master) becomes autocast fp16 over fp32 weights
    assert (preset.mixed_precision == "fp16") == OFFICIAL[name] == shipped["config"]["use_fp16"]
    assert (preset.learning_rate, preset.weight_decay, preset.ema_rate, preset.p_uncond) == (1e-4, 0.0, 0.9999, 0.1)
    assert preset.batch_size == (16 if "imagenet" in name else 8)
    assert (preset.grad_accum, preset.max_steps, preset.save_every) == (1, 1_000_000, 50_000)
    assert preset.inpaint == name.endswith("_cond")
    params = sum(p.numel() for p in build_model(preset.model, device="meta").parameters())
    assert params == shipped["num_parameters"]


def test_tiny_presets_are_small():
    for name in ("tiny", "tiny_cond"):
        preset = get_preset(name)
        assert preset.mixed_precision == "no"
        assert sum(p.numel() for p in build_model(preset.model, device="meta").parameters()) < 1_000_000
    assert get_preset("tiny_cond").inpaint and not get_preset("tiny").inpaint


def test_get_preset_returns_an_independent_copy():
    get_preset("tiny").model.model_channels = 999
    assert PRESETS["tiny"].model.model_channels == 32


def test_yaml_file_with_preset_and_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("preset: tiny\nbatch_size: 4\nmodel:\n  num_classes: null\n  has_null_class: false\n")
    config = load_config(path, overrides=["max_steps=7", "model.model_channels=16", "augments=[blur]"])
    assert (config.batch_size, config.max_steps, config.augments) == (4, 7, ["blur"])
    assert config.model.model_channels == 16 and config.model.num_classes is None
    assert config.model.num_res_blocks == PRESETS["tiny"].model.num_res_blocks  # untouched model keys kept


def test_round_trip_through_a_saved_file(tmp_path):
    config = load_config(preset="tiny_cond", overrides=["grad_clip=1.0", "keep_last=null", "data_dir=/data"])
    again = load_config(config.save(tmp_path / "c.json"))
    assert again == config


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["batch_sise=3"], "unknown training config keys"),
        (["mixed_precision=fp8"], "mixed_precision must be one of"),
        (["model.in_channels=7"], "in_channels must be out_channels"),
        (["model.use_fp16=true"], "mixed_precision: fp16 instead"),
        (["batch_size=0"], "batch_size must be >= 1"),
        (["ema_rate=1.0"], "ema_rate must be in"),
        (["keep_last=0"], "keep_last must be >= 1"),
        (["max_steps"], "key=value"),
        (["batch_size=2.5"], "batch_size must be an integer"),
        (["learning_rate=fast"], "learning_rate must be a number"),
        (["lr_schedule=linear"], "lr_schedule must be one of"),
        (["depth_loss_weight=0"], "depth_loss_weight must be > 0"),
        (["depth_loss_weight=nan"], "depth_loss_weight must be > 0"),
    ],
)
def test_bad_values_raise_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config(preset="tiny", overrides=overrides)


def test_bad_files_and_presets(tmp_path):
    with pytest.raises(FileNotFoundError, match="training config not found"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="expected a mapping"):
        load_config(tmp_path / "list.yaml")
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        load_config(preset="huge")
    (tmp_path / "nomodel.yaml").write_text("batch_size: 2\n")
    with pytest.raises(ValueError, match="needs `model`"):
        load_config(tmp_path / "nomodel.yaml")
    with pytest.raises(ValueError, match="give a config file or a preset"):
        load_config()


def test_config_dataclass_accepts_a_model_mapping():
    config = TrainConfig(model=PRESETS["tiny"].model.to_dict())
    assert isinstance(config.model, ADMConfig)


def test_the_command_help_names_every_preset():
    from iterview.training.commands import PRESET_NAMES

    assert PRESET_NAMES.split(", ") == list(PRESETS)
