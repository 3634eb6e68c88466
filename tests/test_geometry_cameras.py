import json

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import load_file

from iterview.geometry.cameras import (
    camera_center,
    focal_length,
    linear_to_zbuffer,
    look_at,
    orbit_camera,
    orbit_eye,
    perspective,
    zbuffer_to_linear,
)


def test_cameras_match_official_modelviews(reference):
    cameras = json.loads((reference / "warping" / "warping.json").read_text())["cameras"]
    arrays = load_file(reference / "warping" / "warping.safetensors")
    # Every stored modelview has its camera in warping.json (the array agg_target<k> is camera aggregate_target<k>).
    stored = {key.removesuffix("_modelview"): key for key in arrays if key.endswith("_modelview")}
    stored = {name.replace("agg_target", "aggregate_target"): key for name, key in stored.items()}
    assert stored and set(stored) <= set(cameras), sorted(set(stored) - set(cameras))
    for name, key in sorted(stored.items()):
        cam, modelview = cameras[name], arrays[key]
        if "yaw" in cam:
            ours = orbit_camera(cam["yaw"], cam["pitch"], cam["radius"], torch.tensor(cam["target"]))
        else:
            ours = look_at(orbit_eye(cam["theta"], cam["phi"], cam["radius"]), torch.tensor(cam["target"]))
        torch.testing.assert_close(ours, modelview, atol=1e-6, rtol=0)
        torch.testing.assert_close(
            camera_center(ours), torch.tensor(cam["eye"], dtype=torch.float32), atol=1e-6, rtol=0
        )


def test_front_camera_and_projection_conventions():
    front = orbit_camera(0.0, 0.0)
    torch.testing.assert_close(front @ torch.tensor([0.0, 0.0, 0.0, 1.0]), torch.tensor([0.0, 0.0, -1.0, 1.0]))
    proj = perspective(45.0, 0.5, 100.0)
    clip = proj @ torch.tensor([0.5 / focal_length(), 0.0, -1.0, 1.0])
    assert clip[0] / clip[3] == pytest.approx(1.0, abs=1e-6)  # the image edge at depth 1
    near = proj @ torch.tensor([0.0, 0.0, -0.5, 1.0])
    assert near[2] / near[3] == pytest.approx(-1.0, abs=1e-6)


def test_perspective_rejects_bad_planes():
    with pytest.raises(ValueError, match="near"):
        perspective(45.0, 0.0, 1.0)


@given(
    z=st.floats(0.6, 5.0),
    planes=st.sampled_from([(0.5, 100.0), (0.6, 5.0), (0.1, 200.0), (0.01, 200.0)]),
)
def test_zbuffer_round_trip(z, planes):
    near, far = planes
    z = torch.tensor([max(min(z, far), near)], dtype=torch.float64)
    d = linear_to_zbuffer(z, near, far)
    assert 0.0 <= d.item() <= 1.0
    torch.testing.assert_close(zbuffer_to_linear(d, near, far), z, rtol=1e-4, atol=1e-6)
