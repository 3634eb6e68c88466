"""Images -> monocular depth -> an RGBD training set in the official layout (the `iterview prepare` job).

Depth is stored as official-scale disparity D (fp16, key arr_0, at the image's resolution): the official loader
reads z = 6250 / D, moves the nearest point to z = 0.5 when it is nearer, floors 1/z at 1e-3 and takes the
z-buffer of (0.5, 100). Sources map to D as follows (DEPTH_KINDS):
- "official": already on that scale. MiDaS / DPT models (e.g. Intel/dpt-beit-large-512, the official
  dpt_beit_large_512 weights) output it directly, as in the official data preparation;
- "disparity": relative inverse depth at an arbitrary scale (Depth Anything V2 relative, MiDaS 16-bit PNGs):
  scaled so that its maximum is 12500, i.e. the nearest point at z = 0.5 (which is what the official loader
  does to almost every MiDaS map anyway; the arbitrary shift of affine-invariant disparity is kept, as there);
- "depth": metric or scene-unit depth z (metric Depth Anything, ZoeDepth): D = 6250 / z.

The job is batched (images grouped by the processor's output size), resumable (an image is done when its depth
file exists; every file is written atomically), sharded over processes with `accelerate launch`, and ends with
a report of skipped files and reasons (prepare_report.json).
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from iterview.claims import claim_dataset, write_record
from iterview.data.datasets import DISPARITY_SCALE
from iterview.data.images import ImageReadError, is_plain_rgb, load_image
from iterview.data.layout import (
    DatasetIndex,
    as_depth_map,
    depth_path_for,
    load_depth,
    same_aspect,
    save_depth,
    scan_images,
    write_index,
)
from iterview.io import atomic_path, remove_partials, write_json

if TYPE_CHECKING:
    from accelerate import PartialState

DEFAULT_DEPTH_MODEL = "Intel/dpt-beit-large-512"
DEPTH_KINDS = ("official", "disparity", "depth")
DEPTH_EXTENSIONS = (".npz", ".npy", ".png")
REPORT_FILE = "prepare_report.json"
_FP16_MAX = 65504.0
_METRIC_MODEL_TYPES = ("zoedepth", "depth_pro", "glpn")


def to_official_disparity(values: torch.Tensor, kind: str) -> torch.Tensor:
    """values: (H, W) in the units of `kind` (see the module docstring) -> official-scale disparity (H, W)
    float32, clipped to the fp16 range; non-positive depth and disparity become 0 (the far end)."""
    values = values.float()
    if kind == "official":
        disparity = values
    elif kind == "disparity":
        peak = values.max()
        if not peak > 0:
            raise ValueError(f"expected a disparity map with a positive maximum, found maximum {float(peak)}")
        disparity = values * (2 * DISPARITY_SCALE / peak)
    elif kind == "depth":
        disparity = torch.where(values > 0, DISPARITY_SCALE / values.clamp(min=1e-12), torch.zeros_like(values))
    else:
        raise ValueError(f"depth kind must be one of {DEPTH_KINDS}, got {kind!r}")
    return torch.nan_to_num(disparity, nan=0.0).clamp(0, _FP16_MAX)


def depth_problem(values: torch.Tensor, kind: str) -> str | None:
    """Why a depth or disparity map (H, W) of `kind` cannot be used, or None: NaN or infinite values, depth
    that is not positive, or negative disparity (0 disparity is the far end, e.g. sky)."""
    bad = int((~torch.isfinite(values)).sum())
    if bad:
        return f"{bad} NaN or infinite values"
    invalid = int((values <= 0).sum()) if kind == "depth" else int((values < 0).sum())
    if invalid:
        return f"{invalid} {'non-positive depth' if kind == 'depth' else 'negative disparity'} values"
    return None


def model_depth_kind(config) -> str:
    """What a transformers depth model outputs: "official" (MiDaS/DPT), "depth" (metric) or "disparity"."""
    if getattr(config, "depth_estimation_type", None) == "metric" or config.model_type in _METRIC_MODEL_TYPES:
        return "depth"
    return "official" if config.model_type == "dpt" else "disparity"


def pixel_values_for(processor, image: Image.Image) -> torch.Tensor:
    """RGB image -> model input (3, h, w) at the processor's size (aspect kept by DPT-style processors)."""
    return torch.as_tensor(np.asarray(processor(images=image, return_tensors="np")["pixel_values"][0]))


class DepthEstimator:
    """A transformers depth model and its image processor, given a hub id or a local folder."""

    def __init__(self, name: str, device: torch.device | str = "cpu", half: bool = False) -> None:
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        from iterview.hub import load_pretrained

        self.processor = load_pretrained(AutoImageProcessor.from_pretrained, name, "--depth-model")
        model = load_pretrained(AutoModelForDepthEstimation.from_pretrained, name, "--depth-model")
        self.device = torch.device(device)
        self.dtype = torch.float16 if half and self.device.type == "cuda" else torch.float32
        self.model = model.to(self.device, self.dtype).eval()
        self.kind = model_depth_kind(model.config)

    @torch.inference_mode()
    def predict(self, pixel_values: torch.Tensor, sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
        """pixel_values (B, 3, h, w) -> raw predictions resized bicubically to each (H, W), float32 on the CPU."""
        output = self.model(pixel_values=pixel_values.to(self.device, self.dtype)).predicted_depth
        output = output.float().unsqueeze(1)
        return [
            F.interpolate(prediction[None], size=size, mode="bicubic", align_corners=False)[0, 0].cpu()
            for prediction, size in zip(output, sizes, strict=True)
        ]


def read_user_depth(path: Path) -> torch.Tensor:
    """A user depth file: .npz (arr_0 or its only array), .npy, or a 16-bit PNG -> (H, W) float32."""
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return torch.from_numpy(load_depth(path))
    if suffix == ".npy":
        values = np.load(path, allow_pickle=False)
    elif suffix == ".png":
        with Image.open(path) as image:
            if not (image.mode.startswith("I;16") or image.mode == "I"):
                raise ValueError(f"expected a 16-bit PNG, found mode {image.mode}")
            values = np.asarray(image)
    else:
        raise ValueError(f"expected one of {DEPTH_EXTENSIONS}, found {suffix}")
    return torch.from_numpy(as_depth_map(values, path))


def match_image_size(depth: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a user depth map (h, w) to the image's (H, W) bilinearly; the aspect ratio must agree within 1%."""
    if tuple(depth.shape) == size:
        return depth
    if not same_aspect(tuple(depth.shape), size):
        raise ValueError(
            f"depth is {depth.shape[0]}x{depth.shape[1]} (HxW), not the aspect of the image {size[0]}x{size[1]}"
        )
    return F.interpolate(depth[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]


@dataclass(frozen=True)
class Job:
    """One source image (relative to the input folder) and its outputs (relative to the dataset root)."""

    source: str
    depth: str

    @property
    def stem(self) -> str:
        """images/<class>/<name> without suffix."""
        return self.depth.removeprefix("depths/").removesuffix(".npz")

    def image_candidates(self) -> tuple[str, str]:
        """The output image: the source copied under its own suffix, or a converted PNG."""
        return f"images/{self.stem}{Path(self.source).suffix}", f"images/{self.stem}.png"


@dataclass
class Loaded:
    """A decoded job: the bytes of its output image and either model input or the finished disparity."""

    job: Job
    image_path: str
    image_bytes: bytes
    size: tuple[int, int]
    pixel_values: torch.Tensor | None = None
    disparity: torch.Tensor | None = None


@dataclass
class Skipped:
    """An image that was not prepared, and why (unreadable, too small, a taken name, bad depth)."""

    job: Job
    reason: str


class _SourceImages(Dataset):
    """Reads, checks and converts each job in DataLoader workers (decoding and resizing run in parallel)."""

    def __init__(
        self,
        jobs: list[Job],
        images_dir: Path,
        min_size: int,
        processor,
        depth_from: Path | None,
        depth_kind: str,
    ) -> None:
        self.jobs, self.images_dir, self.min_size = jobs, images_dir, min_size
        self.processor, self.depth_from, self.depth_kind = processor, depth_from, depth_kind

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, index: int) -> Loaded | Skipped:
        job = self.jobs[index]
        source = self.images_dir / job.source
        try:
            image = load_image(source, self.min_size)
        except (ImageReadError, FileNotFoundError) as error:
            return Skipped(job, getattr(error, "reason", str(error)))
        copy, converted = job.image_candidates()
        if is_plain_rgb(source):
            image_path, image_bytes = copy, source.read_bytes()
        else:
            buffer = BytesIO()
            image.save(buffer, format="PNG")
            image_path, image_bytes = converted, buffer.getvalue()
        size = (image.height, image.width)
        loaded = Loaded(job, image_path, image_bytes, size)
        if self.processor is not None:
            loaded.pixel_values = pixel_values_for(self.processor, image.convert("RGB"))
            return loaded
        try:
            depth_file = self._user_depth_file(job)
            depth = read_user_depth(depth_file)
            problem = depth_problem(depth, self.depth_kind)
            if problem is not None:
                return Skipped(job, f"depth {depth_file}: {problem}")
            loaded.disparity = to_official_disparity(match_image_size(depth, size), self.depth_kind)
        except (ValueError, FileNotFoundError, OSError) as error:
            return Skipped(job, f"depth: {error}")
        return loaded

    def _user_depth_file(self, job: Job) -> Path:
        stem = self.depth_from / Path(job.source).with_suffix("")
        for suffix in DEPTH_EXTENSIONS:
            if stem.with_suffix(suffix).is_file():
                return stem.with_suffix(suffix)
        raise FileNotFoundError(f"no {'/'.join(DEPTH_EXTENSIONS)} file for {job.source} in {self.depth_from}")


def _identity(item):
    return item


@dataclass
class PrepareReport:
    """What one run did; `skipped` holds {"image", "reason"} records."""

    total: int = 0
    written: int = 0
    already_done: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)


def plan_jobs(images_dir: Path) -> tuple[list[Job], list[Skipped], bool]:
    """All source images as jobs (sorted), those whose depth path collides with an earlier one, and whether the
    images sit in class folders."""
    files, labelled = scan_images(images_dir)
    jobs, collisions, taken = [], [], set()
    for file in files:
        job = Job(file.as_posix(), depth_path_for((Path("images") / file).as_posix()))
        if job.depth in taken:
            collisions.append(Skipped(job, f"another image has the same name stem ({job.depth} is taken)"))
            continue
        taken.add(job.depth)
        jobs.append(job)
    return jobs, collisions, labelled


def _open_output(out_dir: Path, record: dict, state: PartialState) -> None:
    """Once every process is ready: the main process creates out_dir, drops partial files a killed run left and
    writes the run's record; the others wait for it."""
    state.wait_for_everyone()
    if state.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        remove_partials(out_dir)
        write_record(out_dir, "prepare", record)
    state.wait_for_everyone()


def prepare_dataset(
    images_dir: str | Path,
    out_dir: str | Path,
    depth_model: str | None = DEFAULT_DEPTH_MODEL,
    depth_from: str | Path | None = None,
    depth_kind: str | None = None,
    batch_size: int = 4,
    num_workers: int = 2,
    min_size: int = 32,
    half: bool = False,
    cpu: bool = False,
    overwrite: bool = False,
) -> PrepareReport | None:
    """Run the depth model (or read `depth_from`) over every image and write the official layout to out_dir.

    depth_kind overrides what the source holds (DEPTH_KINDS); by default the model's own kind, or "official"
    for user depth. Run under `accelerate launch` to shard over processes; returns the merged report on the
    main process and None on the others.
    """
    from accelerate import PartialState
    from accelerate.utils import gather_object

    images_dir, out_dir = Path(images_dir), Path(out_dir)
    depth_from = None if depth_from is None else Path(depth_from)
    _check_arguments(images_dir, out_dir, depth_model, depth_from, depth_kind, batch_size)
    # Several processes without CUDA (torchrun / `accelerate launch --multi_gpu` on a CPU machine) must be told
    # to use CPUs, or each one would believe it runs alone and do all the work.
    several = int(os.environ.get("WORLD_SIZE", "1")) > 1
    state = PartialState(cpu=cpu or (several and not torch.cuda.is_available()))
    jobs, collisions, labelled = plan_jobs(images_dir)
    source = str(depth_from.resolve()) if depth_from is not None else depth_model
    record = {"images": str(images_dir.resolve()), "depth_source": source, "depth_kind": depth_kind}
    claim_dataset(out_dir, "prepare", record, overwrite, clear=state.is_main_process)
    estimator = None if depth_from is not None else DepthEstimator(depth_model, state.device, half)
    _open_output(out_dir, record, state)
    pending = [job for job in jobs if not (out_dir / job.depth).is_file()]
    shard = pending[state.process_index :: state.num_processes]
    kind = depth_kind or ("official" if estimator is None else estimator.kind)
    processor = None if estimator is None else estimator.processor
    report = PrepareReport()
    if state.is_main_process:
        report.skipped += [{"image": s.job.source, "reason": s.reason} for s in collisions]
    source = _SourceImages(shard, images_dir, min_size, processor, depth_from, kind)
    loader = DataLoader(source, batch_size=None, num_workers=num_workers, collate_fn=_identity)
    progress = tqdm(total=len(shard), desc="prepare", unit="img", disable=not state.is_local_main_process)
    _write_items(_with_depth(loader, estimator, kind, batch_size), out_dir, report, progress)
    written = gather_object([report.written])
    skipped = gather_object(report.skipped)
    merged = None
    if state.is_main_process:
        merged = PrepareReport(len(jobs) + len(collisions), sum(written), len(jobs) - len(pending), skipped)
        write_index(out_dir, _index_of_finished(out_dir, jobs, labelled))
        write_json(merged.__dict__, out_dir / REPORT_FILE)
    state.wait_for_everyone()
    return merged


def _write_items(items: Iterator, out_dir: Path, report: PrepareReport, progress: tqdm) -> None:
    """Write each image and its depth map atomically (skipped images go into the report), ticking progress."""
    for item in items:
        if isinstance(item, Skipped):
            report.skipped.append({"image": item.job.source, "reason": item.reason})
        else:
            with atomic_path(out_dir / item.image_path) as tmp:
                tmp.write_bytes(item.image_bytes)
            save_depth(out_dir / item.job.depth, item.disparity.numpy())
            report.written += 1
        progress.update()
    progress.close()


def _check_arguments(
    images_dir: Path,
    out_dir: Path,
    depth_model: str | None,
    depth_from: Path | None,
    depth_kind: str | None,
    batch_size: int,
) -> None:
    """prepare_dataset's arguments, checked before any work."""
    if out_dir.resolve().is_relative_to(images_dir.resolve()):
        raise ValueError(f"the output folder {out_dir} must not lie inside the image folder {images_dir}")
    if depth_from is not None and not depth_from.is_dir():
        raise FileNotFoundError(f"--depth-from folder not found: {depth_from}")
    if depth_from is None and depth_model is None:
        raise ValueError("give a depth model or a folder of depth maps (depth_from)")
    if depth_kind is not None and depth_kind not in DEPTH_KINDS:
        raise ValueError(f"depth kind must be one of {DEPTH_KINDS}, got {depth_kind!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")


def _with_depth(
    loader: DataLoader, estimator: DepthEstimator | None, kind: str, batch_size: int
) -> Iterator[Loaded | Skipped]:
    """Loaded items with their disparity filled in; model inputs are batched by shape (aspect ratios vary)."""
    buckets: dict[tuple[int, ...], list[Loaded]] = defaultdict(list)

    def run(batch: list[Loaded]) -> list[Loaded | Skipped]:
        predictions = estimator.predict(torch.stack([b.pixel_values for b in batch]), [b.size for b in batch])
        done: list[Loaded | Skipped] = []
        for loaded, prediction in zip(batch, predictions, strict=True):
            # Models' small negative disparities are clamped to the far end (see to_official_disparity); only
            # non-finite predictions are unusable.
            bad = int((~torch.isfinite(prediction)).sum())
            if bad:
                done.append(Skipped(loaded.job, f"the depth model predicted {bad} NaN or infinite values"))
                continue
            loaded.disparity = to_official_disparity(prediction, kind)
            done.append(loaded)
        return done

    for item in loader:
        if isinstance(item, Skipped) or item.disparity is not None:
            yield item
            continue
        bucket = buckets[tuple(item.pixel_values.shape)]
        bucket.append(item)
        if len(bucket) == batch_size:
            yield from run(bucket)
            bucket.clear()
    for bucket in buckets.values():
        if bucket:
            yield from run(bucket)


def _index_of_finished(out_dir: Path, jobs: list[Job], labelled: bool) -> DatasetIndex:
    images, depths = [], []
    for job in jobs:
        existing = [p for p in job.image_candidates() if (out_dir / p).is_file()]
        if existing and (out_dir / job.depth).is_file():
            images.append(existing[0])
            depths.append(job.depth)
    labels = None
    if labelled:
        labels = {name: i for i, name in enumerate(sorted({Path(job.source).parts[0] for job in jobs}))}
    return DatasetIndex(images, depths, labels)
