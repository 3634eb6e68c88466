"""3D consistency of a generated multi-view RGBD set, in plain PyTorch.

Each view's nearest neighbours are meshed (official meshing with the scene's geometry, discontinuity faces
flagged) and rendered into it at the geometry's condition SSAA.
Where the warped surface is visible in the target view, colour and depth should agree: colour PSNR and depth
AbsRel are pooled over those co-visible pixels, and coverage is the share of each view that at least one
neighbour sees. A pixel where the target is clearly nearer than the warped surface is an occlusion (the target
sees something the neighbour could not), not an error; the opposite case, a warped surface in front of what the
target shows, is an error and counts. Over all ordered pairs, a depth error is caught in one direction or the
other.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from iterview.geometry.cameras import camera_center
from iterview.geometry.imageops import coverage_mask, subsample_center
from iterview.geometry.mesh import depth_to_mesh
from iterview.geometry.warp import render_simple
from iterview.pipeline.scene import Scene, find_scenes


@dataclass
class Consistency:
    """psnr (dB) and depth_absrel pooled over co-visible pixels of all (view, neighbour) pairs; coverage: mean
    share of a view's pixels that some neighbour sees; per-view lists of the same, indexed by view."""

    psnr: float
    depth_absrel: float
    coverage: float
    view_psnr: list[float]
    view_depth_absrel: list[float]
    view_coverage: list[float]

    def to_dict(self) -> dict:
        """Plain JSON-ready values."""
        return asdict(self)


def nearest_views(modelviews: torch.Tensor, k: int) -> torch.Tensor:
    """The k views whose camera centres are nearest to each view's. modelviews: (V, 4, 4) -> (V, min(k, V-1))."""
    centres = camera_center(modelviews.double())
    distance = torch.cdist(centres, centres)
    distance.fill_diagonal_(math.inf)
    return distance.topk(min(k, len(modelviews) - 1), largest=False).indices


@dataclass
class Warp:
    """Source views rendered into target views, at image size: color (P, 3, H, W) in [0, 1], depth (P, 1, H, W)
    linear, mask (P, 1, H, W) bool (covered by front-facing, non-discontinuity faces)."""

    color: torch.Tensor
    depth: torch.Tensor
    mask: torch.Tensor


def warp_views(scene: Scene, sources: torch.Tensor, targets: torch.Tensor) -> Warp:
    """Mesh views `sources` (P,) and render them into views `targets` (P,), with the scene geometry's
    tolerances and condition_ssaa× supersampling."""
    size, g = scene.rgbd.shape[-1], scene.geometry
    ssaa = g.condition_ssaa
    depth = scene.depth[sources, 0]
    mesh = depth_to_mesh(depth, scene.modelviews[sources], fov=g.fov, atol=g.atol, rtol=g.rtol)
    texture = _colors(scene.rgbd[sources])
    render = render_simple(mesh, texture, scene.modelviews[targets], size * ssaa)
    covered = render.mask.float()
    # A pixel counts when most of its sub-samples and its centre are covered; colour averages the covered ones.
    mask = coverage_mask(render.mask, ssaa) & subsample_center(render.mask, ssaa)
    color = F.avg_pool2d(render.color * covered, ssaa) / F.avg_pool2d(covered, ssaa).clamp(min=1e-12)
    return Warp(color, subsample_center(render.depth, ssaa), mask)


def scene_consistency(
    scene: Scene,
    neighbours: int = 4,
    occlusion_tolerance: float = 0.05,
    batch_size: int = 16,
) -> Consistency:
    """Reprojection consistency of every view with its `neighbours` nearest views (all ordered pairs)."""
    if len(scene) < 2:
        raise ValueError(f"consistency needs a scene with at least 2 views, got {len(scene)}")
    views, device = len(scene), scene.rgbd.device
    near = nearest_views(scene.modelviews, neighbours).to(device)
    targets = torch.arange(views, device=device).repeat_interleave(near.shape[1])
    sources = near.reshape(-1)
    target_rgb = _colors(scene.rgbd)
    target_depth = scene.depth

    squared, absrel, counted = torch.zeros(3, views, dtype=torch.float64, device=device)
    seen = torch.zeros(views, 1, *scene.rgbd.shape[-2:], dtype=torch.int32, device=device)
    for t, s in zip(targets.split(batch_size), sources.split(batch_size), strict=True):
        warp = warp_views(scene, s, t)
        occluded = target_depth[t] < warp.depth * (1 - occlusion_tolerance)
        valid = warp.mask & ~occluded
        weight = valid.double()
        squared.index_add_(0, t, ((warp.color - target_rgb[t]).double().square() * weight).sum((1, 2, 3)) / 3)
        rel = (warp.depth - target_depth[t]).abs().double() / target_depth[t].double()
        absrel.index_add_(0, t, (rel * weight).sum((1, 2, 3)))
        counted.index_add_(0, t, weight.sum((1, 2, 3)))
        seen.index_add_(0, t, valid.int())

    view_coverage = (seen > 0).double().mean((1, 2, 3))
    return Consistency(
        psnr=_psnr(squared.sum() / counted.sum()),
        depth_absrel=float(absrel.sum() / counted.sum()),
        coverage=float(view_coverage.mean()),
        view_psnr=[_psnr(e / c) for e, c in zip(squared, counted, strict=True)],
        view_depth_absrel=(absrel / counted).tolist(),
        view_coverage=view_coverage.tolist(),
    )


def _colors(rgbd: torch.Tensor) -> torch.Tensor:
    """Colour as it is saved and seen: (V, 4, H, W) in [-1, 1] -> (V, 3, H, W) clipped to [0, 1]."""
    return (rgbd[:, :3] * 0.5 + 0.5).clamp(0, 1)


def _psnr(mse: torch.Tensor) -> float:
    """PSNR in dB for colours in [0, 1]; capped at 100 dB (identical images), nan without pixels."""
    return float(-10 * torch.log10(mse.clamp(min=1e-10)))


def ground_truth_error(
    scene: Scene, rgb: torch.Tensor, depth: torch.Tensor, views: slice | None = None
) -> dict[str, float]:
    """Error of generated views against true renders of the same cameras (e.g. `SynthScene.render`).

    rgb: (V, 3, H, W) in [0, 1]; depth: (V, 1, H, W) linear. Depths are compared inside the scene's (near, far)
    range, which is all a z-buffer depth channel can express. Returns psnr (dB) and depth_absrel over all pixels
    of the selected views (default: all but view 0).
    """
    if rgb.shape != scene.rgbd[:, :3].shape or depth.shape != scene.rgbd[:, 3:].shape:
        raise ValueError(
            f"ground truth must match the scene's views {tuple(scene.rgbd.shape)}: got rgb {tuple(rgb.shape)}, "
            f"depth {tuple(depth.shape)}"
        )
    views = slice(1, None) if views is None else views
    generated = _colors(scene.rgbd[views]).double()
    true_depth = depth[views].double().clamp(scene.near, scene.far)
    return {
        "psnr": _psnr((generated - rgb[views].double()).square().mean()),
        "depth_absrel": float(((scene.depth[views].double() - true_depth).abs() / true_depth).mean()),
    }


def folder_consistency(
    folder: str | Path,
    neighbours: int = 4,
    device: torch.device | str = "cpu",
    progress: bool = True,
    on_bad_scene: Callable[[Path, Exception], None] | None = None,
) -> dict[str, float]:
    """Mean consistency over every scene under folder: psnr, depth_absrel, coverage and the scene count.

    A scene that cannot be read raises, or, with on_bad_scene, is passed to it and left out (counted as
    `skipped`)."""
    results, skipped = [], 0
    for path in tqdm(find_scenes(folder), desc="consistency", unit="scene", disable=not progress):
        try:
            scene = Scene.load(path)
        except (ValueError, FileNotFoundError) as error:
            if on_bad_scene is None:
                raise
            on_bad_scene(Path(path), error)
            skipped += 1
            continue
        scene = scene.to(device)
        results.append(scene_consistency(scene, neighbours))
    if not results:
        raise ValueError(f"none of the {skipped} scenes under {folder} could be read")
    return {
        **({"skipped": skipped} if skipped else {}),
        "psnr": sum(r.psnr for r in results) / len(results),
        "depth_absrel": sum(r.depth_absrel for r in results) / len(results),
        "coverage": sum(r.coverage for r in results) / len(results),
        "scenes": len(results),
    }
