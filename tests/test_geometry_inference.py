import pytest

from iterview.geometry.inference import OFFICIAL_GEOMETRY, InferenceGeometry


def test_official_values_are_the_defaults():
    g = OFFICIAL_GEOMETRY
    assert (g.fov, g.near, g.far, g.atol, g.rtol, g.erode_rgb) == (45.0, 0.6, 5.0, 0.03, 0.03, 3)
    assert (g.renderer_near, g.renderer_far, g.condition_ssaa) == (0.01, 200.0, 3)
    assert (g.fusion_near, g.fusion_far, g.fusion_ssaa) == (0.1, 200.0, 5)


@pytest.mark.parametrize(
    ("size", "tolerance", "erosion"), [(128, 0.03, 3), (64, 0.06, 2), (32, 0.12, 1), (16, 0.24, 1)]
)
def test_for_size_scales_tolerances_and_erosion_with_the_pixel_size(size, tolerance, erosion):
    g = InferenceGeometry.for_size(size)
    assert g.atol == pytest.approx(tolerance) and g.rtol == pytest.approx(tolerance) and g.erode_rgb == erosion
    assert (g.fov, g.near, g.far, g.condition_ssaa, g.fusion_ssaa) == (45.0, 0.6, 5.0, 3, 5)


def test_dict_round_trip_and_errors():
    g = InferenceGeometry(near=0.5, far=100.0, atol=0.12, rtol=0.1, erode_rgb=1)
    assert InferenceGeometry.from_dict(g.to_dict()) == g
    assert InferenceGeometry.from_dict({"fov": 30}) == InferenceGeometry(fov=30.0)
    with pytest.raises(ValueError, match="unknown inference geometry entries"):
        InferenceGeometry.from_dict({"tolerance": 1})
    with pytest.raises(ValueError, match="near and far"):
        InferenceGeometry(near=5.0, far=0.6)
    with pytest.raises(ValueError, match="erode_rgb"):
        InferenceGeometry.from_dict({"erode_rgb": 1.5})
    with pytest.raises(ValueError, match="image size"):
        InferenceGeometry.for_size(0)
