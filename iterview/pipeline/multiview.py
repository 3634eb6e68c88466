"""Iterative multi-view generation (the paper's algorithm, official `sample_all`).

View 0 comes from G_u (class + classifier-free guidance), or is given (a photo lifted to RGBD). Every further
camera is rendered from ALL previous views by the aggregation compositor; G_c inpaints it under replacement and
free-space-hull guidance; the new view is meshed and joins the set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from iterview.diffusion.guidance import classifier_free, inpaint_model, replacement_guidance
from iterview.diffusion.presets import OFFICIAL_COND, OFFICIAL_UNCOND, SamplerChoice
from iterview.diffusion.samplers import Callback
from iterview.diffusion.schedule import DiffusionSchedule, randn
from iterview.geometry.aggregate import Conditions, aggregate_conditions
from iterview.geometry.inference import OFFICIAL_GEOMETRY, InferenceGeometry
from iterview.geometry.mesh import Mesh, rgbd_to_mesh
from iterview.pipeline.scene import Scene


@dataclass(frozen=True)
class Guidance:
    """Classifier-free strength w (ε = (1+w)·ε_c − w·ε_∅) and the official replacement / hull weights."""

    strength: float = 3.0
    w_rgb: float = 0.1
    w_depth: float = 0.2
    w_hull: float = 0.5


OFFICIAL_GUIDANCE = Guidance()


@dataclass
class MultiViewResult:
    """rgbd: (B, V, 4, H, W) in [-1, 1]; modelviews: (B, V, 4, 4); conditions[k - 1]: what view k was
    conditioned on (batched over B); classes: (B,) or None."""

    rgbd: torch.Tensor
    modelviews: torch.Tensor
    conditions: list[Conditions] = field(default_factory=list)
    classes: torch.Tensor | None = None

    def scene(self, index: int, geometry: InferenceGeometry = OFFICIAL_GEOMETRY, seed: int | None = None) -> Scene:
        """Instance `index` as a Scene (known = the aggregation depth mask of each view; none for view 0)."""
        rgbd = self.rgbd[index]
        known = torch.zeros(rgbd.shape[0], 1, *rgbd.shape[2:], dtype=torch.bool, device=rgbd.device)
        for k, cond in enumerate(self.conditions, start=1):
            known[k] = cond.mask[index] > 0.5
        label = None if self.classes is None else int(self.classes[index])
        return Scene(rgbd, self.modelviews[index], geometry, label, seed, known)


class MultiViewPipeline:
    """Sample views on per-instance camera paths: G_u for view 0 (unless given), then G_c conditioned on the
    aggregation of every previous view. Each instance draws all its random numbers from its own generator, so a
    seed gives the same views whatever batch it runs in (up to floating-point round-off of batched kernels).

    g_u: (B, 4, H, W) ε-model with optional classes (None when view 0 is always given); g_c: the 10-channel
    inpainting model (None for one view).
    """

    def __init__(
        self,
        g_u: nn.Module | None,
        g_c: nn.Module | None = None,
        schedule: DiffusionSchedule | None = None,
        sampler_uncond: SamplerChoice = OFFICIAL_UNCOND,
        sampler_cond: SamplerChoice = OFFICIAL_COND,
        guidance: Guidance = OFFICIAL_GUIDANCE,
        geometry: InferenceGeometry = OFFICIAL_GEOMETRY,
        image_size: int | None = None,
        progress: bool = False,
    ) -> None:
        if g_u is None and g_c is None:
            raise ValueError("the pipeline needs g_u, g_c or both")
        self.g_u = g_u.eval() if g_u is not None else None
        self.g_c = g_c.eval() if g_c is not None else None
        self.schedule = schedule or DiffusionSchedule.linear(1000)
        self.sampler_uncond, self.sampler_cond = sampler_uncond, sampler_cond
        self.guidance, self.geometry = guidance, geometry
        self.image_size = image_size or (g_u if g_u is not None else g_c).image_size
        self.progress = progress

    @torch.no_grad()
    def __call__(
        self,
        modelviews: torch.Tensor,
        generators: Sequence[torch.Generator],
        classes: torch.Tensor | None = None,
        first_view: torch.Tensor | None = None,
        callback: Callback | None = None,
    ) -> MultiViewResult:
        """modelviews: (B, V, 4, 4) world->camera per instance, view 0 first; generators: one per instance, on
        the models' device; classes: (B,) long or None; first_view: (B, 4, H, W) in [-1, 1], view 0 given
        instead of sampled by G_u (e.g. a real image with its depth). callback gets each sampler step's dict
        with "view" and "views" added, and once a view is finished {"view", "views", "sample": (B, 4, H, W)}
        (a given first view counts as finished); an exception it raises stops sampling."""
        batch, views = modelviews.shape[:2]
        modelviews = _on_generators_device(modelviews, generators)
        if views > 1 and self.g_c is None:
            raise ValueError(f"{views} views need the conditional model g_c")
        if first_view is None and self.g_u is None:
            raise ValueError("sampling view 0 needs the unconditional model g_u (or pass first_view)")
        size = self.image_size
        if first_view is not None and tuple(first_view.shape) != (batch, 4, size, size):
            raise ValueError(f"the given view 0 must be ({batch}, 4, {size}, {size}), got {tuple(first_view.shape)}")
        bar = tqdm(total=views, desc="views", disable=not self.progress, leave=False)

        def view_callback(view: int) -> Callback | None:
            return None if callback is None else lambda step: callback({**step, "view": view, "views": views})

        def finished(view: int, sample: torch.Tensor) -> None:
            bar.update()
            if callback is not None:
                callback({"view": view, "views": views, "sample": sample})

        if first_view is None:
            x = self.first_view(generators, classes, view_callback(0))
        else:
            x = first_view.to(modelviews.device)
        finished(0, x)
        mesh, texture = self.mesh(x, modelviews[:, 0])
        samples, meshes, textures, conditions = [x], [mesh], [texture], []
        for k in range(1, views):
            cond = self.aggregate(meshes, textures, modelviews[:, k])
            x = self.next_view(cond, generators, classes, view_callback(k))
            finished(k, x)
            mesh, texture = self.mesh(x, modelviews[:, k])
            samples.append(x)
            meshes.append(mesh)
            textures.append(texture)
            conditions.append(cond)
        bar.close()
        return MultiViewResult(torch.stack(samples, dim=1), modelviews, conditions, classes)

    @torch.no_grad()
    def teacher_forced(
        self,
        views: torch.Tensor,
        modelviews: torch.Tensor,
        generators: Sequence[torch.Generator],
        classes: torch.Tensor | None = None,
    ) -> MultiViewResult:
        """G_c's own error, without the drift that a chain of generated views accumulates: each view k ≥ 1 is
        generated from the aggregation of the given views 0..k-1 (B, V, 4, H, W) in [-1, 1], e.g. exact renders,
        instead of the generated ones. Returns the given view 0 and the generated views 1..V-1."""
        batch, count = modelviews.shape[:2]
        size = self.image_size
        if self.g_c is None or count < 2:
            raise ValueError(f"teacher forcing needs the conditional model g_c and two views or more, got {count}")
        if tuple(views.shape) != (batch, count, 4, size, size):
            raise ValueError(f"expected views of shape ({batch}, {count}, 4, {size}, {size}), got {tuple(views.shape)}")
        modelviews = _on_generators_device(modelviews, generators)
        views = views.to(modelviews.device)
        meshes, textures = zip(*(self.mesh(views[:, k], modelviews[:, k]) for k in range(count - 1)), strict=True)
        samples, conditions = [views[:, 0]], []
        for k in range(1, count):
            conditions.append(self.aggregate(meshes[:k], textures[:k], modelviews[:, k]))
            samples.append(self.next_view(conditions[-1], generators, classes))
        return MultiViewResult(torch.stack(samples, dim=1), modelviews, conditions, classes)

    @torch.no_grad()
    def first_view(
        self, generators: Sequence[torch.Generator], classes: torch.Tensor | None, callback: Callback | None = None
    ) -> torch.Tensor:
        """G_u with classifier-free guidance -> (B, 4, H, W) in [-1, 1]."""
        x_T = self.initial_noise(generators)
        network = classifier_free(self.g_u, classes, self.guidance.strength, self.sampler_uncond.cfg_window)
        return self.sampler_uncond.sample(network, x_T, self.schedule, generators, callback=callback)

    def unet_evaluations(self, views: int, guided: bool, first_view_given: bool = False) -> int:
        """U-Net image evaluations per instance of `views` views (a classifier-free pair counts two; guided:
        classes are given and the strength is > 0), with each sampler's guidance window."""
        guided = guided and self.guidance.strength > 0
        first = 0 if first_view_given else self.sampler_uncond.evaluations(self.schedule, guided)
        return first + (views - 1) * self.sampler_cond.evaluations(self.schedule, guided)

    def initial_noise(self, generators: Sequence[torch.Generator]) -> torch.Tensor:
        """x_T: (B, 4, H, W), row i drawn from generators[i]."""
        shape = (len(generators), 4, self.image_size, self.image_size)
        return randn(shape, generators, generators[0].device)

    def aggregate(
        self, meshes: Sequence[Mesh], textures: Sequence[torch.Tensor], modelview: torch.Tensor
    ) -> Conditions:
        """Official aggregate_conditions of all previous views into the cameras modelview (B, 4, 4). A camera
        that sees none of them (e.g. the far side of a coarse 360° orbit) gets an empty condition."""
        return aggregate_conditions(meshes, textures, modelview, self.image_size, self.geometry, allow_blind=True)

    def next_view(
        self,
        cond: Conditions,
        generators: Sequence[torch.Generator],
        classes: torch.Tensor | None,
        callback: Callback | None = None,
    ) -> torch.Tensor:
        """G_c inpainting of the aggregated condition with replacement / hull guidance -> (B, 4, H, W)."""
        known = torch.cat([cond.color, cond.depth], dim=1) * 2 - 1
        hull = cond.depth_convex * 2 - 1
        x_T = self.initial_noise(generators)
        w = self.guidance
        # Fresh hole noise at every call, as the official InpaintCFG, row i from generators[i].
        model_fn = inpaint_model(
            self.g_c, known, cond.mask, cond.mask_rgb, classes, w.strength, generators, self.sampler_cond.cfg_window
        )
        x0_fn = replacement_guidance(known, cond.mask, cond.mask_rgb, hull, w.w_rgb, w.w_depth, w.w_hull)
        return self.sampler_cond.sample(model_fn, x_T, self.schedule, generators, x0_fn, callback)

    def mesh(self, x: torch.Tensor, modelview: torch.Tensor) -> tuple[Mesh, torch.Tensor]:
        """Official meshing of a sampled view (frustum skirt, normals)."""
        return rgbd_to_mesh(x, modelview, self.geometry)


def _on_generators_device(modelviews: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """modelviews (B, V, 4, 4) on the device of the generators, which must be one per instance."""
    if len(generators) != len(modelviews):
        raise ValueError(f"expected one generator per instance ({len(modelviews)}), got {len(generators)}")
    return modelviews.to(generators[0].device)
