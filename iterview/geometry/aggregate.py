"""Aggregation compositor (official AggregationRenderer) and inference conditions.

Each source view's mesh is rasterised alone into the target camera (its own z-test), its fragments are weighted
by how squarely the surface faced that view's camera, and the views are composited pixel by pixel in list order
with the official strong / weak / eroded rules (§3.5). There is no z-test across views.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from iterview.geometry.cameras import camera_center, linear_to_zbuffer
from iterview.geometry.imageops import coverage_mask, depth_edge, erode, lanczos_downsample, subsample_center
from iterview.geometry.mesh import FLAG_EDGE, FLAG_ERODED, FLAG_PADDING, Mesh
from iterview.geometry.raster import interpolate, rasterize, sample_nearest, window_to_linear

# Official aggregation shader constants.
ANGLE_FALLOFF = 20.0  # w = exp(-20 · angle between the normal and the direction to the source camera)
MIN_WEIGHT = 1e-4
ERODED_FACTOR = 1e-8
WEAK_WEIGHT = 1e-16  # edge and padding fragments
STRONG_DEPTH = 1e-14  # w above this counts for depth and the depth mask
STRONG_COLOR = 1e-6  # w above this counts for the colour mask
WEAK_DEPTH_WEIGHT = 1e-8


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


def aggregate_render(
    meshes: Sequence[Mesh],
    textures: Sequence[torch.Tensor],
    modelview: torch.Tensor,
    size: int,
    near: float = 0.01,
    far: float = 200.0,
) -> AggregateRender:
    """Blend every source view's mesh (each textures[i]: (B, 3, N, N)) into the target cameras (B, 4, 4).

    Meshes need normals (``depth_to_mesh(..., compute_normals=True)``). Per view and pixel the nearest fragment
    of that view gets weight w = max(exp(max(-20·angle, -50)), 1e-4), ×1e-8 if eroded, 1e-16 if edge or
    padding, 0 on back faces (back-facing padding is discarded). Colour is the w-weighted mean; depth the mean of
    GL window depths over strong samples (w > 1e-14), or the farthest weak sample where only weak ones exist.
    """
    batch = _check_sources(meshes, textures, modelview)
    modelview = modelview.to(torch.float32).expand(batch, 4, 4)
    state = _Accumulator.empty(batch, size, modelview.device)
    for mesh, texture in zip(meshes, textures, strict=True):
        state.add(*_shade_view(mesh, texture.to(torch.float32), modelview, size, near, far))
    return state.result(batch, size, near, far)


def aggregate_conditions(
    meshes: Sequence[Mesh],
    textures: Sequence[torch.Tensor],
    modelview: torch.Tensor,
    image_size: int,
    ssaa: int = 3,
    near: float = 0.6,
    far: float = 5.0,
    atol: float = 0.03,
    rtol: float = 0.03,
    erode_rgb: int = 3,
    renderer_near: float = 0.01,
    renderer_far: float = 200.0,
) -> Conditions:
    """Official aggregate_conditions (§3.8) for target cameras modelview (B, 4, 4).

    The aggregation is rendered at image_size·ssaa and brought back to image size: LANCZOS for colour, the
    centre sample for depth, "more than ¾ of the block" for the two masks. mask also drops depth edges
    (atol, rtol); mask_rgb must sit inside mask eroded by a (2·erode_rgb - 1)² square. depth_convex is the
    unmasked depth, the free-space hull: where only weak samples exist it is the farthest of them.
    """
    if isinstance(erode_rgb, bool) or not isinstance(erode_rgb, int) or erode_rgb < 1:
        raise ValueError(f"erode_rgb must be an integer >= 1, got {erode_rgb!r}")
    render = aggregate_render(meshes, textures, modelview, image_size * ssaa, renderer_near, renderer_far)
    seen = render.mask_depth.flatten(1).any(1)
    if not seen.all():
        raise ValueError(
            f"the target camera sees none of the source views for batch element(s) {seen.logical_not().nonzero().flatten().tolist()}"
        )
    color = lanczos_downsample(render.color, image_size)
    depth = linear_to_zbuffer(subsample_center(render.depth, ssaa), near, far)
    mask = coverage_mask(render.mask_depth, ssaa) & depth_edge(depth, atol, rtol)
    mask_rgb = coverage_mask(render.mask_color, ssaa) & erode(mask, 2 * erode_rgb - 1)
    mask, mask_rgb = mask.to(depth.dtype), mask_rgb.to(depth.dtype)
    return Conditions(color=color * mask_rgb, depth=depth * mask, mask=mask, mask_rgb=mask_rgb, depth_convex=depth)


def fusion_render(
    meshes: Sequence[Mesh],
    textures: Sequence[torch.Tensor],
    modelview: torch.Tensor,
    image_size: int,
    ssaa: int = 5,
    near: float = 0.1,
    far: float = 200.0,
) -> FusionFrame:
    """Official free-view fusion rendering (inference/render.py): aggregate all views at image_size·ssaa
    (renderer near 0.1, far 200), LANCZOS down to image size, depth and mask at the centre sample.

    Unlike the official code, colour is clipped to [0, 1] before quantisation, so out-of-range values saturate
    instead of wrapping around.
    """
    render = aggregate_render(meshes, textures, modelview, image_size * ssaa, near, far)
    return FusionFrame(
        color=lanczos_downsample(render.color, image_size),
        depth=subsample_center(render.depth, ssaa),
        mask=subsample_center(render.mask_depth, ssaa),
    )


def _shade_view(
    mesh: Mesh, texture: torch.Tensor, modelview: torch.Tensor, size: int, near: float, far: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One view's pass of the official aggregation shader: per pixel (B, S²) colour (3, B, S²), weight w and
    window depth. Empty pixels and back faces have w = 0."""
    padding = (mesh.flag & FLAG_PADDING) > 0
    discard = padding.gather(1, mesh.faces.reshape(len(padding), -1)).reshape(mesh.faces.shape).any(-1)
    fragments = rasterize(mesh.position, mesh.faces, modelview, size, mesh.fov, near, far, discard_back=discard)
    bits = torch.stack([mesh.flag & FLAG_EDGE, mesh.flag & FLAG_PADDING, mesh.flag & FLAG_ERODED], -1) > 0
    attributes = torch.cat([mesh.uv, bits, mesh.normal, mesh.position], dim=-1).to(torch.float32)
    uv, (edge, pad, eroded), normal, position = _split(interpolate(fragments, mesh.faces, attributes))

    color = sample_nearest(texture, uv.permute(1, 2, 3, 0)).transpose(0, 1).flatten(2)  # (3, B, S²)
    to_camera = camera_center(mesh.modelview).to(position).T[:, :, None, None] - position
    cosine = (to_camera * normal).sum(0) / (to_camera.norm(dim=0) * normal.norm(dim=0)).clamp_(min=1e-30)
    weight = torch.exp(torch.acos(cosine.clamp_(0, 1)).mul_(-ANGLE_FALLOFF).clamp_(min=-50)).clamp_(min=MIN_WEIGHT)
    weight = torch.where(eroded >= 0.999, weight * ERODED_FACTOR, weight)
    weight = torch.where((pad > 0.001) | (edge > 0.999), WEAK_WEIGHT, weight).clamp_(min=WEAK_WEIGHT)
    weight = torch.where(fragments.front, weight, 0)  # empty pixels are not front
    return color, weight.flatten(1), fragments.zbuffer.flatten(1)


def _split(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, S, S, 11) interpolated attributes -> channel-first uv (2, ...), flags (3, ...), normal, position."""
    channels = values.permute(3, 0, 1, 2)
    return channels[0:2], channels[2:5], channels[5:8], channels[8:11]


@dataclass
class _Accumulator:
    """The official accumulation images, flat per pixel (B, S²): Σ rgb·w, Σ w, Σ d·w_d, Σ w_d, two counters."""

    color: torch.Tensor  # (3, B, S²)
    weight: torch.Tensor
    depth: torch.Tensor
    depth_weight: torch.Tensor
    count_color: torch.Tensor
    count_depth: torch.Tensor

    @classmethod
    def empty(cls, batch: int, size: int, device: torch.device) -> _Accumulator:
        zeros = torch.zeros(4, batch, size * size, device=device)
        counts = torch.zeros(2, batch, size * size, dtype=torch.int32, device=device)
        return cls(zeros[:3], zeros[3], zeros[3].clone(), zeros[3].clone(), counts[0], counts[1])

    def add(self, color: torch.Tensor, weight: torch.Tensor, zbuffer: torch.Tensor) -> None:
        """Composite one view's fragments (the official compute pass)."""
        strong = weight > STRONG_DEPTH
        weak = (weight > 0) & ~strong
        self.count_color += weight > STRONG_COLOR
        self.count_depth += strong
        # While only weak samples have been seen, keep just the farthest one (a hull of free space).
        only_weak = (self.depth_weight > 0) & (self.depth_weight < 2 * WEAK_DEPTH_WEIGHT) & weak
        weak_depth = zbuffer * WEAK_DEPTH_WEIGHT
        replace = only_weak & (weak_depth > self.depth)
        add = ~only_weak
        depth_weight = torch.where(strong, 1.0, torch.where(weak, WEAK_DEPTH_WEIGHT, 0.0))
        self.depth = torch.where(replace, weak_depth, torch.where(add, self.depth + zbuffer * depth_weight, self.depth))
        self.depth_weight = torch.where(
            replace, WEAK_DEPTH_WEIGHT, torch.where(add, self.depth_weight + depth_weight, self.depth_weight)
        )
        self.color = torch.where(replace, color * weight, torch.where(add, self.color + color * weight, self.color))
        self.weight = torch.where(replace, weight, torch.where(add, self.weight + weight, self.weight))

    def result(self, batch: int, size: int, near: float, far: float) -> AggregateRender:
        color = torch.where(self.weight > 0, self.color / self.weight, 0.0)
        zbuffer = torch.where(self.depth_weight > 0, self.depth / self.depth_weight, 0.0)
        shape = (batch, 1, size, size)
        return AggregateRender(
            color=color.transpose(0, 1).reshape(batch, 3, size, size),
            depth=window_to_linear(zbuffer, near, far).reshape(shape),
            mask_color=(self.count_color > 0).reshape(shape),
            mask_depth=(self.count_depth > 0).reshape(shape),
        )


def _check_sources(meshes: Sequence[Mesh], textures: Sequence[torch.Tensor], modelview: torch.Tensor) -> int:
    """Validate the source views and target cameras; returns the batch size."""
    if len(meshes) == 0 or len(meshes) != len(textures):
        raise ValueError(
            f"expected one texture per mesh and at least one view, got {len(meshes)} meshes and {len(textures)} textures"
        )
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
    if (
        modelview.shape[-2:] != (4, 4)
        or modelview.ndim not in (2, 3)
        or (modelview.ndim == 3 and len(modelview) != batch)
    ):
        raise ValueError(f"modelview must be (B={batch}, 4, 4) or (4, 4), got shape {tuple(modelview.shape)}")
    if not torch.isfinite(modelview).all():
        raise ValueError("modelview contains NaN or inf")
    return batch
