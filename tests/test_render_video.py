import math

import pytest
import torch

from iterview.geometry.cameras import camera_center
from iterview.render.video import make_trajectory, orbit_trajectory, random_camera, swing_trajectory


def yaw_pitch(modelviews):
    eye = camera_center(modelviews)
    return torch.atan2(eye[..., 0], eye[..., 2]), torch.asin(eye[..., 1] / eye.norm(dim=-1))


def test_swing_is_the_official_loop():
    yaw, pitch = yaw_pitch(swing_trajectory(60))
    assert torch.allclose(yaw[0], yaw[-1], atol=1e-6) and torch.allclose(pitch[0], pitch[-1], atol=1e-6)
    assert yaw.max().item() == pytest.approx(0.6, abs=1e-5) and yaw.min().item() == pytest.approx(-0.6, abs=2e-3)
    assert pitch.max().item() == pytest.approx(0.15, abs=1e-3) and pitch.min().item() == pytest.approx(-0.15, abs=1e-3)


def test_orbit_turns_once_without_repeating_a_frame():
    yaw, pitch = yaw_pitch(orbit_trajectory(8))
    steps = torch.round(yaw / (math.pi / 4)).long() % 8
    assert steps.tolist() == list(range(8))
    assert torch.allclose(pitch, torch.zeros(8), atol=1e-6)


def test_random_fusion_camera_is_seeded_and_clipped():
    cams = torch.cat([random_camera(torch.Generator().manual_seed(s)) for s in range(300)])
    assert torch.equal(cams[:1], random_camera(torch.Generator().manual_seed(0)))
    yaw, pitch = yaw_pitch(cams)
    assert yaw.abs().max() <= 0.6 + 1e-5 and pitch.abs().max() <= 0.15 + 1e-5
    assert (yaw.abs() > 0.599).any()  # clipping happens (0.3·N exceeds 0.6 about 5 % of the time)


def test_custom_trajectory_file_and_unknown_names(tmp_path):
    path = tmp_path / "path.yaml"
    path.write_text("- {yaw: 0.1, pitch: 0.0}\n- {yaw: 0.2, pitch: 0.05, radius: 1.2}\n")
    assert make_trajectory(str(path)).shape == (2, 4, 4)
    with pytest.raises(ValueError, match="unknown trajectory"):
        make_trajectory("spiral")
