"""Lift the user's own photo into a scene: photo -> depth -> view 0 -> novel views by G_c -> scene, grids, a
fusion video and exports (the `iterview lift` job).

View 0 is the photo itself, brought to the model's input exactly as a training image: its depth (from a
`transformers` model or a user file) becomes official-scale disparity with the same function as `iterview
prepare`, then the official z-buffer of (0.5, 100) and the dataset's resize and crop. Every further camera is
sampled by `MultiViewPipeline` from that given view, so a lifted synth image with its true depth gives exactly
the views that the pipeline gives from the same first view. `pad` keeps the whole photo instead of cropping it:
the padding is unknown, and G_c (or G_u, when given) inpaints it in view 0's own camera first.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from iterview.data.datasets import disparity_to_zbuffer, model_input, rgbd_tensor
from iterview.data.images import ImageReadError, load_image
from iterview.data.prepare import (
    DEFAULT_DEPTH_MODEL,
    DEPTH_KINDS,
    DepthEstimator,
    match_image_size,
    pixel_values_for,
    read_user_depth,
    to_official_disparity,
)
from iterview.diffusion.guidance import classifier_free, replacement_guidance
from iterview.diffusion.presets import resolve_samplers
from iterview.errors import UserError, read_json
from iterview.geometry.aggregate import Conditions
from iterview.geometry.inference import InferenceGeometry
from iterview.models.adm import ADMUNet
from iterview.models.shipped import inference_settings, resolve_model
from iterview.pipeline.loading import inference_geometry, load_network
from iterview.pipeline.multiview import Guidance, MultiViewPipeline
from iterview.pipeline.runinfo import differences
from iterview.pipeline.sampling import Instance, instance_suffix, save_instance, scene_path
from iterview.pipeline.viewsets import Viewset, make_viewset
from iterview.render.export import export_scene
from iterview.render.video import render_scene_video
from iterview.validate import file_digest, network_identity

BACKGROUND = (255, 255, 255)  # what transparent pixels are composited over
VIDEO_FRAMES = 60
MIN_PHOTO_SIZE = 8


@dataclass(frozen=True)
class LiftSettings:
    """What to lift with: the depth source (a transformers model, or user files of `depth_kind`), the class
    (None: the null class, or no class for an unconditional model), cameras, crop or pad, seed and sampler;
    guidance None: the shipped set's strength, else the official 3."""

    depth_model: str | None = None
    depth_kind: str | None = None
    class_label: int | None = None
    viewset: str = "orbit:8"
    pad: bool = False
    seed: int = 0
    sampler: str = "official"
    guidance: float | None = None

    @classmethod
    def from_options(cls, options: Mapping[str, Any], depth_files: bool) -> LiftSettings:
        """The settings named in a lift command's or call's options (other keys are ignored): user depth files
        win over a depth model, and with neither the official depth model (DPT-BEiT-L-512) estimates depth."""
        values = {name.name: options[name.name] for name in fields(cls)}
        values["depth_model"] = None if depth_files else values["depth_model"] or DEFAULT_DEPTH_MODEL
        return cls(**values)


@dataclass
class LiftModels:
    """G_c (10 input channels), optional G_u (4) at the same resolution, where each came from, and the
    inference settings of a shipped set (`iterview.models.shipped.inference_settings`; {} for anything else)."""

    g_c: ADMUNet
    g_u: ADMUNet | None = None
    cond: str = ""
    uncond: str | None = None
    settings: dict = field(default_factory=dict)

    @property
    def image_size(self) -> int:
        """The side of the square images both models work at."""
        return self.g_c.image_size


@dataclass
class FirstView:
    """A photo ready to lift: rgbd (4, S, S) in [-1, 1] (depth = z-buffer of (0.5, 100)), known (1, S, S) bool
    (False on --pad padding), where it came from and the photo file's SHA-256."""

    photo: Path
    rgbd: torch.Tensor
    known: torch.Tensor
    depth_source: dict
    photo_sha256: str


def load_lift_models(
    cond: str | Path,
    uncond: str | Path | None = None,
    config_cond: str | Path | None = None,
    config_uncond: str | Path | None = None,
    device: torch.device | str = "cpu",
) -> LiftModels:
    """Load G_c (and G_u) with `load_network` (a shipped name such as `synth`, a training run, a checkpoint, a
    model folder or an official `.pt` with its config) and check that they fit: G_c takes 10 channels, G_u 4, at
    one size. A shipped G_c brings its inference settings."""
    g_c = _load_checked(cond, "cond", config_cond, 10, "G_c (--cond)", device)
    g_u = None if uncond is None else _load_checked(uncond, "uncond", config_uncond, 4, "G_u (--uncond)", device)
    if g_u is not None and g_u.image_size != g_c.image_size:
        raise ValueError(f"{uncond}: G_u is {g_u.image_size} px but G_c is {g_c.image_size} px")
    return LiftModels(g_c, g_u, str(cond), None if uncond is None else str(uncond), inference_settings(cond))


def _load_checked(
    spec: str | Path, role: str, config: str | Path | None, channels: int, what: str, device: torch.device | str
) -> ADMUNet:
    path = resolve_model(spec, role)
    if not path.exists():
        raise FileNotFoundError(f"{path}: {what} model not found")
    try:
        model = load_network(spec, role, config, device)
    except ValueError as error:
        message = str(error)
        raise ValueError(message if str(path) in message else f"{path}: {message}") from None
    if model.in_channels != channels or model.out_channels != 4:
        raise ValueError(
            f"{path}: {what} must take {channels} input channels and predict 4, this model takes "
            f"{model.in_channels} and predicts {model.out_channels}"
        )
    return model


def class_labels(model: ADMUNet, label: int | None, what: str = "G_c") -> torch.Tensor | None:
    """The (1,) class tensor for `label` (None: the null class −1), or None for a model without classes."""
    if model.num_classes is None:
        if label is not None:
            raise ValueError(f"--class {label}: this {what} has no classes")
        return None
    if label is None:
        if not model.has_null_class:
            raise ValueError(f"this {what} has {model.num_classes} classes and no null class: choose one with --class")
        label = -1
    elif not 0 <= label < model.num_classes:
        raise ValueError(f"--class {label} is outside this {what}'s classes 0..{model.num_classes - 1}")
    return torch.tensor([label])


def read_photo(path: str | Path) -> Image.Image:
    """The photo as an upright RGB image, any alpha composited over BACKGROUND (see `load_image`)."""
    image = load_image(path, MIN_PHOTO_SIZE)
    if image.mode == "RGBA":
        image = Image.alpha_composite(Image.new("RGBA", image.size, (*BACKGROUND, 255)), image)
    return image.convert("RGB")


def check_user_depth(values: torch.Tensor, kind: str, path: Path) -> None:
    """Reject what no depth convention can mean: NaN / inf, non-positive depth, negative or all-zero disparity."""
    if not torch.isfinite(values).all():
        raise ValueError(f"{path}: depth map holds NaN or infinite values")
    if kind == "depth" and not (values > 0).all():
        raise ValueError(f"{path}: depth must be positive everywhere, found minimum {float(values.min()):g}")
    if kind != "depth" and (values.min() < 0 or not values.max() > 0):
        raise ValueError(
            f"{path}: {kind} disparity must be >= 0 with a positive maximum, found range "
            f"[{float(values.min()):g}, {float(values.max()):g}]"
        )


def user_disparity(path: str | Path, size: tuple[int, int], kind: str) -> torch.Tensor:
    """A user depth file (npz / npy / 16-bit PNG) of `kind` -> official-scale disparity at the photo's (H, W);
    a map of another resolution but the same aspect is resized, as `iterview prepare --depth-from` does."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: depth file not found")
    try:
        values = read_user_depth(path)
        check_user_depth(values, kind, path)
        return to_official_disparity(match_image_size(values, size), kind)
    except (OSError, ValueError) as error:
        message = str(error)
        raise ValueError(message if message.startswith(str(path)) else f"{path}: {message}") from None


def pad_input(image: Image.Image, disparity: np.ndarray, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole image fitted into a size² square (longer side = size, centred; LANCZOS colour, NEAREST depth as
    the dataset) -> rgbd (4, size, size) in [-1, 1] and known (1, size, size), False on the padding."""
    width, height = image.size
    scale = size / max(width, height)
    fitted = (max(1, round(width * scale)), max(1, round(height * scale)))
    zbuffer = Image.fromarray(disparity_to_zbuffer(disparity))
    rgbd = rgbd_tensor(image.resize(fitted, Image.Resampling.LANCZOS), zbuffer.resize(fitted, Image.Resampling.NEAREST))
    left, top = (size - fitted[0]) // 2, (size - fitted[1]) // 2
    canvas = torch.full((4, size, size), -1.0)
    known = torch.zeros(1, size, size, dtype=torch.bool)
    canvas[:, top : top + fitted[1], left : left + fitted[0]] = rgbd
    known[:, top : top + fitted[1], left : left + fitted[0]] = True
    return canvas, known


class PhotoLifter:
    """Lifts photos with loaded models: `first_view` reads and checks a photo and its depth (no sampling),
    `lift` samples and writes its scene. The depth model is loaded once, on construction; `progress` shows bars
    for the views and the video frames."""

    def __init__(
        self, models: LiftModels, settings: LiftSettings, device: torch.device | str = "cpu", progress: bool = False
    ) -> None:
        if settings.depth_kind is not None and settings.depth_kind not in DEPTH_KINDS:
            raise ValueError(f"depth kind must be one of {', '.join(DEPTH_KINDS)}, got {settings.depth_kind!r}")
        self.models, self.settings, self.device = models, settings, torch.device(device)
        self.progress = progress
        self.classes = class_labels(models.g_c, settings.class_label)
        if models.g_u is not None:
            class_labels(models.g_u, settings.class_label, "G_u")
        self.viewset: Viewset = make_viewset(settings.viewset)
        # A shipped set brings the geometry, x0 clipping and guidance strength it was trained for.
        self.geometry: InferenceGeometry = inference_geometry(models.cond, models.image_size)
        clip = bool(models.settings.get("clip_denoised", False))
        choices = resolve_samplers(settings.sampler)
        self.sampler_uncond, self.sampler_cond = (replace(choice, clip=clip) for choice in choices)
        strength = settings.guidance
        self.strength = float(models.settings.get("guidance", Guidance().strength) if strength is None else strength)
        self.estimator = None if settings.depth_model is None else _depth_estimator(settings.depth_model, device)
        self.model_identities = {
            "cond": network_identity(models.g_c),
            "uncond": None if models.g_u is None else network_identity(models.g_u),
        }

    @property
    def label(self) -> int | None:
        """The class the scenes are sampled for: None for the null class or an unconditional G_c."""
        return None if self.classes is None or self.classes[0] < 0 else int(self.classes[0])

    @property
    def suffix(self) -> str:
        """The file suffix of a lifted scene, as `iterview sample` names it."""
        return instance_suffix(self.settings.seed, self.label)

    def first_view(self, photo: str | Path, depth: str | Path | None = None) -> FirstView:
        """Read `photo` and its depth (`depth` file, else the depth model) -> view 0. Raises FileNotFoundError or
        ValueError, naming the file, for anything unusable."""
        photo = Path(photo)
        try:
            image = read_photo(photo)
        except ImageReadError as error:
            raise ValueError(f"{photo}: {error.reason}") from None
        size = (image.height, image.width)
        if depth is not None:
            kind = self.settings.depth_kind or "official"
            disparity = user_disparity(depth, size, kind)
            source = {"file": str(depth), "kind": kind, "sha256": file_digest(depth).hexdigest()}
        elif self.estimator is not None:
            kind = self.settings.depth_kind or self.estimator.kind
            prediction = self.estimator.predict(pixel_values_for(self.estimator.processor, image)[None], [size])[0]
            try:
                disparity = to_official_disparity(prediction, kind)
            except ValueError as error:
                raise ValueError(f"{photo}: depth model {self.settings.depth_model}: {error}") from None
            source = {"model": self.settings.depth_model, "kind": kind}
        else:
            raise ValueError(f"{photo}: no depth: give a depth file or a depth model")
        disparity = disparity.numpy()
        image_size = self.models.image_size
        if self.settings.pad:
            rgbd, known = pad_input(image, disparity, image_size)
        else:
            rgbd, known = model_input(image, disparity, image_size), torch.ones(1, image_size, image_size, dtype=bool)
        return FirstView(photo, rgbd, known, source, file_digest(photo).hexdigest())

    def pipeline(self) -> MultiViewPipeline:
        """The multi-view pipeline of these models and settings (no guidance for the null class)."""
        strength = self.strength if self.classes is not None and self.classes[0] >= 0 else 0.0
        return MultiViewPipeline(
            self.models.g_u,
            self.models.g_c,
            sampler_uncond=self.sampler_uncond,
            sampler_cond=self.sampler_cond,
            # CFG between the null class and itself is the null class at twice the cost.
            guidance=Guidance(strength=strength),
            geometry=self.geometry,
            progress=self.progress,
        )

    @torch.no_grad()
    def lift(
        self,
        view: FirstView,
        output_dir: str | Path,
        callback: Callable[[int, int], None] | None = None,
        overwrite: bool = False,
    ) -> Path:
        """Sample every further camera from `view`, write the run into output_dir and return it. A scene that
        this very lift already finished there is kept (only its video and exports are written again); one that
        another photo, depth, model or setting made under the same name is replaced only with `overwrite`."""
        root = Path(output_dir)
        if not overwrite and self.already_lifted(view, root):
            return self.write_outputs(root, self.suffix)
        pipeline = self.pipeline()
        generator = torch.Generator(self.device).manual_seed(self.settings.seed)
        classes = None if self.classes is None else self.classes.to(self.device)
        first = view.rgbd[None].to(self.device)
        known = view.known[None].to(self.device)
        if not known.all():
            first = fill_unknown(pipeline, first, known, [generator], classes)
        modelviews = self.viewset.modelviews[None].to(self.device)

        def finished(event: dict) -> None:  # the pipeline reports sampler steps and finished views
            if callback is not None and "sample" in event:
                callback(event["view"] + 1, event["views"])

        result = pipeline(modelviews, [generator], classes, first_view=first, callback=finished)
        instance = Instance(self.settings.seed, self.label, self.viewset, generator)
        save_instance(root, result, 0, instance, self.geometry, self.record(view))
        return self.write_outputs(root, instance.suffix)

    def already_lifted(self, view: FirstView, output_dir: str | Path) -> bool:
        """Whether output_dir holds this lift's finished scene (the same record: photo, depth, models, settings).
        A scene of another lift or run under the same name is a UserError naming what differs."""
        stem = scene_path(Path(output_dir), self.suffix)
        meta_path = stem.with_suffix(".json")
        if not meta_path.is_file():
            return False
        meta = read_json(meta_path, "scene file")
        expected = json.loads(json.dumps(self.record(view)))
        info = meta.get("info") if isinstance(meta, dict) else None
        if info == expected:
            return stem.with_suffix(".npz").is_file()
        found = info.get("lift") if isinstance(info, dict) else None
        why = "it was not made by iterview lift"
        if isinstance(found, dict):
            changed = ", ".join(differences(found, expected["lift"]))
            why = f"it was lifted from {found.get('photo')} and differs in {changed}"
        raise UserError("output folder holds another scene", meta_path, why, "pass another --output, or --overwrite")

    def record(self, view: FirstView) -> dict:
        """What the scene records about how it was made."""
        s = self.settings
        return {
            "lift": {
                "photo": str(view.photo),
                "photo_sha256": view.photo_sha256,
                "cond": self.models.cond,
                "uncond": self.models.uncond,
                "models": self.model_identities,
                "depth": view.depth_source,
                "input_depth": {"near": 0.5, "far": 100.0},
                "fit": "pad" if s.pad else "crop",
                "padding_filled_by": None if view.known.all() else ("G_u" if self.models.g_u is not None else "G_c"),
                "viewset": s.viewset,
                "class": s.class_label,
                "sampler": {"cond": asdict(self.sampler_cond), "uncond": asdict(self.sampler_uncond)},
                "guidance": self.strength,
                "geometry": self.geometry.to_dict(),
            }
        }

    def write_outputs(self, root: Path, suffix: str) -> Path:
        """The fusion video along the viewset's path and the exports (PLY, GLB, NeRF / 3DGS folder)."""
        from iterview.pipeline.scene import Scene

        scene = Scene.load(scene_path(root, suffix)).to(self.device)
        name = f"scene_{suffix}"
        trajectory = "orbit" if self.viewset.name == "orbit" else "swing"
        render_scene_video(scene, root, name, trajectory, VIDEO_FRAMES, progress=self.progress)
        export_scene(scene, root / "exports" / name)
        return root


def fill_unknown(
    pipeline: MultiViewPipeline,
    view: torch.Tensor,
    known: torch.Tensor,
    generators: list[torch.Generator],
    classes: torch.Tensor | None,
) -> torch.Tensor:
    """Inpaint the unknown pixels of view 0 in its own camera. view: (B, 4, S, S) in [-1, 1]; known: (B, 1, S, S)
    bool. G_c reads the known pixels as a condition (as a warped view, with the official guidance); G_u, when
    the pipeline has one, is guided by replacing them in x0. Known pixels are returned unchanged."""
    mask = known.to(view.dtype)
    if pipeline.g_u is None:
        x = view * 0.5 + 0.5
        cond = Conditions(x[:, :3] * mask, x[:, 3:] * mask, mask, mask, x[:, 3:] * mask)
        filled = pipeline.next_view(cond, generators, classes)
    else:
        network = classifier_free(pipeline.g_u, classes, pipeline.guidance.strength)
        x0_fn = replacement_guidance(view, mask, mask, None, w_rgb=1.0, w_depth=1.0)
        x_T = pipeline.initial_noise(generators)
        filled = pipeline.sampler_uncond.sample(network, x_T, pipeline.schedule, generators, x0_fn)
    return torch.where(known, view, filled)


def _depth_estimator(name: str, device: torch.device | str) -> DepthEstimator:
    """DepthEstimator with its loading error as one line that names the model and the likely cause."""
    try:
        return DepthEstimator(name, device)
    except FileNotFoundError:
        raise
    except (OSError, ValueError):
        if Path(name).expanduser().is_dir():
            cause = "this folder holds no transformers depth model and image processor (save_pretrained output)"
        else:
            cause = "not in the local Hugging Face cache and not downloadable (offline?): download it once, or pass a "
            cause += "local folder"
        raise ValueError(f"depth model {name}: {cause}") from None


def lift_photo(
    photo: str | Path,
    output_dir: str | Path,
    cond: str | Path,
    *,
    uncond: str | Path | None = None,
    depth: str | Path | None = None,
    depth_kind: str | None = None,
    depth_model: str | None = None,
    class_label: int | None = None,
    viewset: str = "orbit:8",
    pad: bool = False,
    seed: int = 0,
    sampler: str = "official",
    guidance: float | None = None,
    callback: Callable[[int, int], None] | None = None,
    overwrite: bool = False,
) -> Path:
    """Lift one photo into a scene in output_dir and return that folder.

    cond / uncond: a shipped name (`synth`), a training run, a model folder (or a checkpoint with config.json
    beside it). depth: a depth file (.npz, .npy,
    16-bit .png) of `depth_kind` (official, disparity or depth; default official); otherwise depth_model (a
    transformers hub id or folder; default the official MiDaS DPT-BEiT-L-512). class_label: None for the null
    class. viewset: orbit:N, swing, swing:N, 3x9 or a camera file. pad: keep the whole photo and inpaint the
    padding instead of centre-cropping. callback(done_views, total_views) after each view. Bad input raises
    FileNotFoundError or ValueError naming the file, before any sampling; so does a scene of another photo,
    depth, model or setting that output_dir holds under the same name, unless `overwrite` (the same lift,
    finished, is kept as it is).

    The folder holds, as `iterview sample` (suffix `seed<s>` or `class<c>_seed<s>`): scenes/scene_<sfx>.npz +
    .json, grids/rgb_<sfx>.png and depth_<sfx>.png, conds/, videos/scene_<sfx>.mp4 and _depth.mp4, and
    exports/scene_<sfx>/ (pointcloud.ply, mesh.ply, mesh.glb, nerf/transforms.json).
    """
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    models = load_lift_models(cond, uncond, device=device)
    options = {
        "depth_model": depth_model,
        "depth_kind": depth_kind,
        "class_label": class_label,
        "viewset": viewset,
        "pad": pad,
        "seed": seed,
        "sampler": sampler,
        "guidance": guidance,
    }
    settings = LiftSettings.from_options(options, depth_files=depth is not None)
    lifter = PhotoLifter(models, settings, device)
    return lifter.lift(lifter.first_view(photo, depth), output_dir, callback, overwrite)
