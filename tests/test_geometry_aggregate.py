import math

import pytest
import torch
from geometry_support import assert_agrees, indices, load_warping, load_warping_meta, size_of, to_image
from hypothesis import example, given, settings
from hypothesis import strategies as st

from iterview.geometry import aggregate
from iterview.geometry.aggregate import (
    Compositor,
    ViewSamples,
    aggregate_conditions,
    aggregate_render,
    fusion_render,
    shade_view,
)
from iterview.geometry.cameras import linear_to_zbuffer, look_at, orbit_camera, zbuffer_to_linear
from iterview.geometry.imageops import depth_edge, erode
from iterview.geometry.inference import InferenceGeometry
from iterview.geometry.mesh import depth_to_mesh

pytestmark = pytest.mark.usefixtures("one_thread")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
INFERENCE_MESH = dict(padding="frustum", atol=0.03, rtol=0.03, erode_rgb=3, compute_normals=True)
SCENE_PADDING = 32  # the official video's load_scene pads every mesh by 32 pixels, whatever the image size


@pytest.fixture(scope="module")
def warping(reference):
    return load_warping(reference)


@pytest.fixture(scope="module")
def fov(reference):
    return load_warping_meta(reference)["fov_degrees"]


def source_views(warping, fov, padding="frustum", device="cpu"):
    """The official source views as meshes (inference settings) and textures."""
    meshes, textures = [], []
    for i in indices(warping, r"infer_rgbd(\d+)"):
        rgbd = to_image(warping[f"infer_rgbd{i}"]).to(device)
        depth = zbuffer_to_linear(rgbd[:, 3], 0.6, 5)
        modelview = warping[f"source{i}_modelview"][None].to(device)
        options = {**INFERENCE_MESH, "padding": padding, "fov": fov}
        meshes.append(depth_to_mesh(depth, modelview, **options))
        textures.append(rgbd[:, :3])
    return meshes, textures


def zbuffer(depth):
    return linear_to_zbuffer(depth, 0.6, 5)


@pytest.mark.parametrize("device", DEVICES)
def test_aggregation_matches_official(warping, fov, device):
    meshes, textures = source_views(warping, fov, device=device)
    targets = indices(warping, r"agg_target(\d+)_color")
    assert targets, "no agg_target*_ arrays in the reference"
    for target in targets:
        check_aggregation(warping, meshes, textures, device, target)


def check_aggregation(warping, meshes, textures, device, target):
    views = target + 1  # the official autoregressive order: sources 0..k into target k
    modelview = warping[f"agg_target{target}_modelview"][None].to(device)
    size = size_of(warping, f"agg_target{target}_color")
    render = aggregate_render(
        meshes[:views], textures[:views], modelview, size_of(warping, f"agg_target{target}_raw_color")
    )
    raw = {name: to_image(warping[f"agg_target{target}_raw_{name}"]) for name in ("color", "depth")}
    mask_color, mask_depth = (to_image(warping[f"agg_target{target}_raw_mask_{n}"]) for n in ("color", "depth"))
    assert_agrees(render.mask_color, mask_color, render.color, raw["color"])
    assert_agrees(render.mask_depth, mask_depth)
    # Depth everywhere, including the weak-only hull and empty pixels (renderer near, 0 in z-buffer units).
    everywhere = torch.ones_like(mask_depth)
    assert_agrees(everywhere, everywhere, depth=zbuffer(render.depth), ref_depth=zbuffer(raw["depth"]))
    assert (~render.mask_depth & (render.depth > 0.011)).any()  # hull pixels exist in this scene

    conditions = aggregate_conditions(meshes[:views], textures[:views], modelview, size)
    final = {name: to_image(warping[f"agg_target{target}_{name}"]) for name in ("color", "depth", "mask", "mask_rgb")}
    assert_agrees(conditions.mask, final["mask"], depth=conditions.depth, ref_depth=final["depth"])
    assert_agrees(conditions.mask_rgb, final["mask_rgb"], conditions.color, final["color"])
    convex = to_image(warping[f"agg_target{target}_depth_convex"])
    everywhere = torch.ones_like(convex, dtype=torch.bool)
    assert_agrees(everywhere, everywhere, depth=conditions.depth_convex, ref_depth=convex)
    assert (conditions.mask_rgb <= conditions.mask).all()
    assert (conditions.color * (1 - conditions.mask_rgb) == 0).all() and (
        conditions.depth * (1 - conditions.mask) == 0
    ).all()


def test_fusion_render_matches_official(warping, fov):
    meshes, textures = source_views(warping, fov, padding=SCENE_PADDING)
    modelview = warping["fusion_modelview"][None]
    size, render_size = size_of(warping, "infer_rgbd0"), size_of(warping, "fusion_raw_color")
    ssaa = render_size // size
    assert ssaa * size == render_size
    render = aggregate_render(meshes, textures, modelview, render_size, near=0.1, far=200.0)
    raw = {name: to_image(warping[f"fusion_raw_{name}"]) for name in ("color", "depth", "mask_color", "mask_depth")}
    assert_agrees(render.mask_color, raw["mask_color"], render.color, raw["color"])
    assert_agrees(render.mask_depth, raw["mask_depth"], depth=zbuffer(render.depth), ref_depth=zbuffer(raw["depth"]))
    frame = fusion_render(meshes, textures, modelview, size, InferenceGeometry(fusion_ssaa=ssaa))
    assert frame.color.shape == (1, 3, size, size) and frame.depth.shape == frame.mask.shape == (1, 1, size, size)
    torch.testing.assert_close(frame.depth, render.depth[..., ssaa // 2 :: ssaa, ssaa // 2 :: ssaa])


@settings(max_examples=8, deadline=None)
@example(half=63, depth=1.0)
@given(half=st.integers(3, 20), depth=st.floats(0.5, 3.0))
def test_fronto_parallel_plane_weight_falls_off_with_the_off_axis_angle(half, depth):
    size = 2 * half + 1  # odd: the centre pixel looks along the optical axis
    camera = orbit_camera(torch.zeros(1), torch.zeros(1))
    mesh = depth_to_mesh(torch.full((1, size, size), depth), camera, compute_normals=True, padding=1)
    torch.testing.assert_close(mesh.normal, torch.tensor([0.0, 0.0, 1.0]).expand_as(mesh.normal))
    view = shade_view(mesh, torch.rand(1, 3, size, size), camera, size)
    pixel = torch.arange(size) - half
    radius = torch.hypot(*torch.meshgrid(pixel.float(), pixel.float(), indexing="ij"))
    angle = torch.atan(radius * 2 * math.tan(math.radians(22.5)) / size)
    expected = torch.exp(-20 * angle).clamp(min=1e-4)
    torch.testing.assert_close(view.weight[0, 0], expected, rtol=2e-3, atol=1e-7)
    assert view.weight[0, 0, half, half] == 1
    edge_middle = math.exp(-20 * math.atan(half / (half + 0.5) * math.tan(math.radians(22.5))))
    assert view.weight[0, 0, half, 0].item() == pytest.approx(edge_middle, rel=2e-3)
    if half >= 10:
        assert view.weight[0, 0, 0, 0] == pytest.approx(1e-4)  # corners: the floor
    if half >= 60:
        assert 3.5e-4 < view.weight[0, 0, half, 0] < 4.5e-4


def samples(color, weight, zbuffer):
    """ViewSamples for a row of pixels."""
    count = len(weight)
    return ViewSamples(
        color=torch.tensor(color, dtype=torch.float32).T.reshape(1, 3, 1, count),
        weight=torch.tensor(weight, dtype=torch.float32).reshape(1, 1, 1, count),
        zbuffer=torch.tensor(zbuffer, dtype=torch.float32).reshape(1, 1, 1, count),
    )


def test_compositor_rules():
    red, green = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]
    weak, eroded, nothing = 1e-16, 1e-10, 0.0
    # Pixels: 0 two strong; 1 weak only, far first; 2 weak only, near first; 3 weak then strong;
    # 4 strong then weak; 5 eroded only; 6 back face / empty only.
    first = samples([red] * 7, [0.5, weak, weak, weak, 0.25, eroded, nothing], [0.2, 0.9, 0.3, 0.9, 0.4, 0.5, 0.6])
    second = samples([green] * 7, [0.25, weak, weak, 0.5, weak, nothing, nothing], [0.5, 0.3, 0.9, 0.5, 0.95, 0.1, 0.1])
    compositor = Compositor(1, 7)
    compositor.add(first)
    compositor.add(second)
    result = compositor.result(near=0.1, far=200.0)
    color = result.color[0, :, 0].T
    torch.testing.assert_close(color[0], torch.tensor([2 / 3, 1 / 3, 0.0]))  # weighted mean
    torch.testing.assert_close(color[1], torch.tensor(red))  # the farthest weak sample wins ...
    torch.testing.assert_close(color[2], torch.tensor(green))  # ... whatever the order
    torch.testing.assert_close(color[3], torch.tensor(green), atol=1e-6, rtol=0)  # strong outweighs weak
    torch.testing.assert_close(color[4], torch.tensor(red), atol=1e-6, rtol=0)
    torch.testing.assert_close(color[5], torch.tensor(red))  # eroded: colour kept, but not in the colour mask
    torch.testing.assert_close(color[6], torch.tensor([0.0, 0.0, 0.0]))
    window = torch.tensor([0.35, 0.9, 0.9, 0.5, 0.4, 0.5, 0.0])  # depth: plain mean of strong window depths
    expected = 2 * 0.1 * 200 / ((200 + 0.1) - (2 * window - 1) * (200 - 0.1))
    torch.testing.assert_close(result.depth[0, 0, 0], expected, rtol=1e-5, atol=0)
    assert result.mask_color[0, 0, 0].tolist() == [True, False, False, True, True, False, False]
    assert result.mask_depth[0, 0, 0].tolist() == [True, False, False, True, True, True, False]


def test_identity_conditions_return_the_view(warping):
    g = torch.Generator().manual_seed(0)
    size = size_of(warping, "infer_rgbd0")
    y, x = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    depth = torch.where((x.abs() < 0.3) & (y.abs() < 0.3), 1.0, 1.6 + 0.05 * x)[None]
    color = 0.5 + 0.3 * torch.sin(2 * x + torch.rand(3, 1, 1, generator=g) * 6)[None]
    camera = orbit_camera(torch.zeros(1), torch.zeros(1))
    mesh = depth_to_mesh(depth, camera, **INFERENCE_MESH)
    conditions = aggregate_conditions([mesh], [color], camera, size)
    input_zbuffer = zbuffer(depth)[:, None]
    near_edge = ~erode(depth_edge(input_zbuffer, 0.03, 0.03), 5)
    # The frustum skirt is padding (weak): border pixels keep at most 6 of 9 strong samples.
    interior = torch.zeros_like(near_edge)
    interior[..., 1:-1, 1:-1] = True
    assert conditions.mask.bool()[interior & ~near_edge].all()
    assert not conditions.mask.bool()[~interior].any()
    valid = conditions.mask.bool()
    assert (conditions.depth - input_zbuffer).abs()[valid].max() < 1e-4
    assert (conditions.color - color).abs()[conditions.mask_rgb.bool().expand(-1, 3, -1, -1)].mean() < 0.01
    torch.testing.assert_close(conditions.depth_convex, zbuffer(zbuffer_to_linear(conditions.depth_convex, 0.6, 5)))


def test_batch_elements_aggregate_independently(warping, fov, monkeypatch):
    meshes, textures = source_views(warping, fov)
    # Batch 2: the official views, and the same views with their order reversed.
    batched_meshes = []
    for mesh, other in zip(meshes, meshes[::-1], strict=True):
        fields = {
            k: torch.cat([getattr(mesh, k), getattr(other, k)])
            for k in ("position", "uv", "flag", "faces", "modelview", "normal")
        }
        batched_meshes.append(type(mesh)(fov=fov, **fields))
    batched_textures = [torch.cat([t, o]) for t, o in zip(textures, textures[::-1], strict=True)]
    last = indices(warping, r"agg_target(\d+)_modelview")[-1]
    cameras = torch.cat([warping[f"agg_target{last}_modelview"][None], warping["fusion_modelview"][None]])
    batch = aggregate_render(batched_meshes, batched_textures, cameras, 96)
    single = aggregate_render(meshes[::-1], textures[::-1], cameras[1:], 96)
    monkeypatch.setattr(aggregate, "_MAX_PIXELS", 96 * 96)  # one target at a time
    grouped = aggregate_render(batched_meshes, batched_textures, cameras, 96)
    for name in ("color", "depth", "mask_color", "mask_depth"):
        assert torch.equal(getattr(batch, name)[1:], getattr(single, name)), name
        assert torch.equal(getattr(batch, name), getattr(grouped, name)), name


def test_out_of_range_colour_saturates_in_fusion_frames(warping, fov):
    meshes, textures = source_views(warping, fov, padding=SCENE_PADDING)
    bright = [t * 0 + 1.2 for t in textures]
    frame = fusion_render(meshes, bright, warping["fusion_modelview"][None], size_of(warping, "infer_rgbd0"))
    assert (frame.color[frame.mask.expand(-1, 3, -1, -1)] == 1).all()  # the official cast would wrap to 50/255


def test_bad_input_raises_clear_errors(warping, fov):
    meshes, textures = source_views(warping, fov)
    camera, size = warping["agg_target0_modelview"][None], size_of(warping, "infer_rgbd0")
    with pytest.raises(ValueError, match="no normals"):
        no_normals = depth_to_mesh(zbuffer_to_linear(textures[0][:, 0] * 0 + 0.5, 0.6, 5), camera)
        aggregate_render([no_normals], textures[:1], camera, size)
    with pytest.raises(ValueError, match="one texture per mesh"):
        aggregate_render(meshes[:2], textures[:1], camera, size)
    with pytest.raises(ValueError, match="at least one view"):
        aggregate_render([], [], camera, size)
    with pytest.raises(ValueError, match="texture 0"):
        aggregate_render(meshes[:1], [textures[0][:, :2]], camera, size)
    with pytest.raises(ValueError, match="NaN or inf"):
        aggregate_render(meshes[:1], [textures[0] * math.nan], camera, size)
    with pytest.raises(ValueError, match="modelview"):
        aggregate_render(meshes[:1], textures[:1], torch.eye(4).expand(2, 4, 4), size)
    # A camera in front of the source views looking away from them sees nothing at any size (one behind them
    # catches a sliver of the meshes at some sizes, 64 px among them).
    away = look_at(torch.tensor([[0.0, 0.0, 1.5]]), torch.tensor([[0.0, 0.0, 3.0]]))
    with pytest.raises(ValueError, match="sees none of the source views"):
        aggregate_conditions(meshes[:1], textures[:1], away, size)
    with pytest.raises(ValueError, match="sees none of the source views"):
        fusion_render(meshes[:1], textures[:1], away, size)


def test_blind_cameras_are_an_error_unless_allowed():
    depth = torch.full((1, 16, 16), 1.0)
    mesh = depth_to_mesh(depth, orbit_camera(0.0, 0.0)[None], padding="frustum", compute_normals=True)
    texture = torch.rand(1, 3, 16, 16)
    behind = look_at(torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0.0, 0.0, 2.0]))[None]  # looks away
    with pytest.raises(ValueError, match="sees none"):
        aggregate_conditions([mesh], [texture], behind, 16)
    cond = aggregate_conditions([mesh], [texture], behind, 16, allow_blind=True)
    assert not cond.mask.any() and not cond.mask_rgb.any() and not cond.color.any()
