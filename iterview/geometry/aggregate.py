"""Aggregation compositor (official AggregationRenderer) and inference conditions.

Each source view's mesh is rasterised alone into the target camera (its own z-test), its fragments are weighted
by how squarely the surface faced that view's camera, and the views are composited pixel by pixel in list order
with the official strong / weak / eroded rules (§3.5). There is no z-test across views.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from iterview.geometry.cameras import camera_center, check_modelview, linear_to_zbuffer
from iterview.geometry.imageops import coverage_mask, depth_edge, erode, lanczos_downsample, subsample_center
from iterview.geometry.inference import OFFICIAL_GEOMETRY, InferenceGeometry
from iterview.geometry.mesh import FLAG_EDGE, FLAG_ERODED, FLAG_PADDING, Mesh, map_mesh, stack_meshes
from iterview.geometry.raster import (
    Backend,
    interpolate,
    kernel_loop,
    kernels_for,
    rasterize,
    sample_nearest,
    triangle_setup,
    use_kernels,
    window_to_linear,
)

# Official aggregation shader constants.
ANGLE_FALLOFF = 20.0  # w = exp(-20 · angle between the normal and the direction to the source camera)
MIN_WEIGHT = 1e-4
ERODED_FACTOR = 1e-8
WEAK_WEIGHT = 1e-16  # edge and padding fragments
STRONG_DEPTH = 1e-14  # w above this counts for depth and the depth mask
STRONG_COLOR = 1e-6  # w above this counts for the colour mask
WEAK_DEPTH_WEIGHT = 1e-8
_MAX_PIXELS = 1 << 20  # target pixels aggregated at once
_STACKED_FACES = 200_000  # faces set up and drawn in one compiled pass (buffers below glibc's 32 MB mmap threshold)


@dataclass
class AggregateRender:
    """color: (B, 3, S, S); depth: (B, 1, S, S) linear (near where empty); mask_color, mask_depth: bool."""

    color: torch.Tensor
    depth: torch.Tensor
    mask_color: torch.Tensor
    mask_depth: torch.Tensor


@dataclass
class Conditions:
    """Inference conditions at image size, all (B, C, H, W): color in [0, 1] (masked by mask_rgb);
    depth z-buffer (near, far) in [0, 1] (masked by mask); mask, mask_rgb float 0/1; depth_convex unmasked."""

    color: torch.Tensor
    depth: torch.Tensor
    mask: torch.Tensor
    mask_rgb: torch.Tensor
    depth_convex: torch.Tensor


@dataclass
class FusionFrame:
    """A free-view frame at image size: color (B, 3, H, W) in [0, 1] (black where nothing is seen); depth
    (B, 1, H, W) linear (renderer near where empty); mask (B, 1, H, W) bool, a strong sample at the centre."""

    color: torch.Tensor
    depth: torch.Tensor
    mask: torch.Tensor


@dataclass
class ViewSamples:
    """One source view's pass into the target cameras: color (B, 3, S, S), weight (B, 1, S, S) (0 where empty
    or back-facing), zbuffer (B, 1, S, S) GL window depth of the renderer's (near, far)."""

    color: torch.Tensor
    weight: torch.Tensor
    zbuffer: torch.Tensor


def aggregate_render(
    meshes: Sequence[Mesh],
    textures: Sequence[torch.Tensor],
    modelview: torch.Tensor,
    size: int,
    near: float = 0.01,
    far: float = 200.0,
    backend: Backend = "auto",
) -> AggregateRender:
    """Blend every source view's mesh (each textures[i]: (B, 3, N, N)) into the target cameras (B, 4, 4).

    Meshes need normals (``depth_to_mesh(..., compute_normals=True)``). Each view is shaded alone
    (``shade_view``) and composited in list order (``Compositor``): colour is the weighted mean; depth the mean
    of GL window depths over strong samples, or the farthest weak sample where only weak ones exist.
    backend: as in `raster.rasterize`; "numba" sets up, shades and composites alike views together in compiled
    passes (`_shade_and_composite`).
    """
    batch = _check_sources(meshes, textures, modelview)
    modelview = modelview.to(torch.float32).expand(batch, 4, 4)
    compiled = use_kernels(modelview.device, backend)
    # Targets are aggregated a few at a time, which bounds memory whatever the batch (views come one by one).
    group = max(1, _MAX_PIXELS // (size * size))
    parts = []
    with kernel_loop(compiled):
        for start in range(0, batch, group):
            select = slice(start, start + group)
            compositor = Compositor(len(modelview[select]), size, modelview.device)
            views = [map_mesh(mesh, lambda v, select=select: v[select]) for mesh in meshes]
            view_textures = [texture[select].to(torch.float32) for texture in textures]
            if compiled:
                _shade_and_composite(compositor, views, view_textures, modelview[select], size, near, far)
            else:
                for view, texture in zip(views, view_textures, strict=True):
                    shaded = shade_view(view, texture, modelview[select], size, near, far, backend, validate=False)
                    compositor.add(shaded)
            parts.append(compositor.result(near, far))
    if len(parts) == 1:
        return parts[0]
    return AggregateRender(*(torch.cat([getattr(p, name) for p in parts]) for name in vars(parts[0])))


def aggregate_conditions(
    meshes: Sequence[Mesh],
    textures: Sequence[torch.Tensor],
    modelview: torch.Tensor,
    image_size: int,
    geometry: InferenceGeometry = OFFICIAL_GEOMETRY,
    allow_blind: bool = False,
) -> Conditions:
    """Official aggregate_conditions (§3.8) for target cameras modelview (B, 4, 4).

    The aggregation is rendered at image_size·condition_ssaa (the geometry's renderer near, far) and brought
    back to image size: LANCZOS for colour, the centre sample for depth (a z-buffer of the geometry's near, far),
    "more than ¾ of the block" for the two masks. mask also drops depth edges (atol, rtol); mask_rgb must sit
    inside mask eroded by a (2·erode_rgb - 1)² square. depth_convex is the unmasked depth, the free-space hull:
    where only weak samples exist it is the farthest of them.

    A target camera that sees no source view is an error, unless `allow_blind` (sampling a 360° orbit, where
    such a camera gets an empty condition, as officially).
    """
    g, ssaa = geometry, geometry.condition_ssaa
    with kernel_loop(kernels_for(modelview)):  # checks and resampling too: see `forward_backward_warp`
        render = aggregate_render(meshes, textures, modelview, image_size * ssaa, g.renderer_near, g.renderer_far)
        if not allow_blind:
            _check_seen(render)
        color = lanczos_downsample(render.color, image_size, validate=False)
        depth = linear_to_zbuffer(subsample_center(render.depth, ssaa), g.near, g.far)
        mask = coverage_mask(render.mask_depth, ssaa) & depth_edge(depth, g.atol, g.rtol)
        mask_rgb = coverage_mask(render.mask_color, ssaa) & erode(mask, 2 * g.erode_rgb - 1)
        mask, mask_rgb = mask.to(depth.dtype), mask_rgb.to(depth.dtype)
        return Conditions(color=color * mask_rgb, depth=depth * mask, mask=mask, mask_rgb=mask_rgb, depth_convex=depth)


def fusion_render(
    meshes: Sequence[Mesh],
    textures: Sequence[torch.Tensor],
    modelview: torch.Tensor,
    image_size: int,
    geometry: InferenceGeometry = OFFICIAL_GEOMETRY,
) -> FusionFrame:
    """Official free-view fusion rendering (inference/render.py): aggregate all views at image_size·fusion_ssaa
    (official renderer near 0.1, far 200), LANCZOS down to image size, depth and mask at the centre sample.

    Unlike the official code, colour is clipped to [0, 1] before quantisation, so out-of-range values saturate
    instead of wrapping around.
    """
    ssaa, near, far = geometry.fusion_ssaa, geometry.fusion_near, geometry.fusion_far
    with kernel_loop(kernels_for(modelview)):  # checks and resampling too: see `forward_backward_warp`
        render = aggregate_render(meshes, textures, modelview, image_size * ssaa, near, far)
        _check_seen(render)
        color = lanczos_downsample(render.color, image_size, validate=False)
    return FusionFrame(
        color=color, depth=subsample_center(render.depth, ssaa), mask=subsample_center(render.mask_depth, ssaa)
    )


def shade_view(
    mesh: Mesh,
    texture: torch.Tensor,
    modelview: torch.Tensor,
    size: int,
    near: float = 0.01,
    far: float = 200.0,
    backend: Backend = "auto",
    validate: bool = True,
) -> ViewSamples:
    """One view's pass of the official aggregation shader into target cameras modelview (B, 4, 4).

    mesh needs normals; texture: (B, 3, N, N). The nearest fragment of this mesh alone (back-facing padding is
    discarded) gets weight w = max(exp(max(-20·angle, -50)), 1e-4), the angle being between the interpolated
    normal and the direction to the mesh's camera centre; ×1e-8 if eroded (interpolated flag >= 0.999); 1e-16
    if padding (> 0.001) or edge (> 0.999); 0 on back faces, which still occlude. backend, validate: as in `rasterize`.
    """
    discard, attributes = _shading_inputs(mesh)
    fragments = rasterize(
        mesh.position,
        mesh.faces,
        modelview,
        size,
        mesh.fov,
        near,
        far,
        discard_back=discard,
        backend=backend,
        validate=validate,
    )
    values = interpolate(fragments, mesh.faces, attributes, backend=backend).permute(0, 3, 1, 2)  # (B, 11, S, S)
    uv, edge, pad, eroded, normal, position = values.split([2, 1, 1, 1, 3, 3], dim=1)

    color = sample_nearest(texture.to(torch.float32), uv.permute(0, 2, 3, 1))
    to_camera = camera_center(mesh.modelview).to(position)[:, :, None, None] - position
    # Correctly rounded lengths: acos() near 1 turns a one-ulp error into a weight error of 0.7 %.
    lengths = to_camera.square().sum(1, keepdim=True).sqrt_().mul_(normal.square().sum(1, keepdim=True).sqrt_())
    lengths.clamp_(min=1e-30)
    cosine = (to_camera * normal).sum(1, keepdim=True).div_(lengths)
    # The shader's max(-20·angle, -50) before exp() cannot matter after the 1e-4 floor.
    weight = cosine.clamp_(0, 1).acos_().mul_(-ANGLE_FALLOFF).exp_().clamp_(min=MIN_WEIGHT)
    weight = torch.where(eroded >= 0.999, weight * ERODED_FACTOR, weight)
    weight = torch.where((pad > 0.001) | (edge > 0.999), WEAK_WEIGHT, weight).clamp_(min=WEAK_WEIGHT)
    weight = torch.where(fragments.front[:, None], weight, 0)  # empty pixels are not front either
    return ViewSamples(color=color, weight=weight, zbuffer=fragments.zbuffer[:, None])


def _shading_inputs(mesh: Mesh) -> tuple[torch.Tensor, torch.Tensor]:
    """The faces to discard where back-facing (B, F) bool (those touching padding), and the per-vertex attributes
    the shader interpolates (B, V, 11) float32: uv, edge, padding, eroded, normal, position."""
    padding = (mesh.flag & FLAG_PADDING) > 0
    discard = padding.gather(1, mesh.faces.reshape(len(padding), -1)).reshape(mesh.faces.shape).any(-1)
    bits = torch.stack([mesh.flag & FLAG_EDGE, mesh.flag & FLAG_PADDING, mesh.flag & FLAG_ERODED], -1) > 0
    return discard, torch.cat([mesh.uv, bits, mesh.normal, mesh.position], dim=-1).to(torch.float32)


def _shade_and_composite(
    compositor: Compositor,
    meshes: Sequence[Mesh],
    textures: Sequence[torch.Tensor],
    modelview: torch.Tensor,
    size: int,
    near: float,
    far: float,
) -> None:
    """shade_view followed by compositor.add for each view in turn, in compiled passes (CPU, numba): the views
    of each run of alike meshes (`_stackable_runs`) are stacked as one batch, set up together and depth-tested
    and composited band of rows by band."""
    from iterview.geometry import aggregate_kernels, raster_kernels

    batch = len(modelview)
    bands = raster_kernels.band_count(size)
    scratch = (np.empty((batch, size, size), dtype=np.int64), np.empty((batch, size, size), dtype=np.float32))
    color, depth = compositor.color.view(batch, 4, -1), compositor.depth.view(batch, 2, -1)
    counts = compositor.count_color.view(batch, -1), compositor.count_depth.view(batch, -1)
    for first, last in _stackable_runs(meshes, textures):
        mesh = stack_meshes(meshes[first:last])
        faces, uv, flag, normal, position = (
            t.contiguous().numpy() for t in (mesh.faces, mesh.uv, mesh.flag, mesh.normal, mesh.position)
        )
        with raster_kernels.running_on():
            discard = torch.from_numpy(aggregate_kernels.padding_faces(faces, flag))
            targets = modelview.repeat(last - first, 1, 1)  # stacked element v·B + b: view v into target b
            setup = triangle_setup(
                mesh.position, mesh.faces, targets, size, mesh.fov, near, far, torch.ones_like(discard), discard
            )
            aggregate_kernels.draw_and_composite(
                setup.table,
                *raster_kernels.bin_triangles(setup.table, size, batch, last - first, bands, bands),
                setup.planes.numpy(),
                setup.front.numpy(),
                faces,
                aggregate_kernels.shading_attributes(uv, flag, normal, position),
                torch.cat(textures[first:last]).numpy(),
                camera_center(mesh.modelview).to(torch.float32).numpy(),
                *scratch,
                *(t.numpy() for t in (color, depth, *counts)),
                bands,
            )


def _stackable_runs(meshes: Sequence[Mesh], textures: Sequence[torch.Tensor]) -> list[tuple[int, int]]:
    """Runs [first, last) of consecutive views that stack into one batch (the same vertex and face counts, field
    of view and texture size), of up to `_STACKED_FACES` faces in all (at least one view each)."""
    runs, first, faces = [], 0, 0
    for k, mesh in enumerate(meshes):
        faces += mesh.faces.shape[:2].numel()
        if k > first and (faces > _STACKED_FACES or not _stackable(meshes[first], mesh, textures[first], textures[k])):
            runs.append((first, k))
            first, faces = k, mesh.faces.shape[:2].numel()
    return [*runs, (first, len(meshes))]


def _stackable(a: Mesh, b: Mesh, texture_a: torch.Tensor, texture_b: torch.Tensor) -> bool:
    """Whether two views' meshes and textures stack into one batch."""
    return (
        a.position.shape == b.position.shape
        and a.faces.shape == b.faces.shape
        and a.fov == b.fov
        and texture_a.shape == texture_b.shape
    )


class Compositor:
    """The official accumulation (the compute pass after each view), in the views' order.

    Per pixel: Σ rgb·w, Σ w, Σ d·w_d, Σ w_d with w_d = 1 for strong samples (w > 1e-14) and 1e-8 for weak ones,
    a colour counter (w > 1e-6) and a depth counter (strong). While only weak samples have been seen, only the
    farthest of them is kept: the free-space hull.
    """

    def __init__(self, batch: int, size: int, device: torch.device | str = "cpu") -> None:
        self.color = torch.zeros(batch, 4, size, size, device=device)  # Σ rgb·w, Σ w
        self.depth = torch.zeros(batch, 2, size, size, device=device)  # Σ d·w_d, Σ w_d
        self.count_color = torch.zeros(batch, 1, size, size, dtype=torch.int32, device=device)
        self.count_depth = torch.zeros_like(self.count_color)

    def add(self, view: ViewSamples) -> None:
        """Composite one view's samples."""
        weight, zbuffer = view.weight, view.zbuffer
        strong = weight > STRONG_DEPTH
        weak = (weight > 0) & ~strong
        self.count_color += weight > STRONG_COLOR
        self.count_depth += strong
        depth_weight = torch.where(strong, 1.0, torch.where(weak, WEAK_DEPTH_WEIGHT, 0.0))
        color = torch.cat([view.color * weight, weight], dim=1)
        depth = torch.cat([zbuffer * depth_weight, depth_weight], dim=1)
        stored_weight = self.depth[:, 1:]
        hull = weak & (stored_weight > 0) & (stored_weight < 2 * WEAK_DEPTH_WEIGHT)
        replace = hull & (depth[:, :1] > self.depth[:, :1])
        keep = hull & ~replace
        self.color = torch.where(keep, self.color, torch.where(replace, color, self.color + color))
        self.depth = torch.where(keep, self.depth, torch.where(replace, depth, self.depth + depth))

    def result(self, near: float = 0.01, far: float = 200.0) -> AggregateRender:
        """Normalised colour (0 where Σ w = 0), depth linearised with the renderer's (near, far) (near where
        empty) and the two masks (counter > 0)."""
        weight, depth_weight = self.color[:, 3:], self.depth[:, 1:]
        zbuffer = torch.where(depth_weight > 0, self.depth[:, :1] / depth_weight, 0.0)
        return AggregateRender(
            color=torch.where(weight > 0, self.color[:, :3] / weight, 0.0),
            depth=window_to_linear(zbuffer, near, far),
            mask_color=self.count_color > 0,
            mask_depth=self.count_depth > 0,
        )


def _check_seen(render: AggregateRender) -> None:
    blind = ~render.mask_depth.flatten(1).any(1)
    if blind.any():
        elements = blind.nonzero().flatten().tolist()
        raise ValueError(f"the target camera sees none of the source views for batch element(s) {elements}")


def _check_sources(meshes: Sequence[Mesh], textures: Sequence[torch.Tensor], modelview: torch.Tensor) -> int:
    """Validate the source views and target cameras; returns the batch size."""
    if len(meshes) == 0 or len(meshes) != len(textures):
        counts = f"{len(meshes)} meshes and {len(textures)} textures"
        raise ValueError(f"expected at least one view and one texture per mesh, got {counts}")
    batch = meshes[0].position.shape[0]
    for i, (mesh, texture) in enumerate(zip(meshes, textures, strict=True)):
        if mesh.normal is None:
            raise ValueError(f"mesh {i} has no normals: build it with depth_to_mesh(..., compute_normals=True)")
        if mesh.position.shape[0] != batch:
            raise ValueError(f"mesh {i} has batch {mesh.position.shape[0]}, mesh 0 has {batch}")
        if texture.ndim != 4 or texture.shape[:2] != (batch, 3) or texture.shape[-1] != texture.shape[-2]:
            raise ValueError(f"texture {i} must be (B={batch}, 3, N, N), got shape {tuple(texture.shape)}")
        if not torch.isfinite(texture).all():
            raise ValueError(f"texture {i} contains NaN or inf")
    check_modelview(modelview, batch)
    return batch
