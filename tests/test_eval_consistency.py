"""3D consistency metrics: ~perfect on views of one true 3D scene, worse when a view is shifted."""

from __future__ import annotations

import pytest
import torch

from iterview.data.synth import random_scene
from iterview.eval.consistency import folder_consistency, ground_truth_error, nearest_views, scene_consistency
from iterview.geometry.cameras import linear_to_zbuffer, orbit_camera
from iterview.pipeline.scene import Scene
from iterview.pipeline.viewsets import grid_viewset_3x9

SIZE = 32


def _true_scene(seed: int = 1) -> tuple[Scene, torch.Tensor, torch.Tensor]:
    """Five views (centre and its four 0.15-rad neighbours) of one synthetic scene, with its true renders."""
    yaw = torch.tensor([0.0, 0.15, -0.15, 0.0, 0.0])
    pitch = torch.tensor([0.0, 0.0, 0.0, 0.15, -0.15])
    modelviews = orbit_camera(yaw, pitch)
    rgb, depth = random_scene(torch.Generator().manual_seed(seed)).render(modelviews, SIZE)
    rgbd = torch.cat([rgb, linear_to_zbuffer(depth, 0.6, 5.0)], dim=1) * 2 - 1
    return Scene(rgbd, modelviews), rgb, depth


@pytest.fixture(scope="module")
def true_scene() -> tuple[Scene, torch.Tensor, torch.Tensor]:
    return _true_scene()


def test_nearest_views_of_the_3x9_centre_are_its_four_grid_neighbours():
    near = nearest_views(grid_viewset_3x9().modelviews, 4)
    assert near.shape == (27, 4)
    assert set(near[0].tolist()) == {1, 2, 3, 6}  # pitch ±0.15 at yaw 0, yaw ±0.15 at pitch 0


def test_views_of_one_true_scene_are_nearly_perfectly_consistent(true_scene):
    scene, _, depth = true_scene
    assert depth.max() < 5.0  # nothing beyond the depth channel's far plane
    result = scene_consistency(scene, neighbours=4)
    assert result.depth_absrel < 0.01
    assert result.psnr > 28
    assert result.coverage > 0.8
    assert len(result.view_psnr) == 5 and min(result.view_coverage) > 0.6


def test_a_shifted_view_degrades_consistency(true_scene):
    scene, _, _ = true_scene
    baseline = scene_consistency(scene, neighbours=4)
    rgbd = scene.rgbd.clone()
    rgbd[1] = torch.roll(rgbd[1], shifts=3, dims=-1)  # view 1 no longer matches its camera
    shifted = scene_consistency(Scene(rgbd, scene.modelviews), neighbours=4)
    assert shifted.psnr < baseline.psnr - 3
    assert shifted.depth_absrel > 2 * baseline.depth_absrel
    assert shifted.view_psnr[1] < baseline.view_psnr[1] - 3
    assert shifted.view_psnr[1] == min(shifted.view_psnr)


def test_ground_truth_error_is_zero_for_the_truth_and_grows_with_a_shift(true_scene):
    scene, rgb, depth = true_scene
    exact = ground_truth_error(scene, rgb, depth)
    assert exact["psnr"] > 60 and exact["depth_absrel"] < 1e-4
    rgbd = scene.rgbd.clone()
    rgbd[1:] = torch.roll(rgbd[1:], shifts=2, dims=-1)
    shifted = ground_truth_error(Scene(rgbd, scene.modelviews), rgb, depth)
    assert shifted["psnr"] < 30 and shifted["depth_absrel"] > 10 * exact["depth_absrel"]
    with pytest.raises(ValueError, match="must match the scene's views"):
        ground_truth_error(scene, rgb[:2], depth)


def test_folder_consistency_reads_saved_scenes(tmp_path, true_scene):
    scene, _, _ = true_scene
    scene.save(tmp_path / "scenes" / "scene_a")
    Scene(scene.rgbd[:3], scene.modelviews[:3]).save(tmp_path / "scenes" / "scene_b")
    result = folder_consistency(tmp_path / "scenes", neighbours=2, progress=False)
    assert result["scenes"] == 2 and result["depth_absrel"] < 0.01 and result["psnr"] > 28
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no scenes"):
        folder_consistency(tmp_path / "empty", progress=False)
    with pytest.raises(ValueError, match="at least 2 views"):
        scene_consistency(Scene(scene.rgbd[:1], scene.modelviews[:1]))
