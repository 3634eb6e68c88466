"""Metrics of the synth benchmark (`iterview.data.benchmark`).

- G_u: FID / KID of class-conditional first views against the held-out split, class accuracy and the Inception
  Score computed with the synth classifier, and the real-vs-real FID of two disjoint real sets of the same size.
- G_c: from the true view 0 of held-out scenes, the 26 other views of the 3x9 grid against exact renders (colour
  PSNR and depth AbsRel over all pixels, over the pixels the condition covers and over those G_c invented), and
  the reprojection consistency between neighbouring generated views.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from iterview.data.benchmark import load_truth, read_recipe
from iterview.data.datasets import RGBDDataset, derive_seed
from iterview.eval.classifier import SynthClassifier, class_accuracy, classifier_inception_score, predict
from iterview.eval.consistency import scene_consistency
from iterview.geometry.cameras import linear_to_zbuffer, zbuffer_to_linear
from iterview.io import colorize_depth, make_grid, save_png, write_json
from iterview.pipeline.multiview import MultiViewPipeline, MultiViewResult
from iterview.pipeline.viewsets import GRID_3X9
from iterview.validate import network_identity


@torch.no_grad()
def sample_first_views(
    pipeline: MultiViewPipeline,
    images: int | Sequence[int],
    num_classes: int,
    seed: int,
    batch_size: int,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """G_u samples (N, 4, S, S) in [-1, 1] of `images` (indices, or a count from 0): image i of class
    i mod num_classes with its own seed, whatever the batch."""
    device = next(pipeline.g_u.parameters()).device
    indices = torch.arange(images) if isinstance(images, int) else torch.tensor(list(images), dtype=torch.long)
    classes = indices % num_classes
    samples = []
    for start in tqdm(range(0, len(indices), batch_size), desc="first views", disable=not progress):
        batch = indices[start : start + batch_size]
        generators = _generators(batch.tolist(), seed, device)
        samples.append(pipeline.first_view(generators, classes[start : start + len(batch)].to(device)).cpu())
    return torch.cat(samples), classes


def uncond_metrics(
    root: str | Path,
    pipeline: MultiViewPipeline,
    classifier: SynthClassifier,
    output_dir: str | Path,
    count: int = 1000,
    seed: int = 0,
    batch_size: int = 100,
    progress: bool = True,
    stats_cache: str | Path | None = None,
    resume: bool = False,
) -> dict[str, float]:
    """Sample `count` first views into output_dir/images and measure them (as saved, 8-bit) against the
    held-out split (its statistics cached at stats_cache, default output_dir/heldout_stats.safetensors).
    resume: keep the images an earlier call with the same G_u weights, sampler and seed left there and sample
    only the missing ones (hours-long runs such as the official DDPM-1000 on a CPU); `seconds_per_image` is then
    over the images sampled by this call (None if none was)."""
    from iterview.eval.fid import ImageFiles, extract_features, image_metrics
    from iterview.eval.fid import real_stats as compute_real_stats
    from iterview.eval.inception import load_inception

    root, out = Path(root), Path(output_dir)
    recipe = read_recipe(root)
    paths = [out / "images" / f"{i:05d}.png" for i in range(count)]
    todo = [i for i, path in enumerate(paths) if not (resume and path.is_file())]
    _check_first_views(out, first_views_identity(pipeline, seed), reuse=len(todo) < count)
    start = time.perf_counter()
    for begin in tqdm(range(0, len(todo), batch_size), desc="first views", disable=not progress):
        chunk = todo[begin : begin + batch_size]  # saved batch by batch: an interrupted run resumes
        images, _ = sample_first_views(pipeline, chunk, classifier.num_classes, seed, batch_size, progress=False)
        for i, image in zip(chunk, images, strict=True):
            save_png(image[:3] * 0.5 + 0.5, paths[i])
    seconds = (time.perf_counter() - start) / len(todo) if todo else None
    rgb = torch.stack([_read_rgb(path) for path in paths])
    save_png(make_grid(rgb[:64] * 0.5 + 0.5, _rows(min(64, count), 8)), out / "grid.png")
    device = next(pipeline.g_u.parameters()).device
    inception = load_inception(device=device)
    cache = stats_cache if stats_cache is not None else out / "heldout_stats.safetensors"
    reference = compute_real_stats(inception, root / "heldout" / "images", recipe.image_size, cache, progress=progress)
    features = extract_features(inception, ImageFiles(paths, recipe.image_size, real=False), progress=progress)
    metrics = image_metrics(features, reference, kid_subsets=100, kid_subset_size=min(1000, count))
    probabilities = predict(classifier, rgb)
    metrics["class_accuracy"] = class_accuracy(probabilities, torch.arange(count) % classifier.num_classes)
    metrics["synth_is_mean"], metrics["synth_is_std"] = classifier_inception_score(probabilities, min(10, count))
    metrics["seconds_per_image"] = seconds
    return metrics


def first_views_identity(pipeline: MultiViewPipeline, seed: int) -> dict:
    """What first views depend on: G_u's weights (a SHA-256 of its state dict), sampler, guidance and seed."""
    from iterview.pipeline.loading import sampler_summary

    summary = sampler_summary(pipeline)
    identity = {"g_u_sha256": network_identity(pipeline.g_u), "seed": seed}
    return identity | {k: summary[k] for k in ("sampler_uncond", "guidance")}


def _check_first_views(out: Path, identity: dict, reuse: bool) -> None:
    """Record the identity of the first views in out/first_views.json; when reusing saved ones, they must have
    been sampled with the same identity."""
    path = out / "first_views.json"
    if reuse:
        saved = json.loads(path.read_text()) if path.is_file() else None
        if saved != identity:
            raise ValueError(
                f"the images in {out / 'images'} were not sampled with these weights, sampler and seed "
                f"({path} is {'missing' if saved is None else 'different'}): remove them to sample anew"
            )
    write_json(identity, path)


def _read_rgb(path: Path) -> torch.Tensor:
    """A saved RGB PNG as (3, S, S) in [-1, 1]."""
    array = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    return torch.from_numpy(array).permute(2, 0, 1) / 127.5 - 1


def real_vs_real_fid(root: str | Path, count: int, inception=None, progress: bool = True) -> float:
    """FID between the first `count` training images and the first `count` held-out ones: the floor that
    sampling noise alone puts under a FID of `count` generated images."""
    from iterview.eval.fid import FeatureStats, ImageFiles, extract_features, frechet_distance, list_images
    from iterview.eval.inception import load_inception

    root = Path(root)
    size = read_recipe(root).image_size
    inception = inception or load_inception()
    stats = []
    for split in ("train", "heldout"):
        paths = sorted(list_images(root / split / "images"), key=lambda p: p.name)[:count]
        features = extract_features(inception, ImageFiles(paths, size, real=True), progress=progress, desc=split)
        stats.append(FeatureStats.from_features(features))
    return frechet_distance(stats[0].mu, stats[0].sigma, stats[1].mu, stats[1].sigma)


def novel_view_metrics(
    root: str | Path,
    pipeline: MultiViewPipeline,
    output_dir: str | Path,
    scenes: int = 20,
    seed: int = 0,
    batch_size: int = 20,
    progress: bool = True,
    teacher_forced: bool = False,
) -> dict[str, float]:
    """Generate the 3x9 views of held-out scenes 0..scenes-1 from their true view 0; compare with the truth.
    teacher_forced: also generate each view from the true previous views (`MultiViewPipeline.teacher_forced`),
    whose PSNR and AbsRel (keys prefixed `teacher_forced_`) are G_c's own error without the chain's drift."""
    root, out = Path(root), Path(output_dir)
    recipe = read_recipe(root)
    if scenes > recipe.truth_scenes:
        raise ValueError(f"{root} has ground truth for {recipe.truth_scenes} scenes, {scenes} were asked for")
    heldout = RGBDDataset(root / "heldout", recipe.image_size)
    device = next(pipeline.g_c.parameters()).device
    totals = torch.zeros(6, 2, dtype=torch.float64)  # (rgb, depth) sums over all / covered / invented + counts
    forced_totals = torch.zeros_like(totals)
    consistency, seconds = [], 0.0
    for first_index in tqdm(range(0, scenes, batch_size), desc="held-out scenes", disable=not progress):
        indices = list(range(first_index, min(first_index + batch_size, scenes)))
        items = [heldout[i] for i in indices]
        truths = [load_truth(root, i) for i in indices]
        first = torch.stack([item["x_0"] for item in items]).to(device)
        classes = torch.stack([item["classes"] for item in items]).to(device)
        modelviews = torch.stack([truth["modelviews"] for truth in truths]).to(device)
        start = time.perf_counter()
        result = pipeline(modelviews, _generators(indices, seed, device), classes, first_view=first)
        seconds += time.perf_counter() - start
        if teacher_forced:
            views = torch.stack([_truth_rgbd(truth, pipeline.geometry.near, pipeline.geometry.far) for truth in truths])
            forced = pipeline.teacher_forced(views, modelviews, _generators(indices, seed, device), classes)
            for row, truth in enumerate(truths):
                forced_totals += _truth_errors(forced, row, truth, pipeline.geometry.near, pipeline.geometry.far)
        for row, (index, truth) in enumerate(zip(indices, truths, strict=True)):
            scene = result.scene(row, pipeline.geometry, seed=index).to("cpu")
            scene.save(out / "scenes" / f"scene_{index:04d}")
            totals += _truth_errors(result, row, truth, pipeline.geometry.near, pipeline.geometry.far)
            consistency.append(scene_consistency(scene))
            if index < 4:
                _save_grids(scene, truth, out / "grids", index)
    metrics = _summarise(totals, consistency) | {"seconds_per_scene": seconds / scenes}
    if teacher_forced:
        metrics |= {f"teacher_forced_{name}": value for name, value in _region_metrics(forced_totals).items()}
    return metrics


def _generators(indices: list[int], seed: int, device: torch.device) -> list[torch.Generator]:
    """One generator per image or scene, seeded from its index: each draws the same noise in any batch."""
    return [torch.Generator(device).manual_seed(derive_seed(seed, i)) for i in indices]


def _truth_rgbd(truth: dict, near: float, far: float) -> torch.Tensor:
    """A scene's true views as the pipeline's RGBD (V, 4, S, S) in [-1, 1], depth as a z-buffer of (near, far)."""
    zbuffer = linear_to_zbuffer(truth["depth"], near, far)
    return torch.cat([truth["rgb"], zbuffer], dim=1) * 2 - 1


def _truth_errors(result: MultiViewResult, row: int, truth: dict, near: float, far: float) -> torch.Tensor:
    """(6, 2): squared colour error and depth AbsRel sums, and pixel counts, over all / covered / invented
    pixels of views 1..V-1 of one instance."""
    rgbd = result.rgbd[row, 1:].cpu().double()
    covered = torch.stack([cond.mask[row].cpu() > 0.5 for cond in result.conditions])
    color = (rgbd[:, :3] * 0.5 + 0.5).clamp(0, 1)
    depth = zbuffer_to_linear(rgbd[:, 3:] * 0.5 + 0.5, near, far)
    true_depth = truth["depth"][1:].double().clamp(near, far)
    squared = (color - truth["rgb"][1:].double()).square().mean(1, keepdim=True)
    absrel = (depth - true_depth).abs() / true_depth
    out = torch.zeros(6, 2, dtype=torch.float64)
    for k, region in enumerate((torch.ones_like(covered), covered, ~covered)):
        out[k] = torch.stack([(squared * region).sum(), region.sum()])
        out[3 + k] = torch.stack([(absrel * region).sum(), region.sum()])
    return out


def _region_metrics(totals: torch.Tensor) -> dict[str, float]:
    """PSNR and depth AbsRel over all / covered / invented pixels, and the covered share, of `_truth_errors` sums."""
    metrics: dict[str, float] = {}
    for k, region in enumerate(("all", "covered", "invented")):
        mse = totals[k, 0] / totals[k, 1].clamp(min=1)
        metrics[f"psnr_{region}"] = float(-10 * torch.log10(mse.clamp(min=1e-10)))
        metrics[f"depth_absrel_{region}"] = float(totals[3 + k, 0] / totals[3 + k, 1].clamp(min=1))
    metrics["covered_share"] = float(totals[1, 1] / totals[0, 1])
    return metrics


def _summarise(totals: torch.Tensor, consistency: list) -> dict[str, float]:
    metrics = _region_metrics(totals)
    metrics["reprojection_psnr"] = sum(c.psnr for c in consistency) / len(consistency)
    metrics["reprojection_depth_absrel"] = sum(c.depth_absrel for c in consistency) / len(consistency)
    metrics["scenes"] = len(consistency)
    return metrics


def _save_grids(scene, truth: dict, folder: Path, index: int) -> None:
    """Generated and true 3x9 grids, colour and depth, one PNG each."""
    near, far = scene.near, scene.far
    true_zbuffer = linear_to_zbuffer(truth["depth"], near, far)
    grids = {
        "generated": torch.cat([scene.rgbd[:, :3] * 0.5 + 0.5, colorize_depth(scene.rgbd[:, 3:] * 0.5 + 0.5)], -2),
        "truth": torch.cat([truth["rgb"], colorize_depth(true_zbuffer)], -2),
    }
    for name, images in grids.items():
        save_png(make_grid(images.clamp(0, 1), GRID_3X9), folder / f"{name}_{index:04d}.png")


def _rows(count: int, columns: int) -> list[list[int]]:
    return [
        [i if i < count else -1 for i in range(r * columns, (r + 1) * columns)]
        for r in range(math.ceil(count / columns))
    ]


def run_benchmark(
    root: str | Path,
    output_dir: str | Path,
    uncond: str | Path | None = None,
    cond: str | Path | None = None,
    classifier: str | Path = "synth",
    sampler: str = "fast",
    steps_uncond: int | None = None,
    steps_cond: int | None = None,
    guidance: float | None = None,
    num_images: int = 1000,
    scenes: int = 20,
    seed: int = 0,
    batch_size: int = 100,
    device: torch.device | str = "cpu",
    progress: bool = True,
    teacher_forced: bool = False,
) -> dict[str, dict]:
    """Every benchmark metric of the given models ({"uncond": ..., "cond": ...}, either part optional).
    Models may be shipped names (`synth`), whose inference settings (geometry, guidance, clipping) apply.
    teacher_forced: G_c's metrics from the true previous views too (see `novel_view_metrics`)."""
    from iterview.eval.classifier import load_classifier
    from iterview.models.shipped import resolve_model
    from iterview.pipeline.loading import load_pipeline, sampler_summary

    if uncond is None and cond is None:
        raise ValueError("give a G_u (--uncond) and/or a G_c (--cond) to evaluate")
    recipe = read_recipe(root)  # a clear error before any model is loaded
    pipeline = load_pipeline(uncond, cond, sampler, steps_uncond, steps_cond, guidance, device)
    out = Path(output_dir)
    metrics: dict[str, dict] = {}
    if uncond is not None:
        model = load_classifier(resolve_model(classifier, "classifier"), device)
        metrics["uncond"] = uncond_metrics(
            root, pipeline, model, out / "uncond", num_images, seed, batch_size, progress
        )
        if recipe.train_count >= num_images:
            metrics["uncond"]["real_vs_real_fid"] = real_vs_real_fid(root, num_images, progress=progress)
        metrics["uncond"] |= sampler_summary(pipeline)
    if cond is not None:
        metrics["cond"] = novel_view_metrics(
            root, pipeline, out / "cond", scenes, seed, scenes, progress, teacher_forced
        )
        metrics["cond"] |= sampler_summary(pipeline)
    return metrics
