"""`iterview lift`: a shipped photograph and odd files end to end with a tiny random depth model and tiny models;
bad input; determinism; and agreement with the multi-view pipeline on a synth image with its true depth."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from depth_support import save_tiny_depth_anything
from PIL import Image
from typer.testing import CliRunner

from iterview.cli import app
from iterview.config import ADMConfig, tiny_adm_config
from iterview.data.datasets import RGBDDataset
from iterview.data.layout import load_depth, read_index
from iterview.data.synth import write_synth_dataset
from iterview.diffusion.presets import resolve_samplers
from iterview.errors import UserError
from iterview.geometry.inference import InferenceGeometry
from iterview.models import shipped
from iterview.models.adm import ADMUNet
from iterview.models.checkpoint import save_model, tiny_adm
from iterview.pipeline import lift as lift_module
from iterview.pipeline.lift import LiftSettings, PhotoLifter, lift_photo, load_lift_models
from iterview.pipeline.multiview import Guidance, MultiViewPipeline
from iterview.pipeline.scene import Scene
from iterview.pipeline.viewsets import make_viewset
from iterview.validate import file_digest, network_identity

pytestmark = pytest.mark.usefixtures("one_thread")

GRACE = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
SIZE = 16
CLASSES = 5


def tiny_model(in_channels: int, seed: int, size: int = SIZE) -> tuple[ADMUNet, ADMConfig]:
    shape = {"image_size": size, "in_channels": in_channels, "num_classes": CLASSES}
    return tiny_adm(seed, **shape), tiny_adm_config(**shape)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        "g_c": save_model(*tiny_model(10, 2), root / "gc"),
        "g_u": save_model(*tiny_model(4, 1), root / "gu"),
        "g_c32": save_model(*tiny_model(10, 3, 32), root / "gc32"),
    }


@pytest.fixture(scope="module")
def depth_model(tmp_path_factory) -> Path:
    return save_tiny_depth_anything(tmp_path_factory.mktemp("tiny_depth_anything"), varied=False)


@pytest.fixture(autouse=True)
def short_videos(monkeypatch):
    monkeypatch.setattr(lift_module, "VIDEO_FRAMES", 3)


def lifter(models, depth_model=None, **settings) -> PhotoLifter:
    return PhotoLifter(load_lift_models(models["g_c"]), LiftSettings(depth_model=depth_model, **settings))


def _area_crop(path: Path, size: int) -> torch.Tensor:
    """The centre square of a photo, area-averaged to size²: (3, size, size) in [0, 1]."""
    image = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
    height, width = image.shape[1:]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return F.adaptive_avg_pool2d(image[None, :, top : top + side, left : left + side], size)[0]


def test_grace_hopper_end_to_end(models, depth_model, tmp_path):
    calls = []
    out = lift_photo(
        GRACE,
        tmp_path / "grace",
        models["g_c"],
        depth_model=str(depth_model),
        viewset="orbit:4",
        sampler="fast",
        seed=3,
        callback=lambda done, total: calls.append((done, total)),
    )
    assert out == tmp_path / "grace"
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    stem = out / "scenes" / "scene_seed00003"
    scene = Scene.load(stem)
    assert scene.rgbd.shape == (4, 4, SIZE, SIZE) and (scene.near, scene.far) == (0.6, 5.0)
    record = json.loads(stem.with_suffix(".json").read_text())["info"]["lift"]
    assert record["depth"] == {"model": str(depth_model), "kind": "disparity"}
    assert record["cond"] == str(models["g_c"]) and record["fit"] == "crop" and record["viewset"] == "orbit:4"
    assert record["geometry"]["near"] == 0.6 and record["input_depth"] == {"near": 0.5, "far": 100.0}
    # The official geometry carried to the model's size, recorded in the scene and in its info.
    assert scene.geometry == InferenceGeometry.for_size(SIZE) and record["geometry"] == scene.geometry.to_dict()
    # View 0 is the photo: its colour is the photo's centre crop at the model's size (LANCZOS there, an area
    # average here), far closer to it than to its mirror image.
    rgb, crop = scene.rgbd[0, :3] * 0.5 + 0.5, _area_crop(GRACE, SIZE)
    error = (rgb - crop).abs().mean()
    assert error < 0.05 and (rgb - crop.flip(-1)).abs().mean() > 2 * error
    # Depth Anything's relative disparity puts its peak at z = 0.5, i.e. the front of the z-buffer (0.5, 100).
    assert scene.rgbd[0, 3].min() == pytest.approx(-1.0, abs=1e-6)
    for name in ("grids/rgb_seed00003.png", "grids/depth_seed00003.png", "conds/rgb_cond_seed00003.png"):
        assert Image.open(out / name).size == (4 * SIZE, SIZE)
    for name in ("scene_seed00003.mp4", "scene_seed00003_depth.mp4"):
        assert (out / "videos" / name).stat().st_size > 0
    exports = out / "exports" / "scene_seed00003"
    for name in ("pointcloud.ply", "mesh.ply", "mesh.glb", "nerf/transforms.json"):
        assert (exports / name).stat().st_size > 0
    assert len(json.loads((exports / "nerf" / "transforms.json").read_text())["frames"]) == 4


def _odd_photos(folder: Path) -> dict[str, Path]:
    """EXIF-rotated, RGBA, CMYK, 16-bit grey and 1000×300 files, each with a layout whose view 0 is known."""
    folder.mkdir()
    paths = {}
    # Stored 40 wide × 60 high with orientation 6 (rotate 90° clockwise to view): upright it is 60 × 40 and the
    # stored top row (red) becomes the right-hand column.
    stored = np.zeros((60, 40, 3), np.uint8)
    stored[:30] = (255, 0, 0)
    stored[30:] = (0, 0, 255)
    rotated = Image.fromarray(stored)
    exif = rotated.getexif()
    exif[0x0112] = 6
    paths["rotated"] = folder / "rotated.jpg"
    rotated.save(paths["rotated"], exif=exif, quality=95)
    rgba = np.zeros((48, 48, 4), np.uint8)
    rgba[..., 1] = 200
    rgba[:, :24, 3] = 255  # left half opaque green, right half transparent
    paths["rgba"] = folder / "rgba.png"
    Image.fromarray(rgba).save(paths["rgba"])
    paths["cmyk"] = folder / "cmyk.jpg"
    Image.new("RGB", (40, 40), (200, 30, 30)).convert("CMYK").save(paths["cmyk"], quality=95)
    paths["deep"] = folder / "deep.png"
    Image.fromarray(np.full((40, 40), 40000, np.uint16)).save(paths["deep"])
    wide = np.zeros((300, 1000, 3), np.uint8)
    wide[..., 2] = np.linspace(0, 255, 1000, dtype=np.uint8)
    paths["wide"] = folder / "wide.png"
    Image.fromarray(wide).save(paths["wide"])
    return paths


def test_odd_photos_become_the_right_first_view(models, depth_model, tmp_path):
    photos = _odd_photos(tmp_path / "odd")
    crop, pad = lifter(models, str(depth_model)), lifter(models, str(depth_model), pad=True)
    rgb = {name: crop.first_view(path).rgbd[:3] * 0.5 + 0.5 for name, path in photos.items()}
    right, left = rgb["rotated"][:, :, -3:].mean((1, 2)), rgb["rotated"][:, :, :3].mean((1, 2))
    assert right[0] > 0.9 and right[2] < 0.1 and left[2] > 0.9 and left[0] < 0.1
    assert torch.allclose(rgb["rgba"][:, :, :6].mean((1, 2)), torch.tensor([0.0, 200 / 255, 0.0]), atol=0.02)
    assert torch.allclose(rgb["rgba"][:, :, -6:].mean((1, 2)), torch.ones(3), atol=0.02)  # over white
    assert torch.allclose(rgb["cmyk"].mean((1, 2)), torch.tensor([200, 30, 30]) / 255, atol=0.05)
    assert torch.allclose(rgb["deep"], torch.full_like(rgb["deep"], 40000 / 257 / 255), atol=0.01)
    assert rgb["wide"][2].min() > 0.3 and rgb["wide"][2].max() < 0.7  # the centre 300 × 300 of the ramp
    wide = pad.first_view(photos["wide"])
    rows = wide.known[0].any(dim=1)
    assert torch.equal(rows, wide.known[0].all(dim=1)) and 4 <= int(rows.sum()) <= 6  # 300/1000 of 16 rows
    assert not wide.known[0, 0].any() and not wide.known[0, -1].any()
    band = wide.rgbd[2, rows] * 0.5 + 0.5
    assert band[:, 0].mean() < 0.1 and band[:, -1].mean() > 0.9  # the whole width is kept


def test_pad_inpaints_the_padding_and_keeps_the_photo(models, depth_model, tmp_path):
    photos = _odd_photos(tmp_path / "odd")
    for uncond in (None, models["g_u"]):
        out = lift_photo(
            photos["wide"],
            tmp_path / f"wide_{uncond is None}",
            models["g_c"],
            uncond=uncond,
            depth_model=str(depth_model),
            viewset="swing:2",
            pad=True,
            sampler="fast",
        )
        scene = Scene.load(out / "scenes" / "scene_seed00000")
        first = lifter(models, str(depth_model), pad=True).first_view(photos["wide"])
        known = first.known.expand(4, -1, -1)
        assert torch.equal(scene.rgbd[0][known], first.rgbd[known])
        assert scene.rgbd[0][~known].std() > 0.01  # generated, not the constant fill
        record = json.loads((out / "scenes" / "scene_seed00000.json").read_text())["info"]["lift"]
        assert record["padding_filled_by"] == ("G_c" if uncond is None else "G_u") and record["fit"] == "pad"


def test_cli_batch_lifts_the_good_photos_and_reports_the_bad(models, depth_model, tmp_path):
    photos = _odd_photos(tmp_path / "odd")
    broken = tmp_path / "odd" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    missing = tmp_path / "odd" / "missing.png"
    args = ["lift", str(photos["rotated"]), str(broken), str(photos["cmyk"]), str(missing)]
    args += ["--cond", str(models["g_c"]), "--depth-model", str(depth_model), "--viewset", "swing:2"]
    args += ["--sampler", "fast", "--class", "2", "--cpu", "--output", str(tmp_path / "out")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and str(broken) in errors[0] and str(missing) in errors[1]
    assert "2 of 4 photo(s) failed" in result.output
    for name in ("rotated", "cmyk"):
        scene = Scene.load(tmp_path / "out" / name / "scenes" / "scene_class002_seed00000")
        assert scene.label == 2 and len(scene) == 3
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["cmyk", "rotated"]
    # A photo in a batch gives the scene it gives alone.
    alone = lift_photo(
        photos["cmyk"],
        tmp_path / "alone",
        models["g_c"],
        depth_model=str(depth_model),
        class_label=2,
        viewset="swing:2",
        sampler="fast",
    )
    for suffix in (".npz", ".json"):
        batch = (tmp_path / "out" / "cmyk" / "scenes" / "scene_class002_seed00000").with_suffix(suffix)
        single = (alone / "scenes" / "scene_class002_seed00000").with_suffix(suffix)
        assert batch.read_bytes() == single.read_bytes()


def _synth_photo(root: Path) -> tuple[Path, Path, int]:
    """A 48-px synth image as a PNG, its true official-scale disparity and its label."""
    data = write_synth_dataset(root / "synth", 1, 48, seed=5)
    index = read_index(data)
    return data / index.images[0], data / index.depths[0], index.label_of(0)


@pytest.mark.parametrize(
    "case",
    [
        "missing photo",
        "unreadable photo",
        "depth of another aspect",
        "NaN depth",
        "non-positive depth",
        "G_c with 4 channels",
        "class out of range",
        "depth model not loadable",
    ],
)
def test_bad_input_is_one_clear_line_before_any_sampling(case, models, tmp_path, monkeypatch):
    def no_sampling(*args, **kwargs):
        raise AssertionError("sampling started")

    monkeypatch.setattr(MultiViewPipeline, "__call__", no_sampling)
    photo, disparity, _ = _synth_photo(tmp_path)
    depth = tmp_path / "depth.npy"
    np.save(depth, load_depth(disparity).astype(np.float32))
    named = {"photo": photo, "depth": depth, "cond": models["g_c"]}
    extra = []
    if case == "missing photo":
        named["photo"] = tmp_path / "nowhere.jpg"
    elif case == "unreadable photo":
        named["photo"] = tmp_path / "text.png"
        named["photo"].write_text("not an image")
    elif case == "depth of another aspect":
        np.save(depth, np.ones((48, 64), np.float32))
    elif case == "NaN depth":
        values = np.ones((48, 48), np.float32)
        values[3, 4] = np.nan
        np.save(depth, values)
    elif case == "non-positive depth":
        np.save(depth, np.zeros((48, 48), np.float32))
        extra = ["--depth-kind", "depth"]
    elif case == "G_c with 4 channels":
        named["cond"] = models["g_u"]
    elif case == "class out of range":
        extra = ["--class", str(CLASSES)]
    else:
        named["depth"] = None
        named["model"] = tmp_path / "empty_model"
        named["model"].mkdir()
        extra = ["--depth-model", str(named["model"])]
    args = ["lift", str(named["photo"]), "--cond", str(named["cond"]), "--output", str(tmp_path / "out"), "--cpu"]
    if named["depth"] is not None:
        args += ["--depth", str(named["depth"])]
    result = CliRunner().invoke(app, [*args, *extra])
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output and not (tmp_path / "out" / "scenes").exists()
    culprit = {
        "G_c with 4 channels": named["cond"].name,
        "class out of range": "--class",
        "depth model not loadable": "empty_model",
        "missing photo": "nowhere.jpg",
        "unreadable photo": "text.png",
    }.get(case, "depth.npy")
    assert culprit in result.output, result.output


def test_same_seed_same_scene_other_seed_other_scene(models, tmp_path):
    photo, disparity, _ = _synth_photo(tmp_path)
    runs = {}
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        out = lift_photo(photo, tmp_path / name, models["g_c"], depth=disparity, viewset="swing:2", seed=seed)
        runs[name] = next((out / "scenes").glob("*.npz")).read_bytes()
    assert runs["a"] == runs["b"] and runs["a"] != runs["c"]


def test_a_lift_never_replaces_another_scene_without_overwrite(models, tmp_path, monkeypatch):
    photo, disparity, _ = _synth_photo(tmp_path)
    out, alone = tmp_path / "out", tmp_path / "alone"
    base = ["lift", str(photo), "--cond", str(models["g_c"]), "--depth", str(disparity), "--viewset", "swing:2"]
    base += ["--sampler", "fast", "--cpu"]

    def lift(*extra: str, output: Path = out):
        return CliRunner().invoke(app, [*base, "--output", str(output), *extra])

    assert lift().exit_code == 0
    npz = out / "scenes" / "scene_seed00000.npz"
    first = npz.read_bytes()
    record = json.loads(npz.with_suffix(".json").read_text())["info"]["lift"]
    assert record["photo_sha256"] == file_digest(photo).hexdigest()
    assert record["depth"]["sha256"] == file_digest(disparity).hexdigest()
    assert record["models"]["cond"] == network_identity(load_lift_models(models["g_c"]).g_c)

    def no_sampling(*args, **kwargs):
        raise AssertionError("sampling started")

    with monkeypatch.context() as patch:
        patch.setattr(MultiViewPipeline, "__call__", no_sampling)
        again = lift()  # the same lift, finished: kept, not sampled again
        assert again.exit_code == 0 and "(already lifted)" in again.output
        other_settings = lift("--viewset", "swing:3")
        Image.open(photo).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(photo)  # another photo at the same path
        other_photo = lift()
    for result, changed in ((other_settings, "viewset"), (other_photo, "photo_sha256")):
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert "output folder holds another scene" in result.output and changed in result.output, result.output
        assert "--overwrite" in result.output
    assert npz.read_bytes() == first
    replaced = lift("--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert lift(output=alone).exit_code == 0
    assert npz.read_bytes() != first and npz.read_bytes() == (alone / "scenes" / "scene_seed00000.npz").read_bytes()
    with pytest.raises(UserError, match="another scene"):
        lift_photo(photo, out, models["g_c"], depth=disparity, viewset="swing:3", sampler="fast")


def test_a_lifted_synth_image_gives_the_pipelines_views_from_the_same_first_view(models, tmp_path):
    """Item 3 of the issue: lifting a held-out-style synth PNG with its true depth samples exactly what the
    multi-view pipeline samples from that image as the dataset loads it, with the same seed and class."""
    photo, disparity, label = _synth_photo(tmp_path)
    out = lift_photo(
        photo,
        tmp_path / "lift",
        models["g_c32"],
        depth=disparity,
        class_label=label,
        viewset="swing:4",
        seed=11,
        sampler="fast",
    )
    lifted = Scene.load(out / "scenes" / f"scene_class{label:03d}_seed00011")

    g_c = load_lift_models(models["g_c32"]).g_c
    fast = resolve_samplers("fast")[1]
    geometry = InferenceGeometry.for_size(32)
    pipeline = MultiViewPipeline(None, g_c, sampler_cond=fast, guidance=Guidance(strength=3.0), geometry=geometry)
    first = RGBDDataset(tmp_path / "synth", 32)[0]["x_0"][None]
    generator = torch.Generator().manual_seed(11)
    expected = pipeline(make_viewset("swing:4").modelviews[None], [generator], torch.tensor([label]), first_view=first)
    assert torch.equal(lifted.rgbd, expected.rgbd[0])
    assert torch.equal(lifted.modelviews, expected.modelviews[0])


def test_a_shipped_name_brings_its_inference_settings(tmp_path, monkeypatch):
    """`--cond NAME` of a shipped set loads its G_c and samples with the set's geometry, guidance and clipping."""
    weights = tmp_path / "weights" / "tinyset"
    save_model(*tiny_model(10, 2), weights / "g_c")
    (weights / "MODEL_CARD.md").write_text("tiny")
    geometry = {"fov": 45.0, "near": 0.5, "far": 100.0, "atol": 0.12, "rtol": 0.12, "erode_rgb": 1}
    (weights / "inference.json").write_text(json.dumps({"geometry": geometry, "guidance": 1.0, "clip_denoised": True}))
    monkeypatch.setattr(shipped, "WEIGHTS_ROOT", tmp_path / "weights")
    photo, disparity, label = _synth_photo(tmp_path)
    args = ["lift", str(photo), "--cond", "tinyset", "--depth", str(disparity), "--class", str(label)]
    args += ["--viewset", "swing:2", "--sampler", "fast", "--cpu", "--output", str(tmp_path / "out")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    stem = tmp_path / "out" / "scenes" / f"scene_class{label:03d}_seed00000"
    scene = Scene.load(stem)
    assert scene.geometry == InferenceGeometry.from_dict(geometry)
    record = json.loads(stem.with_suffix(".json").read_text())["info"]["lift"]
    assert record["cond"] == "tinyset" and record["guidance"] == 1.0 and record["sampler"]["cond"]["clip"] is True
    # Without the shipped set the name is a path that does not exist: one line naming it.
    monkeypatch.setattr(shipped, "WEIGHTS_ROOT", tmp_path / "nothing")
    missing = CliRunner().invoke(app, args)
    assert missing.exit_code != 0 and "tinyset" in missing.output


def test_official_checkpoint_and_experiment_config(reference, depth_model, tmp_path):
    """The official plain state-dict G_c with its experiment JSON (`--config-cond`), the null class by default
    and a chosen class within the config's range."""
    args = json.loads((reference / "adm_small_cond" / "config.json").read_text())
    config = tmp_path / "experiment.json"
    config.write_text(json.dumps({"backbone": {"name": "AdmUnet2d", "args": args}}))
    base = ["lift", str(GRACE), "--cond", str(reference / "adm_small_cond" / "checkpoint.pt")]
    base += ["--config-cond", str(config), "--depth-model", str(depth_model), "--viewset", "swing:2", "--cpu"]
    base += ["--sampler", "fast"]
    null = CliRunner().invoke(app, [*base, "--output", str(tmp_path / "null")])
    assert null.exit_code == 0, null.output
    chosen = CliRunner().invoke(app, [*base, "--class", str(args["num_classes"] - 1), "--output", str(tmp_path / "c")])
    assert chosen.exit_code == 0, chosen.output
    scene = Scene.load(tmp_path / "c" / "scenes" / f"scene_class{args['num_classes'] - 1:03d}_seed00000")
    assert scene.rgbd.shape[-1] == args["image_size"] and len(scene) == 3
    assert Scene.load(tmp_path / "null" / "scenes" / "scene_seed00000").label == -1
