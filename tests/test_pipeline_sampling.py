import pytest
import torch
from typer.testing import CliRunner

from iterview.cli import app
from iterview.diffusion.presets import SamplerChoice, resolve_samplers
from iterview.pipeline.sampling import check_classes, instance_suffix, make_instance, parse_seeds, run_name
from iterview.pipeline.scene import find_scenes


def test_seed_lists():
    assert parse_seeds("0-3,7") == [0, 1, 2, 3, 7]
    assert parse_seeds("5") == [5]
    for bad in ("", "a-3", "3-", "1,1"):
        with pytest.raises(ValueError):
            parse_seeds(bad)


def test_official_names():
    official = resolve_samplers()
    assert official == (SamplerChoice("ddpm", 1000), SamplerChoice("ddim", 50))
    assert run_name("3x9", *official, 3.0) == "viewset_3x9_steps_u1000_c50_guidance3.0"
    assert run_name("random", SamplerChoice("ddim", 100), SamplerChoice("ddim", 50), 0.5) == (
        "viewset_random_steps_u100_c50_guidance0.5"
    )
    assert run_name("3x9", *resolve_samplers("fast"), 3) == (
        "viewset_3x9_steps_uddim25+eta1_cddim10+cfg81-578_guidance3.0"
    )
    assert run_name("3x9", SamplerChoice("dpmpp", 20), SamplerChoice("dpmpp", 20), 3) == (
        "viewset_3x9_steps_udpmpp20_cdpmpp20_guidance3.0"
    )
    assert instance_suffix(12, 3) == "class003_seed00012" and instance_suffix(7, None) == "seed00007"


def test_sampler_resolution_follows_the_official_cli():
    assert resolve_samplers(steps_uncond=250) == (SamplerChoice("ddim", 250), SamplerChoice("ddim", 50))
    assert resolve_samplers(steps_uncond=1000)[0] == SamplerChoice("ddpm", 1000)
    assert resolve_samplers("fast", steps_uncond=8, steps_cond=6) == (
        SamplerChoice("ddim", 8, eta=1.0),
        SamplerChoice("ddim", 6, cfg_window=(81, 578)),
    )
    assert resolve_samplers("fast", "dpmpp", "unipc") == (SamplerChoice("dpmpp", 20), SamplerChoice("unipc", 20))
    assert resolve_samplers("fast", timesteps=50)[1].cfg_window == (4, 29)  # the window follows the schedule
    assert resolve_samplers(sampler_uncond="dpmpp", steps_uncond=10)[0] == SamplerChoice("dpmpp", 10)
    assert resolve_samplers(sampler_cond="ddpm")[1] == SamplerChoice("ddpm", 1000)
    with pytest.raises(ValueError, match="preset"):
        resolve_samplers("slow")


def test_instances_draw_class_and_cameras_from_their_own_seed():
    cpu = torch.device("cpu")
    assert make_instance(1003, 4, "mod", 1000, "3x9", cpu).label == 3
    assert make_instance(1003, 4, "uniform", 1000, "3x9", cpu).label == 4
    assert make_instance(1003, 1, "5,6,7", 1000, "3x9", cpu).label == 6
    assert make_instance(3, 0, "mod", None, "3x9", cpu).label is None
    first, again = (make_instance(9, 0, "random", 1000, "random", cpu) for _ in range(2))
    assert first.label == again.label and torch.equal(first.viewset.modelviews, again.viewset.modelviews)
    assert torch.equal(first.generator.get_state(), again.generator.get_state())
    with pytest.raises(ValueError, match="out of range"):
        make_instance(0, 0, "1000", 1000, "3x9", cpu)
    check_classes("1,2,3", 3)
    with pytest.raises(ValueError, match="one per seed"):
        check_classes("1,2", 3)
    with pytest.raises(ValueError, match="mod, uniform"):
        check_classes("many", 3)


def test_find_scenes(tmp_path):
    with pytest.raises(FileNotFoundError):
        find_scenes(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no scenes"):
        find_scenes(tmp_path)
    (tmp_path / "scenes").mkdir()
    for name in ("scene_b", "scene_a"):
        (tmp_path / "scenes" / f"{name}.json").write_text("{}")
        (tmp_path / "scenes" / f"{name}.npz").write_bytes(b"")
    (tmp_path / "scenes" / "half.json").write_text("{}")  # no .npz: not a scene
    assert [s.name for s in find_scenes(tmp_path)] == ["scene_a", "scene_b"]
    assert find_scenes(tmp_path / "scenes" / "scene_b.json") == [tmp_path / "scenes" / "scene_b"]
    with pytest.raises(FileNotFoundError, match=r"half\.npz"):
        find_scenes(tmp_path / "scenes" / "half.json")


def test_cli_reports_bad_input_clearly(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["render", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "nowhere" in result.output
    result = runner.invoke(app, ["sample", "--uncond", str(tmp_path / "u.pt"), "--viewset", "3x9"])
    assert result.exit_code == 2 and "--cond" in result.output
    result = runner.invoke(app, ["sample", "--uncond", "u.pt", "--cond", "c.pt", "--seeds", "x"])
    assert result.exit_code == 2 and "seed list" in result.output
