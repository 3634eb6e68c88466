"""Procedural 3D scenes rendered with exact depth: a dataset that needs no download, with ground truth.

A scene is a textured object (box, cone, cylinder or sphere) floating above a textured floor in front of a
textured wall, lit by one directional light with the object's shadow. The world frame is the pipeline's: the
front camera sits at (0, 0, 1) looking at the origin, and the scene is placed as if photographed from a random
camera near the front orbit, so a dataset of front views looks like unposed photos while `SynthScene.render`
gives exact novel views in the frame the sampler uses. Every ray is intersected analytically in torch.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from iterview.data.datasets import DISPARITY_SCALE
from iterview.data.layout import (
    INDEX_FILE,
    DatasetIndex,
    depth_path_for,
    read_index,
    save_depth,
    write_index,
)
from iterview.errors import read_json
from iterview.geometry.cameras import DEFAULT_FOV, focal_length, look_at
from iterview.io import atomic_path, remove_partials
from iterview.seeds import derive_seed

# Sorted, so that the official label rule (sorted class folders) gives label == category index.
CATEGORIES = ("box", "cone", "cylinder", "sphere")
MAX_DEPTH = 1000.0  # the official preprocessing floors disparity at 1e-3, so nothing is farther
META_FILE = "synth.json"
_SKY = (0.55, 0.7, 0.9)
SCENE_STYLES = ("classic", "bench")
_EPS = 1e-6


@dataclass
class Material:
    """Two colours mixed by a solid pattern: 0 checker, 1 stripes along `axis`, 2 waves; `frequency` per unit."""

    colors: torch.Tensor  # (2, 3) in [0, 1]
    kind: int
    frequency: float
    axis: torch.Tensor  # (3,) unit
    phase: torch.Tensor  # (3,)

    def albedo(self, points: torch.Tensor) -> torch.Tensor:
        """points: (..., 3) -> colour (..., 3)."""
        scaled = points * self.frequency + self.phase.to(points)
        if self.kind == 0:
            value = (torch.floor(scaled).sum(-1) % 2).clamp(0, 1)
        elif self.kind == 1:
            value = (torch.sin(math.pi * (scaled * self.axis.to(points)).sum(-1)) > 0).to(points.dtype)
        else:
            value = 0.5 + 0.5 * torch.sin(scaled[..., 0]) * torch.sin(scaled[..., 1] + scaled[..., 2])
        colors = self.colors.to(points)
        return colors[0] + (colors[1] - colors[0]) * value.unsqueeze(-1)


@dataclass
class SynthScene:
    """Analytic primitives (a textured object in front of a textured background), ray-cast exactly.

    Scene frame: object centre at the origin, floor y = floor_y, wall z = wall_z; `scene_from_world` (4, 4)
    maps the pipeline's world frame into it. `size` holds the half extents (box), radius and half height
    (cylinder, cone: base radius, apex up) or radius (sphere); `yaw` turns the object about +y.
    """

    category: int
    size: torch.Tensor  # (3,)
    yaw: float
    floor_y: float
    wall_z: float
    light: torch.Tensor  # (3,) unit, towards the light
    object_material: Material
    floor_material: Material
    wall_material: Material
    scene_from_world: torch.Tensor  # (4, 4)

    def render(
        self, modelview: torch.Tensor, size: int, fov: float = DEFAULT_FOV, ssaa: int = 3
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """modelview: (V, 4, 4) -> rgb (V, 3, S, S) in [0, 1], linear depth (V, 1, S, S) along -z.

        Colour averages ssaa × ssaa rays per pixel; depth is that of the pixel-centre ray (ssaa must be odd),
        capped at MAX_DEPTH where a ray meets nothing.
        """
        if modelview.ndim != 3 or modelview.shape[1:] != (4, 4):
            raise ValueError(f"expected modelview of shape (V, 4, 4), got {tuple(modelview.shape)}")
        if ssaa < 1 or ssaa % 2 == 0:
            raise ValueError(f"ssaa must be a positive odd number, got {ssaa}")
        views, grid = modelview.shape[0], size * ssaa
        origins, directions = _camera_rays(modelview.float(), grid, fov)
        transform = self.scene_from_world.to(origins)
        origins = origins @ transform[:3, :3].T + transform[:3, 3]
        directions = directions @ transform[:3, :3].T
        color, depth = self._trace(origins.reshape(-1, 3), directions.reshape(-1, 3))
        color = color.reshape(views, grid, grid, 3).permute(0, 3, 1, 2)
        depth = depth.reshape(views, 1, grid, grid)
        centre = ssaa // 2
        return F.avg_pool2d(color, ssaa).clamp(0, 1), depth[:, :, centre::ssaa, centre::ssaa].contiguous()

    def _yaw_rotation(self, like: torch.Tensor) -> torch.Tensor:
        """Object -> scene rotation about +y by `yaw`. (3, 3)"""
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        return torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]], dtype=like.dtype, device=like.device)

    def _object_t(self, origins: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
        """Ray parameter of the nearest object hit, inf if none. origins, directions: (N, 3) scene frame."""
        rotation = self._yaw_rotation(origins)
        return _INTERSECT[CATEGORIES[self.category]](origins @ rotation, directions @ rotation, self.size.to(origins))

    def _shade(self, surface: int, points: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
        """Lambert-shaded colour (N, 3) of hits on one surface (0 object, 1 floor, 2 wall), with object shadows."""
        if surface == 0:
            rotation = self._yaw_rotation(points)
            local = points @ rotation
            normals = _NORMAL[CATEGORIES[self.category]](local, self.size.to(points)) @ rotation.T
            albedo = self.object_material.albedo(local)
        else:
            normals = torch.zeros_like(points)
            normals[:, surface] = 1.0
            albedo = (self.floor_material if surface == 1 else self.wall_material).albedo(points)
        normals = torch.where((normals * directions).sum(-1, keepdim=True) > 0, -normals, normals)
        light = self.light.to(points)
        lambert = (normals @ light).clamp(min=0)
        if surface != 0:
            shadowed = torch.isfinite(self._object_t(points + 1e-4 * normals, light.expand_as(points)))
            lambert = lambert.masked_fill(shadowed, 0.0)
        return albedo * (0.35 + 0.65 * lambert).unsqueeze(-1)

    def _trace(self, origins: torch.Tensor, directions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rays (N, 3) in the scene frame, directions with camera z = -1 -> colour (N, 3), z-depth (N,)."""
        t_all = torch.stack(
            [
                self._object_t(origins, directions),
                _plane(origins[:, 1], directions[:, 1], self.floor_y),
                _plane(origins[:, 2], directions[:, 2], self.wall_z),
            ]
        )
        t, which = t_all.min(0)
        which = which.masked_fill(~torch.isfinite(t), -1)
        color = torch.tensor(_SKY, dtype=origins.dtype, device=origins.device).repeat(len(t), 1)
        for surface in range(3):
            hit = which == surface
            rays = directions[hit]
            color[hit] = self._shade(surface, origins[hit] + t[hit].unsqueeze(-1) * rays, rays)
        return color, t.clamp(max=MAX_DEPTH)


def _camera_rays(modelview: torch.Tensor, grid: int, fov: float) -> tuple[torch.Tensor, torch.Tensor]:
    """World-space ray origins (V, G, G, 3) and directions whose camera-space z is -1, so t is the z-depth."""
    focal = focal_length(fov)
    centres = (torch.arange(grid, dtype=modelview.dtype, device=modelview.device) + 0.5) / grid
    y, x = torch.meshgrid((0.5 - centres) / focal, (centres - 0.5) / focal, indexing="ij")
    camera = torch.stack([x, y, -torch.ones_like(x)], dim=-1)
    world_from_camera = torch.linalg.inv(modelview)
    directions = torch.einsum("vij,hwj->vhwi", world_from_camera[:, :3, :3], camera)
    origins = world_from_camera[:, None, None, :3, 3].expand_as(directions)
    return origins, directions


def _plane(origin: torch.Tensor, direction: torch.Tensor, level: float) -> torch.Tensor:
    """Ray parameter where one coordinate reaches `level`; inf if behind or parallel. (N,) -> (N,)."""
    t = (level - origin) / torch.where(direction.abs() < 1e-12, torch.full_like(direction, 1e-12), direction)
    return torch.where(t > _EPS, t, torch.full_like(t, math.inf))


def _first_positive(*candidates: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Smallest t > eps among (t, valid) pairs; inf where none is valid."""
    best = None
    for t, valid in candidates:
        t = torch.where(valid & (t > _EPS) & torch.isfinite(t), t, torch.full_like(t, math.inf))
        best = t if best is None else torch.minimum(best, t)
    return best


def _quadratic(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both real roots of a t² + b t + c (nan where none; the linear root where a ≈ 0)."""
    disc = b * b - 4 * a * c
    root = torch.sqrt(disc.clamp(min=0))
    # The numerically stable form avoids cancellation between -b and the root.
    q = -0.5 * (b + torch.where(b >= 0, root, -root))
    safe_q = torch.where(q.abs() < 1e-20, torch.full_like(q, 1e-20), q)
    linear = torch.abs(a) < 1e-12
    safe_a = torch.where(linear, torch.ones_like(a), a)
    t0 = torch.where(linear, -c / torch.where(b.abs() < 1e-20, torch.full_like(b, 1e-20), b), q / safe_a)
    t1 = torch.where(linear, t0, c / safe_q)
    none = (disc < 0) & ~linear
    return t0.masked_fill(none, math.nan), t1.masked_fill(none, math.nan)


def _hit_sphere(o: torch.Tensor, d: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    t0, t1 = _quadratic((d * d).sum(-1), 2 * (o * d).sum(-1), (o * o).sum(-1) - size[0] ** 2)
    always = torch.ones_like(t0, dtype=torch.bool)
    return _first_positive((t0, always), (t1, always))


def _hit_box(o: torch.Tensor, d: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    safe = torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)
    t1, t2 = (-size - o) / safe, (size - o) / safe
    t_near = torch.minimum(t1, t2).amax(-1)
    t_far = torch.maximum(t1, t2).amin(-1)
    return _first_positive((t_near, t_far >= t_near))


def _hit_cylinder(o: torch.Tensor, d: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    radius, half = size[0], size[1]
    ox, oy, oz, dx, dy, dz = o[:, 0], o[:, 1], o[:, 2], d[:, 0], d[:, 1], d[:, 2]
    t0, t1 = _quadratic(dx * dx + dz * dz, 2 * (ox * dx + oz * dz), ox * ox + oz * oz - radius**2)
    candidates = [(t, (oy + t * dy).abs() <= half) for t in (t0, t1)]
    for level in (-half, half):
        t = _plane(oy, dy, float(level))
        inside = (ox + t.clamp(max=MAX_DEPTH) * dx) ** 2 + (oz + t.clamp(max=MAX_DEPTH) * dz) ** 2 <= radius**2
        candidates.append((t, inside))
    return _first_positive(*candidates)


def _hit_cone(o: torch.Tensor, d: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    radius, half = size[0], size[1]
    k2 = (radius / (2 * half)) ** 2
    ox, oy, oz, dx, dy, dz = o[:, 0], o[:, 1], o[:, 2], d[:, 0], d[:, 1], d[:, 2]
    below_apex = half - oy  # x² + z² = k² (half - y)² with y = oy + t dy
    a = dx * dx + dz * dz - k2 * dy * dy
    b = 2 * (ox * dx + oz * dz) + 2 * k2 * below_apex * dy
    c = ox * ox + oz * oz - k2 * below_apex**2
    t0, t1 = _quadratic(a, b, c)
    candidates = [(t, (oy + t * dy).abs() <= half) for t in (t0, t1)]
    t = _plane(oy, dy, float(-half))
    inside = (ox + t.clamp(max=MAX_DEPTH) * dx) ** 2 + (oz + t.clamp(max=MAX_DEPTH) * dz) ** 2 <= radius**2
    candidates.append((t, inside))
    return _first_positive(*candidates)


def _normal_sphere(p: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    return F.normalize(p, dim=-1)


def _normal_box(p: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    scaled = p / size
    face = scaled.abs().argmax(-1, keepdim=True)
    return torch.zeros_like(p).scatter(-1, face, torch.sign(scaled.gather(-1, face)))


def _normal_cylinder(p: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    side = F.normalize(p * p.new_tensor([1.0, 0.0, 1.0]), dim=-1)
    cap = torch.zeros_like(p)
    cap[:, 1] = torch.sign(p[:, 1])
    return torch.where((p[:, 1].abs() >= size[1] - 1e-4).unsqueeze(-1), cap, side)


def _normal_cone(p: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    k2 = (size[0] / (2 * size[1])) ** 2
    side = F.normalize(torch.stack([p[:, 0], k2 * (size[1] - p[:, 1]), p[:, 2]], dim=-1), dim=-1)
    base = p.new_tensor([0.0, -1.0, 0.0]).expand_as(p)
    return torch.where((p[:, 1] <= -size[1] + 1e-4).unsqueeze(-1), base, side)


_INTERSECT = {"box": _hit_box, "cone": _hit_cone, "cylinder": _hit_cylinder, "sphere": _hit_sphere}
_NORMAL = {"box": _normal_box, "cone": _normal_cone, "cylinder": _normal_cylinder, "sphere": _normal_sphere}


def _uniform(generator: torch.Generator, low: float, high: float, shape: tuple[int, ...] = ()) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator)


def _random_material(
    generator: torch.Generator, low_frequency: float, high_frequency: float, kinds: tuple[int, ...] = (0, 1, 2)
) -> Material:
    colors = _uniform(generator, 0.05, 0.95, (2, 3))
    kind = kinds[int(torch.randint(len(kinds), (), generator=generator))]
    return Material(
        colors=colors,
        kind=kind,
        frequency=float(_uniform(generator, low_frequency, high_frequency)),
        axis=F.normalize(torch.randn(3, generator=generator), dim=0),
        phase=_uniform(generator, 0.0, 2 * math.pi, (3,)),
    )


def _object_size(generator: torch.Generator, name: str, style: str) -> torch.Tensor:
    """Half extents (box), radius (sphere) or (radius, half height, 0) (cone, cylinder)."""
    large = style == "bench"
    if name == "box":
        return _uniform(generator, *((0.14, 0.21) if large else (0.1, 0.2)), (3,))
    if name == "sphere":
        return _uniform(generator, *((0.22, 0.3) if large else (0.18, 0.3))).repeat(3)
    radius = _uniform(generator, *((0.16, 0.22) if large else (0.12, 0.22)))
    half_height = _uniform(generator, *((0.2, 0.28) if large else (0.14, 0.25)))
    return torch.stack([radius, half_height, torch.tensor(0.0)])


def _materials(generator: torch.Generator, style: str) -> list[Material]:
    """Object, floor and wall materials. `bench`: a vivid object with a soft shade wave, and soft stripes or
    waves of low frequency behind it, so a small model can learn the shapes; `classic`: any pattern, finer."""
    if style == "classic":
        return [
            _random_material(generator, 4, 12),
            _random_material(generator, 2, 8),
            _random_material(generator, 1.5, 6),
        ]
    thing = _random_material(generator, 1.0, 3.0, kinds=(2,))
    base = _uniform(generator, 0.0, 1.0, (3,))
    base = 0.15 + 0.8 * (base - base.min()) / (base.max() - base.min()).clamp(min=1e-3)  # saturated
    thing.colors = torch.stack([base, 0.6 * base])
    floor = _random_material(generator, 1.5, 3.0, kinds=(1, 2))
    wall = _random_material(generator, 1.0, 2.5, kinds=(2,))
    for material in (floor, wall):  # muted: two nearby colours
        material.colors = 0.25 + 0.5 * material.colors[0] + torch.stack([torch.zeros(3), 0.25 * material.colors[1]])
    return [thing, floor, wall]


def random_scene(generator: torch.Generator, category: int | None = None, style: str = "classic") -> SynthScene:
    """Draw one scene (and its category when None) in a style of SCENE_STYLES.

    Sizes keep the object within 0.4 of its centre and the photo camera 0.92–1.15 from it, with the floor
    0.5–0.8 below: nothing is closer than 0.5 to the front camera, so the official preprocessing of the stored
    disparity (rescaling only maps nearer than 0.5) returns the true z-buffer. The floor is that low because the
    official discontinuity tests (|Δz| and |Δ(1/z)| > 0.02 between neighbours) cut a floor seen from a height h
    whenever h · focal_px < 50 or so: about h < 0.65 at 64 px, h < 0.32 at 128 px.
    """
    if style not in SCENE_STYLES:
        raise ValueError(f"unknown scene style {style!r}; choose one of {SCENE_STYLES}")
    if category is None:
        category = int(torch.randint(len(CATEGORIES), (), generator=generator))
    if not 0 <= category < len(CATEGORIES):
        raise ValueError(f"category must be in [0, {len(CATEGORIES)}), got {category}")
    name = CATEGORIES[category]
    size = _object_size(generator, name, style)
    half_height = float(size[1])
    extent = float(size.norm()) if name == "box" else float(max(size[0], size[1]))
    floor_y = -max(half_height + 0.1, float(_uniform(generator, 0.5, 0.8)))
    wall_z = -(extent + float(_uniform(generator, 0.15, 1.0)))
    light = F.normalize(
        torch.stack([_uniform(generator, -1, 1), _uniform(generator, 0.5, 1.5), _uniform(generator, 0.3, 1.2)]), dim=0
    )
    yaw = float(_uniform(generator, -math.pi, math.pi))
    materials = _materials(generator, style)
    photo_yaw = float(_uniform(generator, -0.6, 0.6))
    photo_pitch = float(_uniform(generator, -0.1, 0.35))
    radius = float(_uniform(generator, 0.92, 1.15))
    target = _uniform(generator, -0.03, 0.03, (3,)) / math.sqrt(3)
    eye = radius * torch.tensor(
        [
            math.cos(photo_pitch) * math.sin(photo_yaw),
            math.sin(photo_pitch),
            math.cos(photo_pitch) * math.cos(photo_yaw),
        ]
    )
    # World points seen by the front camera land where the photo camera sees them in the scene frame.
    scene_from_world = torch.linalg.inv(look_at(eye, target)) @ front_camera()[0]
    return SynthScene(category, size, yaw, floor_y, wall_z, light, *materials, scene_from_world)


def scene_for_index(seed: int, index: int, style: str = "classic") -> SynthScene:
    """The scene behind image `index` of a synth dataset written with `seed` and `style` (for ground truth)."""
    return random_scene(torch.Generator().manual_seed(derive_seed(seed, index)), style=style)


def front_camera() -> torch.Tensor:
    """The pipeline's view-0 modelview: lookAt((0, 0, 1) -> origin). (1, 4, 4)."""
    return look_at(torch.tensor([0.0, 0.0, 1.0]), torch.zeros(3))[None]


def write_synth_dataset(
    out_dir: str | Path, count: int, image_size: int = 64, seed: int = 0, style: str = "classic"
) -> Path:
    """Write `count` front views in the official ImageNet-style layout (class folders -> labels),
    depth saved as official-scale disparity (fp16, key arr_0). Resumable; never shrinks a dataset written with a
    larger count."""
    if count < 1 or image_size < 1:
        raise ValueError(f"count and image_size must be positive, got count={count}, image_size={image_size}")
    root = Path(out_dir)
    meta = {"seed": seed, "image_size": image_size, "style": style, "fov": DEFAULT_FOV, "categories": list(CATEGORIES)}
    meta_path = root / META_FILE
    if meta_path.is_file():
        previous = read_json(meta_path, "synth record")
        previous = {"style": "classic"} | (previous if isinstance(previous, dict) else {})
        clash = {key: previous[key] for key in ("seed", "image_size", "style") if previous.get(key) != meta[key]}
        if clash:
            raise ValueError(f"{root} already holds a synth dataset with {clash}; use another folder to change them")
        if (root / INDEX_FILE).is_file():  # a smaller count never shrinks a finished dataset
            count = max(count, len(read_index(root).images))
    root.mkdir(parents=True, exist_ok=True)
    remove_partials(root)
    with atomic_path(meta_path) as tmp:
        tmp.write_text(json.dumps({**meta, "count": count}, indent=1))
    camera = front_camera()
    images = []
    for index in tqdm(range(count), desc="synth", unit="img"):
        scene = scene_for_index(seed, index, style)
        image = f"images/{CATEGORIES[scene.category]}/{index:06d}.png"
        images.append(image)
        depth_file = root / depth_path_for(image)
        if depth_file.is_file() and (root / image).is_file():
            continue
        rgb, depth = scene.render(camera, image_size)
        pixels = (rgb[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        with atomic_path(root / image) as tmp:
            Image.fromarray(pixels).save(tmp, format="PNG")
        save_depth(depth_file, (DISPARITY_SCALE / depth[0, 0]).numpy().astype(np.float32))
    labels = {name: i for i, name in enumerate(CATEGORIES)}
    write_index(root, DatasetIndex(images, [depth_path_for(p) for p in images], labels))
    return root
