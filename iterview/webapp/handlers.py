"""What the app's buttons do, as plain functions of paths, numbers and a progress `report` (no web library here).

Generated scenes use the official run layout (`iterview sample`) under `<output>/generate/<run name>/`, plus
`videos/` (as `iterview render`) and `exports/<scene>/` (as `iterview export`); lifted photos go to
`<output>/lift/<photo>_seed<s>/` (`-2`, `-3`, ... after it when that folder exists).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from iterview.data.images import load_image
from iterview.diffusion.presets import resolve_samplers
from iterview.diffusion.samplers import Callback
from iterview.geometry.cameras import orbit_camera
from iterview.geometry.inference import InferenceGeometry
from iterview.io import atomic_path, to_uint8
from iterview.pipeline.multiview import OFFICIAL_GUIDANCE, Guidance, MultiViewPipeline
from iterview.pipeline.runinfo import claim_record
from iterview.pipeline.sampling import SUBFOLDERS, is_finished, make_instance, run_name, save_instance, scene_path
from iterview.pipeline.scene import Scene
from iterview.pipeline.viewsets import make_viewset
from iterview.render.export import export_scene
from iterview.render.video import TRAJECTORIES, render_fusion, render_scene_video
from iterview.validate import network_identity
from iterview.webapp.jobs import Progress, Report

VIEWSETS = ("3x9", "orbit:8", "orbit:16", "swing")
MAX_UPLOAD_BYTES = 20 * 2**20
MAX_UPLOAD_PIXELS = 4096 * 4096
MAX_DEPTH_BYTES = 200 * 2**20
# Share of a generate job's progress bar spent sampling; the rest renders the video and exports.
SAMPLING_SHARE = 0.8
APP_RECORD = "app.json"  # which models and geometry made an output folder's generated scenes


@dataclass
class AppModels:
    """g_u: the first-view model; g_c: the conditional model; both in eval mode on `device`. geometry, clip and
    guidance: what the models were trained for (a shipped set's inference settings, see `from_pipeline`);
    geometry defaults to the official one carried to the models' image size, as `iterview sample`."""

    g_u: nn.Module
    g_c: nn.Module
    device: torch.device
    geometry: InferenceGeometry | None = None
    clip: bool = False
    guidance: float = OFFICIAL_GUIDANCE.strength

    def __post_init__(self) -> None:
        if self.geometry is None:
            self.geometry = InferenceGeometry.for_size(self.g_u.image_size)

    @classmethod
    def from_pipeline(cls, pipeline: MultiViewPipeline, device: torch.device) -> AppModels:
        """The models and inference settings of `iterview.pipeline.loading.load_pipeline`'s result."""
        clip = pipeline.sampler_uncond.clip or pipeline.sampler_cond.clip
        return cls(pipeline.g_u, pipeline.g_c, device, pipeline.geometry, clip, pipeline.guidance.strength)

    def record(self) -> dict:
        """What the generated scenes depend on besides each click's options: hashes of both models' weights, the
        geometry and x0 clipping (in JSON form)."""
        record = {
            "uncond": network_identity(self.g_u),
            "cond": network_identity(self.g_c),
            "geometry": asdict(self.geometry),
            "clip": self.clip,
        }
        return json.loads(json.dumps(record))

    @property
    def num_classes(self) -> int | None:
        """G_u's number of classes; None for an unconditional model."""
        return getattr(self.g_u, "num_classes", None)


@dataclass(frozen=True)
class RenderSettings:
    """Fusion renders of the app: frames of the swing video made after sampling, and supersampling (None: the
    scene geometry's fusion_ssaa, officially 5)."""

    frames: int = 60
    ssaa: int | None = None

    def __post_init__(self) -> None:
        if self.frames < 2 or (self.ssaa is not None and self.ssaa < 1):
            raise ValueError(f"video frames must be >= 2 and SSAA >= 1, got {self.frames} and {self.ssaa}")


DEFAULT_RENDER = RenderSettings()


@dataclass(frozen=True)
class GenerateOptions:
    """class_label None: seed mod classes; steps: the fast G_c sampler's steps per view (default the preset's)."""

    seed: int = 0
    class_label: int | None = None
    viewset: str = "3x9"
    sampler: str = "official"
    steps: int | None = None
    guidance: float = 3.0

    def __post_init__(self) -> None:
        check_common(self.seed, self.guidance)


def check_common(seed: int, guidance: float) -> None:
    """Seeds name output files and guidance scales ε: both must be sane numbers."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if not (math.isfinite(guidance) and guidance >= 0):
        raise ValueError(f"guidance must be a number >= 0, got {guidance}")


@dataclass
class SceneOutputs:
    """A finished scene and the files made from it (None where a file was not made)."""

    scene: Path
    grid_rgb: Path | None
    grid_depth: Path | None
    video: Path | None
    files: list[Path]


def claim_output_dir(output_dir: Path, models: AppModels) -> None:
    """Let an app of `models` write into output_dir (made if missing), recording them in app.json: a folder whose
    generated scenes other models or settings made is refused, since a finished scene is reused, not redone."""
    scenes = (output_dir / "generate").glob("*/scenes/*.json")
    claim_record(output_dir / APP_RECORD, models.record(), scenes, "app output folder", "--output-dir")


def check_viewset(spec: str) -> str:
    """A built-in viewset name with at least two views (camera files are not read from the page)."""
    if Path(spec).suffix:
        raise ValueError(f"viewset {spec!r}: camera files are not accepted here; expected one of {', '.join(VIEWSETS)}")
    if len(make_viewset(spec)) < 2:
        raise ValueError(f"viewset {spec!r} has one view: a scene needs at least two")
    return spec


def generate_scene(
    models: AppModels,
    options: GenerateOptions,
    output_dir: Path,
    report: Report,
    render: RenderSettings = DEFAULT_RENDER,
) -> SceneOutputs:
    """Sample one scene (views reported one by one as previews), then render its swing video and export it.
    A scene already finished with the same settings is reused."""
    check_viewset(options.viewset)
    steps = options.steps if options.sampler == "fast" else None
    choice_u, choice_c = (
        replace(choice, clip=models.clip) for choice in resolve_samplers(options.sampler, steps_cond=steps)
    )
    classes = "mod" if options.class_label is None else str(options.class_label)
    instance = make_instance(options.seed, 0, classes, models.num_classes, options.viewset, models.device)
    root = Path(output_dir) / "generate" / run_name(options.viewset, choice_u, choice_c, options.guidance)
    stem = scene_path(root, instance.suffix)
    if not is_finished(root, instance.suffix):
        for sub in SUBFOLDERS:
            (root / sub).mkdir(parents=True, exist_ok=True)
        pipeline = MultiViewPipeline(
            models.g_u, models.g_c, None, choice_u, choice_c, Guidance(strength=options.guidance), models.geometry
        )
        step_counts = (choice_u.steps, choice_c.steps)
        labels = None if instance.label is None else torch.tensor([instance.label], device=models.device)
        callback = _sampling_reporter(report, step_counts)
        result = pipeline(instance.viewset.modelviews[None], [instance.generator], labels, callback=callback)
        save_instance(root, result, 0, instance, models.geometry)
    return finish_scene(stem, render, report, SAMPLING_SHARE, models.device)


def _sampling_reporter(report: Report, step_counts: tuple[int, int]) -> Callback:
    def callback(event: dict) -> None:
        view, views = event["view"], event["views"]
        if "sample" in event:
            rgb = to_uint8(event["sample"][0, :3] * 0.5 + 0.5)
            report(Progress(SAMPLING_SHARE * ((view + 1) / views), f"view {view + 1}/{views} done", rgb))
        else:
            steps = step_counts[view > 0]
            done = view + min(event["i"] + 1, steps) / steps
            report(Progress(SAMPLING_SHARE * (done / views), f"view {view + 1}/{views}: step {event['i'] + 1}/{steps}"))

    return callback


def finish_scene(
    stem: Path, render: RenderSettings, report: Report, start: float = 0.0, device: torch.device | str = "cpu"
) -> SceneOutputs:
    """Render the swing video of a saved scene on `device` and export it (PLY, GLB, NeRF folder), unless already
    done; progress runs from `start` to 1."""
    root, name = stem.parent.parent, stem.name
    scene = load_scene(stem, device, render.ssaa)
    video = root / "videos" / f"{name}.mp4"
    if not (root / "videos" / f"{name}_depth.mp4").is_file():
        share = (1 - start) * 0.9

        def on_frames(done: int, total: int) -> None:
            report(Progress(start + share * done / total, f"video: frame {done}/{total}"))

        report(Progress(start, "rendering the video"))
        render_scene_video(scene, root, name, "swing", render.frames, callback=on_frames)
    exports = root / "exports" / name
    if not (exports / "nerf" / "transforms.json").is_file():
        report(Progress(start + (1 - start) * 0.9, "exporting PLY, GLB and the NeRF folder"))
        export_scene(scene, exports)
    suffix = name.removeprefix("scene_")
    grid_rgb, grid_depth = root / "grids" / f"rgb_{suffix}.png", root / "grids" / f"depth_{suffix}.png"
    return SceneOutputs(
        stem,
        grid_rgb if grid_rgb.is_file() else None,
        grid_depth if grid_depth.is_file() else None,
        video,
        scene_files(stem),
    )


def load_scene(stem: Path, device: torch.device | str = "cpu", ssaa: int | None = None) -> Scene:
    """A saved scene with its views and cameras on `device` (where it is fused); ssaa: fuse it at this
    supersampling instead of its geometry's fusion_ssaa."""
    scene = Scene.load(stem)
    scene.rgbd, scene.modelviews = scene.rgbd.to(device), scene.modelviews.to(device)
    if ssaa is not None:
        scene.geometry = replace(scene.geometry, fusion_ssaa=ssaa)
    return scene


def scene_files(stem: Path) -> list[Path]:
    """The downloads of a scene in the run layout: its .npz and .json, videos and exports (files, sorted)."""
    root, name = stem.parent.parent, stem.name
    found = [stem.with_suffix(".npz"), stem.with_suffix(".json"), *sorted((root / "videos").glob(f"{name}*.mp4"))]
    found += sorted(p for p in (root / "exports" / name).rglob("*") if p.is_file())
    return [p for p in found if p.is_file()]


def make_bundle(files: Sequence[Path], base: Path, target: Path) -> Path:
    """Atomically zip `files` under their paths relative to `base` (deflated, but videos and PNGs stored)."""
    with atomic_path(target) as tmp, zipfile.ZipFile(tmp, "w") as archive:
        for file in files:
            stored = file.suffix.lower() in (".mp4", ".png", ".npz", ".glb")
            archive.write(file, file.relative_to(base), zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED)
    return target


def download_bundle(outputs: SceneOutputs | None) -> Path:
    """One zip of a scene's files (the scene, mp4s, PLY / GLB, nerf/ with transforms.json), kept under their
    common folder as `downloads/<scene>.zip`."""
    if outputs is None or not outputs.files:
        raise ValueError("nothing to download yet: generate or lift a scene first")
    base = Path(os.path.commonpath([p.parent for p in outputs.files]))
    return make_bundle(outputs.files, base, base / "downloads" / f"{outputs.scene.name}.zip")


def explore_frame(stem: Path, yaw: float, pitch: float, ssaa: int | None = None, device: str = "cpu") -> np.ndarray:
    """The fusion render of a saved scene for the orbit camera at (yaw, pitch) radians -> (H, W, 3) uint8;
    ssaa: None for the scene's own."""
    if not (math.isfinite(yaw) and -math.pi <= yaw <= math.pi):
        raise ValueError(f"yaw must be in [-π, π] radians, got {yaw}")
    if not (math.isfinite(pitch) and abs(pitch) < math.pi / 2):
        raise ValueError(f"pitch must be in (-π/2, π/2) radians, got {pitch}")
    if ssaa is not None and ssaa < 1:
        raise ValueError(f"SSAA must be >= 1, got {ssaa}")
    scene = load_scene(stem, device, ssaa)
    camera = orbit_camera(torch.tensor([float(yaw)]), torch.tensor([float(pitch)]))
    with uncovered_cameras_explained():
        return to_uint8(render_fusion(scene, camera).color[0])


@contextmanager
def uncovered_cameras_explained() -> Iterator[None]:
    """The fusion renderer refuses a camera that sees none of the views (e.g. behind a 3x9 scene): say why."""
    try:
        yield
    except ValueError as error:
        raise ValueError(f"{error}: this scene does not reach that far round; an orbit scene covers 360°") from None


def explore_video(
    stem: Path, trajectory: str, frames: int, report: Report, ssaa: int | None = None, device: str = "cpu"
) -> Path:
    """Render a saved scene's fusion video along `swing` or `orbit` into `videos/<scene>_<trajectory>.mp4`;
    ssaa: None for the scene's own."""
    if trajectory not in TRAJECTORIES[:2]:
        raise ValueError(f"trajectory must be swing or orbit, got {trajectory!r}")
    if frames < 2 or (ssaa is not None and ssaa < 1):
        raise ValueError(f"a video needs at least 2 frames and SSAA >= 1, got {frames} and {ssaa}")
    stem = Path(stem)
    scene = load_scene(stem, device, ssaa)

    def on_frames(done: int, total: int) -> None:
        report(Progress(done / total, f"{trajectory}: frame {done}/{total}"))

    base = stem.parent.parent if stem.parent.name == "scenes" else stem.parent
    name = f"{stem.name}_{trajectory}"
    with uncovered_cameras_explained():
        return render_scene_video(scene, base, name, trajectory, frames, callback=on_frames)[0]


def check_photo(
    path: str | Path | None, max_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_UPLOAD_PIXELS
) -> Image.Image:
    """An uploaded photo as an upright RGB(A) image, or a ValueError that says what is wrong with it."""
    if path is None:
        raise ValueError("no photo uploaded")
    path = Path(path)
    check_size(path, max_bytes, "photo")
    try:
        with Image.open(path) as header:
            width, height = header.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise ValueError(f"{path.name}: not an image (expected a JPEG, PNG, WebP, BMP, TIFF or GIF photo)") from None
    if width * height > max_pixels:
        raise ValueError(f"{path.name}: too large: {width}x{height} pixels (limit {max_pixels / 1e6:.1f} megapixels)")
    return load_image(path, min_size=8)


def check_size(path: Path, max_bytes: int, what: str) -> None:
    """A ValueError if `path` is missing, empty or over max_bytes."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path.name}")
    size = path.stat().st_size
    if size == 0:
        raise ValueError(f"{path.name}: the {what} file is empty")
    if size > max_bytes:
        raise ValueError(f"{path.name}: too large: {size / 2**20:.1f} MB (limit {max_bytes / 2**20:.0f} MB)")


@dataclass(frozen=True)
class LiftOptions:
    """What the Lift tab passes to `lift_photo` besides the photo, its depth and the models."""

    viewset: str = "orbit:8"
    seed: int = 0
    class_label: int | None = None
    sampler: str = "official"
    guidance: float = 3.0
    pad: bool = False

    def __post_init__(self) -> None:
        check_common(self.seed, self.guidance)


def lift_scene(
    models: AppModels,
    photo: str | Path | None,
    depth: str | Path | None,
    options: LiftOptions,
    output_dir: Path,
    report: Report,
) -> SceneOutputs:
    """Lift an uploaded photo (and optional depth file) to a scene with `iterview.pipeline.lift.lift_photo`,
    then collect the grids, the video and the exports it wrote."""
    image = check_photo(photo)
    if depth is not None:
        check_size(Path(depth), MAX_DEPTH_BYTES, "depth")
    check_viewset(options.viewset)
    try:
        from iterview.pipeline.lift import lift_photo
    except ImportError as error:
        raise ValueError(f"lifting photos is not available in this installation ({error})") from None
    photo = Path(photo)
    report(Progress(0.0, f"lifting {photo.name} ({image.width}x{image.height})"))
    folder = unused_folder(Path(output_dir) / "lift", f"{photo.stem}_seed{options.seed:05d}")

    def callback(event: object) -> None:
        if isinstance(event, dict) and "view" in event and "views" in event:
            report(Progress((event["view"] + 1) / (event["views"] + 1), f"view {event['view'] + 1}/{event['views']}"))
        else:
            report(Progress(0.5, "lifting"))

    result = lift_photo(
        photo,
        folder,
        models.g_c,
        uncond=models.g_u,
        depth=None if depth is None else Path(depth),
        class_label=options.class_label,
        viewset=options.viewset,
        pad=options.pad,
        seed=options.seed,
        sampler=options.sampler,
        guidance=options.guidance,
        callback=callback,
    )
    return lifted_outputs(Path(result))


def unused_folder(parent: Path, name: str) -> Path:
    """parent/name, else parent/name-2, name-3, ...: the first that does not exist, so that a lift never lands
    on an earlier one (another upload may share the photo's name)."""
    candidates = (parent / (name if number == 1 else f"{name}-{number}") for number in itertools.count(1))
    return next(path for path in candidates if not path.exists())


def lifted_outputs(folder: Path) -> SceneOutputs:
    """The scene, grids and video found in a lift result folder."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix != ".zip")
    scenes = [p for p in files if p.suffix == ".npz" and p.with_suffix(".json").is_file()]
    if not scenes:
        raise FileNotFoundError(f"the lift wrote no scene (.npz + .json) into {folder}")
    grids = [p for p in files if p.suffix == ".png" and "grid" in p.parent.name + p.name]
    videos = [p for p in files if p.suffix == ".mp4" and not p.stem.endswith("_depth")]
    depth_grids = [p for p in grids if "depth" in p.name]
    colour_grids = [p for p in grids if "depth" not in p.name and "cond" not in p.name]
    return SceneOutputs(
        scenes[0].with_suffix(""),
        colour_grids[0] if colour_grids else None,
        depth_grids[0] if depth_grids else None,
        videos[0] if videos else None,
        files,
    )
