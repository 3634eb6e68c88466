"""Export a scene to other tools: a coloured point cloud and fused mesh (PLY, GLB via trimesh) and a
NeRF / 3D Gaussian Splatting folder (images, depths, transforms.json)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import trimesh
from PIL import Image

from iterview.geometry.cameras import focal_length
from iterview.geometry.mesh import FLAG_EDGE
from iterview.io import atomic_path, save_png, write_json
from iterview.pipeline.scene import Scene

FORMATS = ("ply", "glb", "nerf")
DEPTH_UNIT = 1e-3  # depth PNGs hold millimetres, nerfstudio's depth_unit_scale_factor


@dataclass
class SurfacePoints:
    """The scene's surface as one vertex set: positions (P, 3) world, colors (P, 3) uint8, normals (P, 3)
    world, faces (F, 3) indices into the points (only faces whose three vertices are kept)."""

    positions: np.ndarray
    colors: np.ndarray
    normals: np.ndarray
    faces: np.ndarray


def scene_surface(scene: Scene) -> SurfacePoints:
    """Fuse the views into one surface: each view contributes the pixels it generated itself (outside the
    aggregation mask, when the scene records it) away from depth discontinuities (the scene geometry's atol,
    rtol), so overlapping views are not stacked twice and occlusion boundaries do not become stretched
    triangles."""
    meshes, textures = scene.meshes(padding=None)
    positions, colors, normals, faces = [], [], [], []
    offset = 0
    for view, (mesh, texture) in enumerate(zip(meshes, textures, strict=True)):
        keep = (mesh.flag[0] & FLAG_EDGE) == 0
        if scene.known is not None:
            keep &= ~scene.known[view].reshape(-1).to(keep.device)
        index = torch.full_like(mesh.flag[0], -1)
        index[keep] = torch.arange(int(keep.sum()), device=keep.device) + offset
        view_faces = index[mesh.faces[0]]
        faces.append(view_faces[(view_faces >= 0).all(dim=1)])
        positions.append(mesh.position[0][keep])
        colors.append(texture[0].reshape(3, -1).T[keep])
        normals.append(torch.nn.functional.normalize(mesh.normal[0][keep], dim=-1))
        offset += int(keep.sum())
    return SurfacePoints(
        torch.cat(positions).cpu().numpy(),
        (torch.cat(colors).clamp(0, 1) * 255).to(torch.uint8).cpu().numpy(),
        torch.cat(normals).cpu().numpy(),
        torch.cat(faces).cpu().numpy(),
    )


def _write_bytes(data: bytes, path: Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def export_point_cloud(surface: SurfacePoints, path: str | Path) -> Path:
    """Binary PLY with x, y, z, nx, ny, nz, red, green, blue (the fields 3D Gaussian Splatting reads)."""
    cloud = trimesh.Trimesh(
        surface.positions,
        np.zeros((0, 3), dtype=np.int64),
        vertex_colors=surface.colors,
        vertex_normals=surface.normals,
        process=False,
    )
    return _write_bytes(trimesh.exchange.ply.export_ply(cloud, encoding="binary", vertex_normal=True), Path(path))


def export_mesh(surface: SurfacePoints, path: str | Path) -> Path:
    """The fused, vertex-coloured triangle mesh as .ply or .glb (by suffix)."""
    path = Path(path)
    mesh = trimesh.Trimesh(surface.positions, surface.faces, vertex_colors=surface.colors, process=False)
    mesh.remove_unreferenced_vertices()
    return _write_bytes(mesh.export(file_type=path.suffix.lstrip(".").lower()), path)


def export_nerf(scene: Scene, directory: str | Path, surface: SurfacePoints | None = None) -> Path:
    """A folder that nerfstudio, instant-ngp and 3D Gaussian Splatting open directly:

    images/view_XXX.png, depths/view_XXX.png (16-bit z-depth in millimetres), transforms.json (nerfstudio /
    instant-ngp: intrinsics in pixels, file paths with extension, depth_file_path), transforms_train.json and
    transforms_test.json (Blender format for 3DGS / NeRF: camera_angle_x, paths without extension) and
    points3d.ply (3DGS initial points). transform_matrix is camera->world in the OpenGL convention that all of
    them expect (x right, y up, looking down -z) — exactly the inverse of our modelviews.
    """
    directory = Path(directory)
    size = scene.rgbd.shape[-1]
    rgb = scene.rgbd[:, :3] * 0.5 + 0.5
    depth_mm = (scene.depth[:, 0] / DEPTH_UNIT).round().clamp(0, 65535).cpu().numpy().astype(np.uint16)
    camera_to_world = torch.linalg.inv(scene.modelviews.double()).tolist()
    frames = []
    for view in range(len(scene)):
        name = f"view_{view:03d}"
        save_png(rgb[view], directory / "images" / f"{name}.png")
        with atomic_path(directory / "depths" / f"{name}.png") as tmp:
            Image.fromarray(depth_mm[view]).save(tmp, format="PNG")
        frames.append({"name": name, "transform_matrix": camera_to_world[view]})
    angle = math.radians(scene.fov)
    nerfstudio = _nerfstudio_transforms(frames, size, scene.fov)
    blender = {
        "camera_angle_x": angle,
        "frames": [{"file_path": f"images/{f['name']}", "transform_matrix": f["transform_matrix"]} for f in frames],
    }
    for name, content in (
        ("transforms.json", nerfstudio),
        ("transforms_train.json", blender),
        ("transforms_test.json", blender),
    ):
        write_json(content, directory / name)
    export_point_cloud(surface if surface is not None else scene_surface(scene), directory / "points3d.ply")
    return directory


def _nerfstudio_transforms(frames: list[dict], size: int, fov: float) -> dict:
    """nerfstudio / instant-ngp transforms.json: pixel intrinsics of a square pinhole camera, image, depth and
    point-cloud paths; frames: {"name", "transform_matrix"} per view."""
    focal, angle = focal_length(fov) * size, math.radians(fov)
    return {
        "camera_model": "OPENCV",
        "w": size,
        "h": size,
        "fl_x": focal,
        "fl_y": focal,
        "cx": size / 2,
        "cy": size / 2,
        "k1": 0.0,
        "k2": 0.0,
        "p1": 0.0,
        "p2": 0.0,
        "camera_angle_x": angle,
        "camera_angle_y": angle,
        "depth_unit_scale_factor": DEPTH_UNIT,
        "ply_file_path": "points3d.ply",
        "frames": [
            {
                "file_path": f"images/{f['name']}.png",
                "depth_file_path": f"depths/{f['name']}.png",
                "transform_matrix": f["transform_matrix"],
            }
            for f in frames
        ],
    }


def export_scene(scene: Scene, output_dir: str | Path, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write the requested formats into output_dir: 'ply' (pointcloud.ply, mesh.ply), 'glb' (mesh.glb),
    'nerf' (nerf/). Returns the paths written."""
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown export format(s) {sorted(unknown)}: expected some of {', '.join(FORMATS)}")
    output_dir = Path(output_dir)
    surface = scene_surface(scene)
    written = []
    if "ply" in formats:
        written.append(export_point_cloud(surface, output_dir / "pointcloud.ply"))
        written.append(export_mesh(surface, output_dir / "mesh.ply"))
    if "glb" in formats:
        written.append(export_mesh(surface, output_dir / "mesh.glb"))
    if "nerf" in formats:
        written.append(export_nerf(scene, output_dir / "nerf", surface))
    return written
