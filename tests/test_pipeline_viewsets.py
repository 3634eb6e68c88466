import json
import math

import pytest
import torch

from iterview.geometry.cameras import camera_center, orbit_camera
from iterview.pipeline.viewsets import (
    GRID_3X9,
    PITCHES_3X9,
    YAWS_3X9,
    grid_viewset_3x9,
    load_cameras,
    make_viewset,
    orbit_viewset,
    random_viewset,
    swing_viewset,
    viewset_name,
)
from iterview.render.video import swing_trajectory


def yaw_pitch(modelviews):
    """Recover (yaw, pitch) of orbit cameras from their centres."""
    eye = camera_center(modelviews)
    return torch.atan2(eye[..., 0], eye[..., 2]), torch.asin(eye[..., 1] / eye.norm(dim=-1))


def test_3x9_follows_the_official_order():
    viewset = grid_viewset_3x9()
    yaw, pitch = yaw_pitch(viewset.modelviews)
    assert len(viewset) == 27
    for k in range(27):
        assert yaw[k].item() == pytest.approx(YAWS_3X9[k // 3], abs=1e-6)
        assert pitch[k].item() == pytest.approx(PITCHES_3X9[k % 3], abs=1e-6)
    assert torch.allclose(viewset.modelviews[0], orbit_camera(0.0, 0.0), atol=1e-7)
    assert yaw[1].item() == pytest.approx(0) and pitch[1].item() == pytest.approx(0.15)  # k = 1: (0, 0.15)
    assert yaw[26].item() == pytest.approx(-0.6) and pitch[26].item() == pytest.approx(-0.15)


def test_3x9_grid_display_order():
    assert GRID_3X9[1][4] == 0
    assert sorted(i for row in GRID_3X9 for i in row) == list(range(27))
    yaw, pitch = yaw_pitch(grid_viewset_3x9().modelviews)
    for row, expected_pitch in zip(GRID_3X9, (-0.15, 0.0, 0.15), strict=True):
        assert torch.allclose(pitch[list(row)], torch.tensor(expected_pitch), atol=1e-6)
        assert torch.allclose(
            yaw[list(row)], torch.tensor([0.6, 0.45, 0.3, 0.15, 0, -0.15, -0.3, -0.45, -0.6]), atol=1e-6
        )


def test_random_viewset_is_seeded_and_has_the_official_spread():
    first = random_viewset(torch.Generator().manual_seed(7)).modelviews
    assert torch.equal(first, random_viewset(torch.Generator().manual_seed(7)).modelviews)
    assert not torch.equal(first, random_viewset(torch.Generator().manual_seed(8)).modelviews)
    assert torch.allclose(first[0], orbit_camera(0.0, 0.0), atol=1e-7)
    generator = torch.Generator().manual_seed(0)
    yaw, pitch = yaw_pitch(torch.stack([random_viewset(generator).modelviews[1] for _ in range(400)]))
    assert yaw.std().item() == pytest.approx(0.3, rel=0.15)
    assert pitch.std().item() == pytest.approx(0.15, rel=0.15)
    assert yaw.abs().max() > 0.6  # unclipped, as the official evaluation viewset


@pytest.mark.parametrize("views", [2, 5, 8])
def test_orbit_covers_the_full_circle_outward_from_the_front(views):
    viewset = orbit_viewset(views)
    yaw, pitch = yaw_pitch(viewset.modelviews)
    step = 2 * math.pi / views
    assert yaw[0].item() == pytest.approx(0.0, abs=1e-6)
    steps = torch.round(yaw / step).long() % views
    assert sorted(steps.tolist()) == list(range(views))
    if views > 2:
        assert yaw[1].item() == pytest.approx(step, abs=1e-5) and yaw[2].item() == pytest.approx(-step, abs=1e-5)
    assert sorted(viewset.grid[0]) == list(range(views))
    assert torch.allclose(pitch, torch.zeros(views), atol=1e-6)


@pytest.mark.parametrize("views", [1, 4, 8])
def test_swing_is_the_front_then_the_video_path_nearest_first(views):
    viewset = make_viewset(f"swing:{views}")
    assert len(viewset) == views + 1 and viewset.name == "swing"
    assert torch.allclose(viewset.modelviews[0], orbit_camera(0.0, 0.0), atol=1e-6)
    # The official video path at t = 2πk/views (its last frame repeats the first).
    path = swing_trajectory(views + 1)[:views]
    shown = viewset.modelviews[list(viewset.grid[0][1:])]
    assert viewset.grid[0][0] == 0 and torch.allclose(shown, path, atol=1e-5)
    yaw, _ = yaw_pitch(viewset.modelviews[1:])
    assert (yaw.abs().diff() >= -1e-5).all()
    assert len(swing_viewset()) == 9


def test_custom_camera_files(tmp_path):
    matrix = orbit_camera(0.2, -0.1, 1.5)
    (tmp_path / "cams.json").write_text(
        json.dumps([{"yaw": 0.0, "pitch": 0.0}, {"yaw": 0.3, "pitch": 0.1, "radius": 2}, matrix.tolist()])
    )
    (tmp_path / "cams.yaml").write_text("views:\n  - {yaw: 0.0, pitch: 0.0}\n  - {yaw: 0.3, pitch: 0.1, radius: 2}\n")
    cameras = load_cameras(tmp_path / "cams.json")
    assert cameras.shape == (3, 4, 4)
    assert torch.allclose(cameras[1], orbit_camera(0.3, 0.1, 2.0))
    assert torch.allclose(cameras[2], matrix)
    assert torch.equal(load_cameras(tmp_path / "cams.yaml"), cameras[:2])
    viewset = make_viewset(str(tmp_path / "cams.json"))
    assert len(viewset) == 3 and viewset.grid == ((0, 1, 2),)
    assert viewset_name(str(tmp_path / "cams.yaml")) == "cams" and viewset_name("orbit:8") == "orbit8"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[]", "non-empty list"),
        ('[{"yaw": 0}]', "yaw, pitch"),
        ('[{"yaw": 0, "pitch": 0, "radius": -1}]', "positive"),
        ("[[1, 2, 3]]", "4×4"),
        ("[[[2,0,0,0],[0,1,0,0],[0,0,1,0],[0,0,0,1]]]", "rotation"),
        ("[[[1,0,0,0],[0,1,0,0],[0,0,1,0],[0,0,1,1]]]", "last row"),
        ("{not json", "could not parse"),
    ],
)
def test_bad_camera_files_are_rejected_clearly(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_cameras(path)


def test_unknown_viewsets_and_missing_files():
    with pytest.raises(ValueError, match="unknown viewset"):
        make_viewset("4x4")
    with pytest.raises(ValueError, match="orbit:N"):
        make_viewset("orbit:x")
    with pytest.raises(ValueError, match="swing:N"):
        make_viewset("swing:-1")
    with pytest.raises(FileNotFoundError, match="camera file"):
        make_viewset("missing.yaml")
