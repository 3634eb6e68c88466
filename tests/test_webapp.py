"""The app's handlers and job queue as plain functions, with tiny random models on CPU (no web library needed)."""

import importlib.util
import json
import sys
import threading
import time
import types
import zipfile
from functools import partial

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from iterview.cli import app
from iterview.config import tiny_adm_config
from iterview.diffusion.presets import GUIDANCE_WINDOW, SamplerChoice, resolve_samplers
from iterview.io import to_uint8
from iterview.models.checkpoint import save_model, tiny_adm
from iterview.pipeline.multiview import Guidance
from iterview.pipeline.sampling import sample_viewset
from iterview.pipeline.scene import Scene
from iterview.validate import network_identity
from iterview.webapp import handlers
from iterview.webapp.handlers import AppModels, GenerateOptions, LiftOptions, RenderSettings
from iterview.webapp.jobs import Done, Failed, JobQueue, Progress

SIZE = 16


def tiny(in_channels: int, seed: int):
    """A 16-px random G_u (4 input channels) or G_c (10) and its config."""
    return tiny_adm(seed, image_size=SIZE, in_channels=in_channels), tiny_adm_config(SIZE, in_channels)


pytestmark = pytest.mark.usefixtures("one_thread")

OPTIONS = GenerateOptions(seed=3, viewset="swing:2", sampler="fast", steps=2, guidance=2.0)
RENDER = RenderSettings(frames=4, ssaa=1)


@pytest.fixture(scope="module")
def models():
    return AppModels(tiny(4, 1)[0].eval(), tiny(10, 2)[0].eval(), torch.device("cpu"))


@pytest.fixture(scope="module")
def generated(models, tmp_path_factory):
    events = []
    root = tmp_path_factory.mktemp("app")
    outputs = handlers.generate_scene(models, OPTIONS, root, events.append, RENDER)
    return root, outputs, events


def test_generate_matches_iterview_sample_and_reports_each_view(models, generated, tmp_path):
    _, outputs, events = generated
    fast_u, fast_c = resolve_samplers("fast", steps_cond=2)
    assert fast_c == SamplerChoice("ddim", 2, cfg_window=GUIDANCE_WINDOW)
    (truth,) = sample_viewset(
        models.g_u,
        models.g_c,
        tmp_path,
        [3],
        "swing:2",
        batch_size=1,
        sampler_uncond=fast_u,
        sampler_cond=fast_c,
        guidance=Guidance(strength=2.0),
        geometry=models.geometry,
        progress=False,
    )
    scene = Scene.load(outputs.scene)
    assert outputs.scene.name == "scene_class003_seed00003"  # class = seed mod 10, as `iterview sample`
    assert torch.equal(scene.rgbd, Scene.load(truth).rgbd)
    previews = [e.image for e in events if e.image is not None]
    assert len(previews) == 3
    for view, image in enumerate(previews):
        assert np.array_equal(image, to_uint8(scene.rgbd[view, :3] * 0.5 + 0.5))
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and fractions[0] >= 0 and fractions[-1] <= 1
    assert Image.open(outputs.grid_rgb).size == (3 * SIZE, SIZE)
    assert Image.open(outputs.grid_depth).size == (3 * SIZE, SIZE)
    assert len(imageio.mimread(outputs.video)) == RENDER.frames
    names = {p.relative_to(outputs.scene.parent.parent).as_posix() for p in outputs.files}
    for expected in ("mesh.glb", "mesh.ply", "pointcloud.ply", "nerf/transforms.json"):
        assert f"exports/{outputs.scene.name}/{expected}" in names
    assert f"videos/{outputs.scene.name}.mp4" in names and f"scenes/{outputs.scene.name}.npz" in names


def test_generate_again_reuses_the_finished_scene(models, generated):
    root, outputs, _ = generated
    before = outputs.video.stat().st_mtime_ns
    events = []
    again = handlers.generate_scene(models, OPTIONS, root, events.append, RENDER)
    assert again.scene == outputs.scene and again.files == outputs.files
    assert not any(e.image is not None for e in events) and outputs.video.stat().st_mtime_ns == before


def test_generate_rejects_bad_settings_clearly(models, tmp_path):
    for options, message in (
        (GenerateOptions(viewset="uncond"), "one view"),
        (GenerateOptions(viewset="cams.yaml"), "camera files"),
        (GenerateOptions(viewset="3x9", sampler="slow"), "unknown sampler preset"),
        (GenerateOptions(viewset="3x9", class_label=10), "out of range"),
    ):
        with pytest.raises(ValueError, match=message):
            handlers.generate_scene(models, options, tmp_path, lambda event: None)
    with pytest.raises(ValueError, match="frames"):
        RenderSettings(frames=1)
    with pytest.raises(ValueError, match="seed"):
        GenerateOptions(seed=-1)
    with pytest.raises(ValueError, match="guidance"):
        LiftOptions(guidance=float("nan"))


def test_cancelling_a_generation_stops_it_before_any_scene_is_written(models, tmp_path):
    jobs = JobQueue(min_interval=0)
    work = partial(handlers.generate_scene, models, GenerateOptions(seed=5, viewset="swing:2"), tmp_path)
    events = jobs.run(work)
    first = next(events)
    assert isinstance(first, Progress) and first.message == "view 1/3: step 1/1000"  # official: DDPM-1000 first
    assert jobs.cancel()
    rest = list(events)
    assert rest[-1] == Failed("cancelled") and len(rest) < 100
    assert not list(tmp_path.rglob("*.json")) and jobs.waiting() == 0


def test_explore_frame_renders_the_chosen_camera(generated):
    _, outputs, _ = generated
    front = handlers.explore_frame(outputs.scene, 0.0, 0.0, ssaa=1)
    assert front.shape == (SIZE, SIZE, 3) and front.dtype == np.uint8
    # The front camera sees view 0 itself: most fused pixels are view 0's own colours.
    view0 = to_uint8(Scene.load(outputs.scene).rgbd[0, :3] * 0.5 + 0.5).astype(int)
    assert np.median(np.abs(front.astype(int) - view0)) <= 2
    side = handlers.explore_frame(outputs.scene, 0.5, -0.1, ssaa=1)
    assert np.abs(side.astype(int) - front.astype(int)).mean() > 1
    for yaw, pitch in ((4.0, 0.0), (0.0, 1.6), (float("nan"), 0.0)):
        with pytest.raises(ValueError, match=r"yaw|pitch"):
            handlers.explore_frame(outputs.scene, yaw, pitch)


def test_explore_video_with_progress(generated):
    _, outputs, _ = generated
    events = []
    video = handlers.explore_video(outputs.scene, "swing", 5, events.append, ssaa=1)
    assert video.name == f"{outputs.scene.name}_swing.mp4" and len(imageio.mimread(video)) == 5
    assert events[-1].fraction == 1.0 and [e.fraction for e in events] == sorted(e.fraction for e in events)
    with pytest.raises(ValueError, match="swing or orbit"):
        handlers.explore_video(outputs.scene, "random", 5, events.append)
    with pytest.raises(ValueError, match="an orbit scene covers 360°"):  # a swing scene has no back
        handlers.explore_video(outputs.scene, "orbit", 5, events.append, ssaa=1)


def test_download_bundle_holds_every_file(generated):
    _, outputs, _ = generated
    bundle = handlers.download_bundle(outputs)
    base = outputs.scene.parent.parent
    with zipfile.ZipFile(bundle) as archive:
        assert sorted(archive.namelist()) == sorted(p.relative_to(base).as_posix() for p in outputs.files)
        for path in outputs.files:
            assert archive.read(path.relative_to(base).as_posix()) == path.read_bytes()
    with pytest.raises(ValueError, match="generate or lift"):
        handlers.download_bundle(None)


@pytest.fixture
def photos(tmp_path):
    good = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(good)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(good.read_bytes()[:120])
    empty = tmp_path / "empty.jpg"
    empty.touch()
    return {"good": good, "text": text, "corrupt": corrupt, "empty": empty}


def test_check_photo_accepts_photos_and_explains_bad_uploads(photos):
    assert handlers.check_photo(photos["good"]).size == (30, 40)
    cases = (
        (None, {}, "no photo"),
        (photos["text"], {}, "not an image"),
        (photos["corrupt"], {}, "corrupt"),
        (photos["empty"], {}, "empty"),
        (photos["good"], {"max_bytes": 100}, "too large.*MB"),
        (photos["good"], {"max_pixels": 30 * 39}, "too large.*30x40 pixels"),
        (photos["good"].with_name("missing.png"), {}, "not found"),
    )
    for path, limits, message in cases:
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            handlers.check_photo(path, **limits)


@pytest.fixture
def stand_in_lift(monkeypatch, generated):
    """`iterview.pipeline.lift.lift_photo` as documented, writing the folder a lift makes (from a real scene)."""
    _, outputs, _ = generated
    calls = []

    def lift_photo(photo, output_dir, cond, **options):
        calls.append((photo, output_dir, cond, options))
        options["callback"]({"view": 0, "views": 2})
        Scene.load(outputs.scene).save(output_dir / "scene")
        for source, name in ((outputs.grid_rgb, "grid_rgb.png"), (outputs.grid_depth, "grid_depth.png")):
            (output_dir / name).write_bytes(source.read_bytes())
        (output_dir / "video.mp4").write_bytes(outputs.video.read_bytes())
        (output_dir / "mesh.glb").write_bytes(b"glb")
        return output_dir

    monkeypatch.setitem(sys.modules, "iterview.pipeline.lift", types.SimpleNamespace(lift_photo=lift_photo))
    return calls


def test_lift_passes_the_upload_to_lift_photo_and_finds_its_outputs(models, photos, stand_in_lift, tmp_path):
    events = []
    options = LiftOptions(viewset="orbit:8", seed=4, class_label=2, sampler="fast", guidance=1.5)
    outputs = handlers.lift_scene(models, photos["good"], None, options, tmp_path, events.append)
    ((photo, folder, cond, kwargs),) = stand_in_lift
    assert photo == photos["good"] and cond is models.g_c and kwargs["uncond"] is models.g_u
    assert folder == tmp_path / "lift" / "photo_seed00004"
    assert {k: kwargs[k] for k in ("viewset", "seed", "class_label", "sampler", "guidance", "depth", "pad")} == {
        "viewset": "orbit:8",
        "seed": 4,
        "class_label": 2,
        "sampler": "fast",
        "guidance": 1.5,
        "depth": None,
        "pad": False,
    }
    assert outputs.scene == folder / "scene" and outputs.video == folder / "video.mp4"
    assert outputs.grid_rgb == folder / "grid_rgb.png" and outputs.grid_depth == folder / "grid_depth.png"
    assert folder / "mesh.glb" in outputs.files and [e.message for e in events][-1] == "view 1/2"
    bundle = handlers.download_bundle(outputs)
    assert "mesh.glb" in zipfile.ZipFile(bundle).namelist()


def test_a_second_lift_of_the_same_name_lands_beside_the_first(models, photos, stand_in_lift, tmp_path):
    options = LiftOptions(seed=4)
    first = handlers.lift_scene(models, photos["good"], None, options, tmp_path, lambda event: None)
    before = {path: path.read_bytes() for path in first.files}
    second = handlers.lift_scene(models, photos["good"], None, options, tmp_path, lambda event: None)
    assert [call[1] for call in stand_in_lift] == [tmp_path / "lift" / f"photo_seed00004{s}" for s in ("", "-2")]
    assert second.scene == tmp_path / "lift" / "photo_seed00004-2" / "scene"
    assert {path: path.read_bytes() for path in first.files} == before


def test_bad_uploads_to_lift_end_as_a_message(models, photos, stand_in_lift, tmp_path):
    jobs = JobQueue()
    for photo, message in ((photos["text"], "not an image"), (photos["corrupt"], "corrupt"), (None, "no photo")):
        work = partial(handlers.lift_scene, models, photo, None, LiftOptions(), tmp_path)
        (*_, last) = jobs.run(work)
        assert isinstance(last, Failed) and message in last.message
    assert stand_in_lift == []


def test_lift_without_the_lift_module_says_so(models, photos, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "iterview.pipeline.lift", None)
    with pytest.raises(ValueError, match="not available"):
        handlers.lift_scene(models, photos["good"], None, LiftOptions(), tmp_path, lambda event: None)


def test_jobs_run_one_at_a_time_in_order():
    jobs = JobQueue(min_interval=0)
    running, most, order = [0], [0], []
    lock = threading.Lock()

    def work(name, report):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        order.append(name)
        time.sleep(0.3)
        with lock:
            running[0] -= 1
        return name

    results = {}

    def client(name):
        events = list(jobs.run(partial(work, name), poll=0.05))
        results[name] = events

    first = threading.Thread(target=client, args=("a",))
    first.start()
    time.sleep(0.1)
    second = threading.Thread(target=client, args=("b",))
    second.start()
    first.join()
    second.join()
    assert most[0] == 1 and order == ["a", "b"] and jobs.waiting() == 0
    assert results["a"] == [Done("a")] and results["b"][-1] == Done("b")
    assert any(isinstance(e, Progress) and e.message == "queued: 1 job(s) ahead" for e in results["b"])


def test_a_running_job_can_be_cancelled_and_errors_become_messages():
    jobs = JobQueue(min_interval=0)
    assert not jobs.cancel()

    def endless(report):
        while True:
            report(Progress(0.5, "working"))
            time.sleep(0.01)

    events = jobs.run(endless)
    assert isinstance(next(events), Progress)
    assert jobs.cancel()
    assert list(events)[-1] == Failed("cancelled")

    def broken(report):
        raise RuntimeError("out of memory")

    assert list(jobs.run(broken)) == [Failed("failed: RuntimeError: out of memory")]
    assert list(jobs.run(lambda report: handlers.check_photo(None))) == [Failed("no photo uploaded")]


def test_leaving_a_job_early_stops_it():
    jobs = JobQueue(min_interval=0)
    steps = []

    def endless(report):
        while True:
            report(Progress(0.5, "working"))
            steps.append(1)
            time.sleep(0.01)

    events = jobs.run(endless)
    next(events)
    events.close()
    count = len(steps)
    time.sleep(0.1)
    assert len(steps) <= count + 1 and jobs.waiting() == 0
    assert list(jobs.run(lambda report: 7)) == [Done(7)]


def test_a_job_nobody_reads_any_more_still_frees_the_queue():
    jobs = JobQueue(min_interval=0)

    def short(report):
        report(Progress(0.5, "working"))
        time.sleep(0.2)
        return 1

    abandoned = jobs.run(short)
    assert next(abandoned) == Progress(0.5, "working")
    assert list(jobs.run(lambda report: 2, poll=0.05))[-1] == Done(2)
    assert jobs.waiting() == 0


def test_app_command_rejects_bad_models_without_a_traceback(tmp_path):
    result = CliRunner().invoke(app, ["app", "--uncond", str(tmp_path / "missing"), "--output-dir", str(tmp_path)])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "missing" in result.output or "app` extra" in result.output
    gu = save_model(*tiny(4, 1), tmp_path / "gu")
    result = CliRunner().invoke(app, ["app", "--uncond", str(gu), "--cond", str(gu), "--port", "0"])
    assert result.exit_code != 0 and "--port" in result.output


def test_the_app_refuses_an_output_folder_of_other_models(generated, tmp_path, monkeypatch):
    served = []
    ui = types.SimpleNamespace(build_app=lambda *args: "page", launch=lambda page, host, port, out: served.append(out))
    monkeypatch.setitem(sys.modules, "iterview.webapp.ui", ui)
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: object() if name == "gradio" else find_spec(name, *a)
    )
    g_u, g_c, other = (save_model(*tiny(c, seed), tmp_path / f"m{seed}") for c, seed in ((4, 1), (10, 2), (4, 3)))
    out = tmp_path / "out"

    def serve(uncond, output_dir=out):
        args = ["app", "--uncond", str(uncond), "--cond", str(g_c), "--output-dir", str(output_dir), "--cpu"]
        return CliRunner().invoke(app, args)

    assert serve(g_u).exit_code == 0 and serve(g_u).exit_code == 0 and served == [out, out]
    record = json.loads((out / "app.json").read_text())["made_by"]
    assert record["uncond"] == network_identity(tiny(4, 1)[0]) and record["cond"] == network_identity(tiny(10, 2)[0])
    refused = serve(other)
    assert refused.exit_code == 2 and "Traceback" not in refused.output and len(served) == 2
    assert "app output folder made by other models or settings" in refused.output
    assert "differs in uncond" in refused.output and "--output-dir" in refused.output
    # Generated scenes without a record: what made them is unknown.
    unknown = serve(g_u, generated[0])
    assert unknown.exit_code == 2 and "no app.json" in unknown.output and len(served) == 2
