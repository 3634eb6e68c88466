import json

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from iterview.geometry.cameras import camera_center, focal_length, linear_to_zbuffer
from iterview.pipeline.scene import Scene
from iterview.pipeline.viewsets import grid_viewset_3x9
from iterview.render.export import export_scene, scene_surface

SIZE = 12


def plane_scene(views=3, step=False):
    """View 0 sees the plane world z = 0 (depth 1); later views are marked fully known, so they add nothing."""
    depth = torch.ones(views, 1, SIZE, SIZE)
    if step:
        depth[0, :, :, SIZE // 2 :] = 2.0
    rgb = torch.rand(views, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    known = torch.ones(views, 1, SIZE, SIZE, dtype=torch.bool)
    known[0] = False
    rgbd = torch.cat([rgb * 2 - 1, linear_to_zbuffer(depth, 0.6, 5.0) * 2 - 1], 1)
    return Scene(rgbd, grid_viewset_3x9().modelviews[:views], known=known)


def test_surface_takes_each_views_own_pixels_at_their_world_positions():
    scene = plane_scene()
    surface = scene_surface(scene)
    assert surface.positions.shape == (SIZE * SIZE, 3)
    assert np.abs(surface.positions[:, 2]).max() < 1e-4  # depth 1 from (0, 0, 1) is the plane z = 0
    assert np.allclose(surface.normals, [0, 0, 1], atol=1e-4)
    expected = (scene.rgbd[0, :3] * 0.5 + 0.5).reshape(3, -1).T.clamp(0, 1) * 255
    assert np.array_equal(surface.colors, expected.to(torch.uint8).numpy())
    assert surface.faces.shape == (2 * (SIZE - 1) ** 2, 3)


def test_surface_drops_depth_discontinuities():
    surface = scene_surface(plane_scene(step=True))
    assert len(surface.positions) < SIZE * SIZE
    z = surface.positions[:, 2]
    spans = z[surface.faces].max(1) - z[surface.faces].min(1)
    assert spans.max() < 0.03  # no triangle stretched across the step


def test_export_writes_point_cloud_meshes_and_nerf_folder(tmp_path):
    scene = plane_scene()
    written = export_scene(scene, tmp_path)
    assert {p.name for p in written} == {"pointcloud.ply", "mesh.ply", "mesh.glb", "nerf"}
    cloud = trimesh.load(tmp_path / "pointcloud.ply", process=False)
    assert len(cloud.vertices) == SIZE * SIZE
    header = (tmp_path / "pointcloud.ply").read_bytes()[:400].decode(errors="replace")
    for field in ("property float nx", "property uchar red"):
        assert field in header  # what 3D Gaussian Splatting reads
    mesh = trimesh.load(tmp_path / "mesh.ply", process=False)
    assert len(mesh.faces) == 2 * (SIZE - 1) ** 2
    glb = trimesh.load(tmp_path / "mesh.glb", force="mesh", process=False)
    assert len(glb.faces) == len(mesh.faces) and glb.visual.vertex_colors.shape[0] == len(glb.vertices)


def test_nerf_folder_uses_opengl_camera_to_world_and_pixel_intrinsics(tmp_path):
    scene = plane_scene()
    export_scene(scene, tmp_path, formats=["nerf"])
    folder = tmp_path / "nerf"
    meta = json.loads((folder / "transforms.json").read_text())
    blender = json.loads((folder / "transforms_train.json").read_text())
    assert len(meta["frames"]) == 3 and len(blender["frames"]) == 3
    assert blender["frames"][1]["file_path"] == "images/view_001"
    assert meta["fl_x"] == pytest.approx(focal_length(45.0) * SIZE) and meta["cx"] == SIZE / 2
    for frame, modelview in zip(meta["frames"], scene.modelviews, strict=True):
        c2w = torch.tensor(frame["transform_matrix"])
        assert torch.allclose(c2w[:3, 3], camera_center(modelview), atol=1e-6)
        assert (folder / frame["file_path"]).is_file()
    depth = np.array(Image.open(folder / meta["frames"][0]["depth_file_path"]))
    assert depth.dtype == np.uint16 and np.abs(depth.astype(int) - 1000).max() <= 1
    # A world point seen by view 0 at pixel (i, j) projects back there with the exported camera (OpenGL axes).
    i, j = 3, 8
    point = scene_surface(scene).positions[i * SIZE + j]
    c2w = np.array(meta["frames"][0]["transform_matrix"])
    x, y, z = (np.linalg.inv(c2w) @ np.append(point, 1))[:3]
    assert meta["cx"] + meta["fl_x"] * x / -z == pytest.approx(j + 0.5, abs=1e-3)
    assert meta["cy"] - meta["fl_y"] * y / -z == pytest.approx(i + 0.5, abs=1e-3)
    image = np.array(Image.open(folder / "images" / "view_000.png"))
    assert image.shape == (SIZE, SIZE, 3)
    assert (folder / "points3d.ply").is_file()


def test_export_rejects_unknown_formats(tmp_path):
    with pytest.raises(ValueError, match="unknown export format"):
        export_scene(plane_scene(), tmp_path, formats=["obj"])
