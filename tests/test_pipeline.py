"""End to end with tiny random models on CPU: sampling, the official layout, resume, render and export."""

import hashlib
import json

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from iterview.cli import app
from iterview.config import tiny_adm_config
from iterview.diffusion.guidance import classifier_free
from iterview.diffusion.presets import SamplerChoice
from iterview.diffusion.samplers import ddpm_sample
from iterview.diffusion.schedule import DiffusionSchedule
from iterview.geometry.aggregate import aggregate_conditions
from iterview.geometry.cameras import linear_to_zbuffer
from iterview.models.checkpoint import save_model, tiny_adm
from iterview.pipeline import sampling
from iterview.pipeline.multiview import Guidance, MultiViewPipeline
from iterview.pipeline.scene import Scene
from iterview.pipeline.viewsets import GRID_3X9, grid_viewset_3x9, orbit_viewset

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 16
FAST = SamplerChoice("dpmpp", 2)


def tiny(in_channels: int, seed: int):
    return tiny_adm(seed, image_size=SIZE, in_channels=in_channels), tiny_adm_config(SIZE, in_channels)


@pytest.fixture(scope="module")
def models():
    return tiny(4, 1)[0].eval(), tiny(10, 2)[0].eval()


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return save_model(*tiny(4, 1), root / "gu"), save_model(*tiny(10, 2), root / "gc")


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


class ExactDenoiser(torch.nn.Module):
    """The exact ε of data concentrated on one smooth RGBD image (a plane at depth 1 with a colour ramp), shifted
    by the class: its samples have sane geometry, so the conditions of later views are meaningful."""

    def __init__(self, schedule):
        super().__init__()
        self.image_size, self.num_classes = SIZE, 10
        self.register_buffer("sqrt_ab", schedule.alphas_cumprod.float().sqrt())
        self.register_buffer("sqrt_1mab", (1 - schedule.alphas_cumprod.float()).sqrt())
        rgb = torch.linspace(-0.5, 0.5, SIZE).expand(3, SIZE, SIZE)
        depth = torch.full((1, SIZE, SIZE), linear_to_zbuffer(torch.tensor(1.0), 0.6, 5.0).item() * 2 - 1)
        self.register_buffer("mean", torch.cat([rgb, depth]))

    def forward(self, x, t, classes=None):
        shift = 0.0 if classes is None else 0.02 * classes.clamp(min=0).float()[:, None, None, None]
        t = t.long()
        mean = self.mean * torch.ones_like(shift) + shift
        return (x[:, :4] - self.sqrt_ab[t, None, None, None] * mean) / self.sqrt_1mab[t, None, None, None]


@pytest.fixture(scope="module")
def run_3x9(model_dirs, tmp_path_factory):
    """`iterview sample` on the 3x9 viewset, two seeds in one batch, fast samplers."""
    out = tmp_path_factory.mktemp("samples")
    args = [
        "sample",
        "--uncond",
        str(model_dirs[0]),
        "--cond",
        str(model_dirs[1]),
        "--viewset",
        "3x9",
        "--seeds",
        "3,4",
        "--sampler",
        "fast",
        "--steps-uncond",
        "2",
        "--steps-cond",
        "2",
        "--batch-size",
        "2",
        "--cpu",
        "--output-dir",
        str(out),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return out / "viewset_3x9_steps_uddim2+eta1_cddim2+cfg81-578_guidance3.0", args


def test_3x9_run_writes_the_official_layout(run_3x9):
    root, _ = run_3x9
    for sfx in ("class003_seed00003", "class004_seed00004"):
        for name in (
            f"grids/rgb_{sfx}.png",
            f"grids/depth_{sfx}.png",
            f"conds/rgb_cond_{sfx}.png",
            f"conds/depth_cond_{sfx}.png",
        ):
            assert Image.open(root / name).size == (9 * SIZE, 3 * SIZE)
        scene = Scene.load(root / "scenes" / f"scene_{sfx}")
        assert scene.rgbd.shape == (27, 4, SIZE, SIZE) and scene.label == int(sfx[5:8])
        assert torch.equal(scene.modelviews, grid_viewset_3x9().modelviews)
        assert scene.known[0].sum() == 0 and scene.known[1:].flatten(1).any(1).all()
        grid = np.asarray(Image.open(root / f"grids/rgb_{sfx}.png"))
        view = grid[SIZE : 2 * SIZE, 4 * SIZE : 5 * SIZE]
        expected = ((scene.rgbd[GRID_3X9[1][4], :3] * 0.5 + 0.5) * 255).clamp(0, 255).to(torch.uint8)
        assert np.array_equal(view, expected.permute(1, 2, 0).numpy()) and grid.std() > 0
        cond = np.asarray(Image.open(root / f"conds/rgb_cond_{sfx}.png"))
        assert cond[SIZE : 2 * SIZE, 4 * SIZE : 5 * SIZE].max() == 0  # view 0 has no condition
    assert sorted(p.name for p in (root / "results").iterdir()) == []


def test_same_seed_gives_identical_files_and_reruns_skip(run_3x9, tmp_path):
    root, args = run_3x9
    before = {p.relative_to(root): digest(p) for p in root.rglob("*") if p.is_file()}
    result = CliRunner().invoke(app, args)  # same command again: everything is finished, nothing is rewritten
    assert result.exit_code == 0 and "0 new scene" in result.output, result.output
    assert {p.relative_to(root): digest(p) for p in root.rglob("*") if p.is_file()} == before
    again = [*args[:-1], str(tmp_path)]  # the same command into a fresh folder
    assert CliRunner().invoke(app, again).exit_code == 0
    fresh = tmp_path / root.name
    assert {p.relative_to(fresh): digest(p) for p in fresh.rglob("*") if p.is_file()} == before


def test_a_seed_gives_the_same_scene_whatever_its_batch(models):
    g_u, g_c = models
    pipeline = MultiViewPipeline(g_u, g_c, sampler_uncond=FAST, sampler_cond=FAST)
    cameras = grid_viewset_3x9().modelviews[:3]
    pair = pipeline(
        cameras.expand(2, 3, 4, 4), [torch.Generator().manual_seed(s) for s in (3, 4)], torch.tensor([3, 4])
    )
    alone = pipeline(cameras.expand(1, 3, 4, 4), [torch.Generator().manual_seed(4)], torch.tensor([4]))
    # Equal up to the round-off of batched kernels (the tiny random models' x0 predictions are large).
    scale = alone.rgbd.abs().max()
    assert (pair.rgbd[1:] - alone.rgbd).abs().max() <= 1e-5 * scale
    assert (pair.rgbd[:1] - alone.rgbd).abs().max() > 0.1 * scale  # different seeds, different scenes


def test_callback_reports_every_step_and_view_and_can_stop_sampling(models):
    g_u, g_c = models
    pipeline = MultiViewPipeline(g_u, g_c, sampler_uncond=FAST, sampler_cond=SamplerChoice("ddim", 3))
    cameras = grid_viewset_3x9().modelviews[:3].expand(1, 3, 4, 4)
    events = []
    result = pipeline(cameras, [torch.Generator().manual_seed(0)], torch.tensor([1]), callback=events.append)
    steps = [(e["view"], e["i"]) for e in events if "sample" not in e]
    assert steps == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2)]
    finished = [e for e in events if "sample" in e]
    assert [e["view"] for e in finished] == [0, 1, 2] and all(e["views"] == 3 for e in events)
    for e in finished:
        assert torch.equal(e["sample"], result.rgbd[:, e["view"]])

    def stop_at_view_1(event):
        if event["view"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pipeline(cameras, [torch.Generator().manual_seed(0)], torch.tensor([1]), callback=stop_at_view_1)


def test_render_and_export_a_sampled_scene(run_3x9, tmp_path):
    root, _ = run_3x9
    result = CliRunner().invoke(
        app,
        [
            "render",
            str(root / "scenes" / "scene_class003_seed00003.npz"),
            "--frames",
            "3",
            "--cpu",
            "--output-dir",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    for name in ("scene_class003_seed00003.mp4", "scene_class003_seed00003_depth.mp4"):
        frames = imageio.mimread(tmp_path / "videos" / name)
        assert len(frames) == 3 and frames[0].shape == (SIZE, SIZE, 3)
    result = CliRunner().invoke(app, ["export", str(root), "--output-dir", str(tmp_path / "exports")])
    assert result.exit_code == 0, result.output
    for sfx in ("class003_seed00003", "class004_seed00004"):
        folder = tmp_path / "exports" / f"scene_{sfx}"
        for name in ("pointcloud.ply", "mesh.ply", "mesh.glb", "nerf/transforms.json", "nerf/images/view_026.png"):
            assert (folder / name).is_file()


def test_conditions_equal_a_direct_aggregation_of_the_saved_views(tmp_path):
    g = ExactDenoiser(DiffusionSchedule.linear(1000))
    pipeline = MultiViewPipeline(g, g, sampler_uncond=FAST, sampler_cond=FAST)
    cameras = grid_viewset_3x9().modelviews[:4]
    generators = [torch.Generator().manual_seed(s) for s in (0, 1)]
    result = pipeline(cameras.expand(2, 4, 4, 4), generators, torch.tensor([1, 2]))
    scene = Scene.load(result.scene(1, seed=1).save(tmp_path / "scene"))
    meshes, textures = scene.meshes(padding="frustum")
    for k in (1, 3):
        direct = aggregate_conditions(meshes[:k], textures[:k], scene.modelviews[k : k + 1], SIZE)
        recorded = result.conditions[k - 1]
        assert direct.mask.mean() > 0.3
        for name in ("color", "depth", "mask", "mask_rgb", "depth_convex"):
            assert torch.allclose(getattr(recorded, name)[1:2], getattr(direct, name), atol=1e-6), name


def test_official_samplers_wire_g_u_with_cfg_and_g_c_with_replacement_guidance():
    """View 0 is exactly DDPM over G_u with CFG from the instance's generator; with full replacement weights the
    known depth of every later view is reproduced and unknown depth stays behind the hull."""
    schedule = DiffusionSchedule(torch.linspace(1e-3, 0.3, 20, dtype=torch.float64))  # a short chain: cheap DDPM
    g_u = g_c = ExactDenoiser(schedule)
    pipeline = MultiViewPipeline(
        g_u,
        g_c,
        schedule,
        SamplerChoice("ddpm", 20),
        SamplerChoice("ddim", 4),
        Guidance(strength=2.0, w_depth=1.0, w_hull=1.0),
    )
    result = pipeline(
        grid_viewset_3x9().modelviews[None, [0, 3, 5]], [torch.Generator().manual_seed(11)], torch.tensor([5])
    )
    generator = torch.Generator().manual_seed(11)
    x_T = torch.randn(1, 4, SIZE, SIZE, generator=generator)
    view0 = ddpm_sample(classifier_free(g_u, torch.tensor([5]), 2.0), x_T, schedule, generator=generator)
    assert torch.allclose(result.rgbd[:, 0], view0, atol=1e-6)
    for k, cond in enumerate(result.conditions, start=1):
        depth, mask = result.rgbd[0, k, 3], cond.mask[0, 0] > 0.5
        assert mask.float().mean() > 0.3 and (~mask).any()
        assert torch.allclose(depth[mask], cond.depth[0, 0][mask] * 2 - 1, atol=1e-5)
        assert (depth[~mask] >= cond.depth_convex[0, 0][~mask] * 2 - 1 - 1e-5).all()


def test_a_given_first_view_replaces_g_u():
    """first_view is view 0 exactly, G_u is never called, and the later views are conditioned on it."""
    schedule = DiffusionSchedule(torch.linspace(1e-3, 0.3, 20, dtype=torch.float64))
    g_c = ExactDenoiser(schedule)
    g_u = ExactDenoiser(schedule)
    g_u.forward = None  # calling G_u would fail
    first = ExactDenoiser(schedule)  # any sane RGBD: an exact denoiser's sample
    x_T = torch.randn(1, 4, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    view0 = ddpm_sample(lambda x, t: first(x, t, torch.tensor([2])), x_T, schedule, generator=torch.Generator())
    pipeline = MultiViewPipeline(g_u, g_c, schedule, sampler_cond=SamplerChoice("ddim", 4))
    modelviews = grid_viewset_3x9().modelviews[None, [0, 3]]
    result = pipeline(modelviews, [torch.Generator().manual_seed(11)], torch.tensor([5]), first_view=view0)
    assert torch.equal(result.rgbd[:, 0], view0)
    direct = pipeline.aggregate(*zip(pipeline.mesh(view0, modelviews[:, 0])), modelviews[:, 1])
    assert torch.equal(result.conditions[0].mask, direct.mask)


def test_teacher_forcing_on_the_chains_own_views_repeats_the_chain():
    """A chain from a given view 0 conditions view k on the aggregation of its views 0..k-1: given those views,
    teacher forcing draws the same views from the same generators; given other views, it aggregates those."""
    schedule = DiffusionSchedule(torch.linspace(1e-3, 0.3, 20, dtype=torch.float64))
    g = ExactDenoiser(schedule)
    pipeline = MultiViewPipeline(g, g, schedule, sampler_cond=SamplerChoice("ddim", 4))
    modelviews = grid_viewset_3x9().modelviews[None, [0, 3, 5]].expand(2, 3, 4, 4)
    classes = torch.tensor([1, 4])
    first = pipeline.first_view([torch.Generator().manual_seed(s) for s in (5, 6)], classes)
    chain = pipeline(modelviews, [torch.Generator().manual_seed(s) for s in (0, 1)], classes, first_view=first)
    forced = pipeline.teacher_forced(
        chain.rgbd, modelviews, [torch.Generator().manual_seed(s) for s in (0, 1)], classes
    )
    assert torch.equal(forced.rgbd, chain.rgbd)
    others = chain.rgbd.flip(0)  # each instance given the other's views
    forced = pipeline.teacher_forced(others, modelviews, [torch.Generator().manual_seed(s) for s in (0, 1)], classes)
    assert torch.equal(forced.rgbd[:, 0], others[:, 0])
    meshes, textures = zip(*(pipeline.mesh(others[:, k], modelviews[:, k]) for k in range(2)), strict=True)
    direct = aggregate_conditions(meshes, textures, modelviews[:, 2], SIZE, allow_blind=True)
    assert direct.mask.mean() > 0.3
    for name in ("color", "depth", "mask", "mask_rgb", "depth_convex"):
        assert torch.equal(getattr(forced.conditions[1], name), getattr(direct, name)), name
    with pytest.raises(ValueError, match="expected views of shape"):
        pipeline.teacher_forced(others[:, :2], modelviews, [torch.Generator()] * 2, classes)
    one_generator = r"one generator per instance \(2\), got 1"  # the chain and teacher forcing alike
    with pytest.raises(ValueError, match=one_generator):
        pipeline(modelviews, [torch.Generator()], classes)
    with pytest.raises(ValueError, match=one_generator):
        pipeline.teacher_forced(others, modelviews, [torch.Generator()], classes)


def test_a_camera_that_sees_no_previous_view_gets_an_empty_condition(models):
    """Official behaviour for e.g. the back of a coarse orbit: no known pixels (only the earlier view's weak
    skirt may give a hull); batch-mates unaffected."""
    g_u, g_c = models
    pipeline = MultiViewPipeline(g_u, g_c, sampler_uncond=FAST, sampler_cond=FAST)
    front, side = orbit_viewset(2).modelviews[0], grid_viewset_3x9().modelviews[3]
    cameras = torch.stack([torch.stack([front, side]), orbit_viewset(3).modelviews[:2]])
    result = pipeline(cameras, [torch.Generator().manual_seed(s) for s in (0, 1)], torch.tensor([0, 1]))
    cond = result.conditions[0]
    assert cond.mask[0].any() and not cond.mask[1].any() and not cond.mask_rgb[1].any()
    meshes, textures = result.scene(0).meshes(padding="frustum")
    direct = aggregate_conditions(meshes[:1], textures[:1], side[None], SIZE)
    assert torch.allclose(cond.color[:1], direct.color, atol=1e-5) and torch.equal(cond.mask[:1], direct.mask)


def test_a_killed_run_resumes_without_duplicates(models, tmp_path, monkeypatch):
    g_u, _ = models
    calls = []
    original = MultiViewPipeline.__call__

    def dies_on_second_batch(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(MultiViewPipeline, "__call__", dies_on_second_batch)
    run = dict(viewset="uncond", batch_size=1, sampler_uncond=FAST, progress=False)
    with pytest.raises(KeyboardInterrupt):
        sampling.sample_viewset(g_u, None, tmp_path, [0, 1, 2], **run)
    assert [p.name for p in sorted((tmp_path / "scenes").iterdir())] == [
        "scene_class000_seed00000.json",
        "scene_class000_seed00000.npz",
    ]
    first = digest(tmp_path / "results" / "rgb_class000_seed00000.png")
    # A half-written instance (npz but no JSON) counts as unfinished and is redone.
    (tmp_path / "scenes" / "scene_class001_seed00001.npz").write_bytes(b"partial")
    monkeypatch.setattr(MultiViewPipeline, "__call__", original)
    written = sampling.sample_viewset(g_u, None, tmp_path, [0, 1, 2], **run)
    assert [p.name for p in written] == ["scene_class001_seed00001.npz", "scene_class002_seed00002.npz"]
    assert digest(tmp_path / "results" / "rgb_class000_seed00000.png") == first
    assert len(list((tmp_path / "results").iterdir())) == 3 and len(list((tmp_path / "scenes").iterdir())) == 6
    assert not [p for p in tmp_path.rglob(".*")]  # no temporary files left behind


def test_random_viewset_layout_and_striping(models, tmp_path):
    g_u, g_c = models
    run = dict(viewset="random", batch_size=2, sampler_uncond=FAST, sampler_cond=FAST, progress=False, classes="random")
    first = sampling.sample_viewset(g_u, g_c, tmp_path, [0, 1, 2], rank=0, world_size=2, **run)
    second = sampling.sample_viewset(g_u, g_c, tmp_path, [0, 1, 2], rank=1, world_size=2, **run)
    assert len(first) == 2 and len(second) == 1 and not {p.name for p in first} & {p.name for p in second}
    for path in first + second:
        sfx = path.stem.removeprefix("scene_")
        assert Image.open(tmp_path / "grids" / f"rgb_{sfx}.png").size == (2 * SIZE, SIZE)
        assert (tmp_path / "conds" / f"rgb_{sfx}.png").is_file() and (tmp_path / "results" / f"rgb_{sfx}.png").is_file()


def test_official_checkpoints_and_experiment_configs_load_unchanged(reference, tmp_path):
    """`iterview sample` on official plain state-dict .pt files with official experiment JSONs."""
    configs = []
    for name in ("adm_small_uncond", "adm_small_cond"):
        args = json.loads((reference / name / "config.json").read_text())
        experiment = {"backbone": {"name": "AdmUnet2d", "args": args}, "framework": {"name": "ClassifierFreeGuidance"}}
        configs.append(tmp_path / f"{name}.json")
        configs[-1].write_text(json.dumps(experiment))
    args = [
        "sample",
        "--uncond",
        str(reference / "adm_small_uncond" / "checkpoint.pt"),
        "--config-uncond",
        str(configs[0]),
        "--cond",
        str(reference / "adm_small_cond" / "checkpoint.pt"),
        "--config-cond",
        str(configs[1]),
        "--viewset",
        "random",
        "--seeds",
        "0",
        "--sampler",
        "fast",
        "--steps-uncond",
        "2",
        "--steps-cond",
        "2",
        "--guidance",
        "0.5",
        "--cpu",
        "--output-dir",
        str(tmp_path),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    root = tmp_path / "viewset_random_steps_uddim2+eta1_cddim2+cfg81-578_guidance0.5"
    size = json.loads((reference / "adm_small_uncond" / "config.json").read_text())["image_size"]
    assert Image.open(root / "results" / "rgb_class000_seed00000.png").size == (size, size)
    assert Scene.load(root / "scenes" / "scene_class000_seed00000").rgbd.shape[1:] == (4, size, size)
