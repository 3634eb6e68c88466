import math

import pytest
import torch
from geometry_support import assert_agrees, indices, load_warping, load_warping_meta, size_of, smooth_scene, to_image
from hypothesis import given, settings
from hypothesis import strategies as st

from iterview.geometry.cameras import camera_center, linear_to_zbuffer, orbit_camera, zbuffer_to_linear
from iterview.geometry.imageops import depth_edge, erode, lanczos_downsample, subsample_center
from iterview.geometry.mesh import Mesh, depth_to_mesh, unproject
from iterview.geometry.warp import forward_backward_warp, render_simple

pytestmark = pytest.mark.usefixtures("one_thread")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module")
def warping(reference):
    return load_warping(reference)


@pytest.fixture(scope="module")
def meta(reference):
    return load_warping_meta(reference)


def reference_mesh(warping, meta, name):
    prefix = f"simple_mesh_{name}"
    return Mesh(
        position=warping[f"{prefix}_position"][None],
        uv=warping[f"{prefix}_uv"][None],
        flag=warping[f"{prefix}_flag"][None, :, 0].long(),
        faces=warping[f"{prefix}_faces"][None],
        modelview=warping["source0_modelview"][None],
        fov=meta["fov_degrees"],
    )


def window(depth_linear, near=0.1, far=200.0):
    return linear_to_zbuffer(depth_linear, near, far)


def simple_renders(warping, flags: str) -> list[tuple[str, int]]:
    """Every stored simple warp of one mesh: (key prefix, warp camera), render sizes read from the arrays."""
    return [
        (f"simple_ssaa{ssaa}_{flags}_cam{camera}", camera)
        for ssaa in indices(warping, rf"simple_ssaa(\d+)_{flags}_cam0_color")
        for camera in indices(warping, rf"simple_ssaa{ssaa}_{flags}_cam(\d+)_color")
    ]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("flags", ["noflags", "flags"])
def test_simple_warps_match_official(warping, meta, device, flags):
    renders = simple_renders(warping, flags)
    assert renders, f"no simple_*_{flags}_* renders in the reference"
    for key, camera in renders:
        check_simple_warp(warping, meta, device, flags, key, camera)


def check_simple_warp(warping, meta, device, flags, key, camera):
    mesh = reference_mesh(warping, meta, flags)
    mesh = Mesh(**{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in vars(mesh).items()})
    texture = to_image(warping["train_rgbd"][..., :3]).to(device)
    size = size_of(warping, f"{key}_color")
    render = render_simple(mesh, texture, warping[f"warp{camera}_modelview"][None].to(device), size)
    ref_depth = to_image(warping[f"{key}_depth_linear"])
    assert_agrees(
        render.mask,
        to_image(warping[f"{key}_mask"]),
        render.color,
        to_image(warping[f"{key}_color"]),
        window(render.depth),
        window(ref_depth),
    )
    covered, ref_covered = window(render.depth) < 1 - 1e-6, window(ref_depth) < 1 - 1e-6
    assert (covered.cpu() == ref_covered).float().mean() >= 0.99  # back and edge faces still write depth
    if flags == "flags":
        assert (covered & ~render.mask).any()


def test_forward_backward_warp_matches_official(warping):
    cameras = indices(warping, r"fbw_cam(\d+)_color")
    assert cameras, "no fbw_cam*_ arrays in the reference"
    for camera in cameras:
        check_forward_backward_warp(warping, camera)


def check_forward_backward_warp(warping, camera):
    rgbd = to_image(warping["train_rgbd"])
    modelview = warping[f"warp{camera}_modelview"][None]
    key = f"fbw_cam{camera}"
    size, render_size = size_of(warping, "train_rgbd"), size_of(warping, f"{key}_pass0_color")
    ssaa = render_size // size
    assert ssaa * size == render_size
    result = forward_backward_warp(rgbd, modelview, ssaa=ssaa)
    assert_agrees(
        result.mask,
        to_image(warping[f"{key}_mask"]),
        result.color,
        to_image(warping[f"{key}_color"]),
        result.depth,
        to_image(warping[f"{key}_depth"]),
    )
    assert ((result.mask == 0) | (result.mask == 1)).all()
    assert (result.color[(result.mask == 0).expand_as(result.color)] == 0).all()

    # The two passes, from the official intermediate renders.
    front = warping["source0_modelview"][None]
    # The official training dataset pads view 0 by the image size.
    mesh0 = depth_to_mesh(zbuffer_to_linear(rgbd[:, 3], 0.5, 100), front, padding=size)
    pass0 = render_simple(mesh0, rgbd[:, :3], modelview, render_size)
    ref0 = {name: to_image(warping[f"{key}_pass0_{name}"]) for name in ("color", "mask", "depth_linear")}
    assert_agrees(
        pass0.mask, ref0["mask"], pass0.color, ref0["color"], window(pass0.depth), window(ref0["depth_linear"])
    )
    mesh1 = depth_to_mesh(subsample_center(ref0["depth_linear"][:, 0], ssaa), modelview, atol=0.02, rtol=0.02)
    pass1 = render_simple(mesh1, lanczos_downsample(ref0["color"], size), front, render_size)
    ref1 = {name: to_image(warping[f"{key}_pass1_{name}"]) for name in ("color", "mask", "depth_linear")}
    assert_agrees(
        pass1.mask, ref1["mask"], pass1.color, ref1["color"], window(pass1.depth), window(ref1["depth_linear"])
    )


@settings(max_examples=10, deadline=None)
@given(size=st.integers(5, 24), seed=st.integers(0, 2**16), padding=st.integers(1, 4))
def test_identity_render_reproduces_the_input_with_a_full_mask(size, seed, padding):
    g = torch.Generator().manual_seed(seed)
    depth = 0.5 + 2 * torch.rand(1, size, size, generator=g)
    color = torch.rand(1, 3, size, size, generator=g)
    camera = orbit_camera(torch.zeros(1), torch.zeros(1))
    render = render_simple(depth_to_mesh(depth, camera, padding=padding), color, camera, size)
    assert render.mask.all()
    assert torch.equal(render.color, color)
    torch.testing.assert_close(render.depth[:, 0], depth, rtol=2e-5, atol=0)


@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_identity_forward_backward_warp_keeps_all_but_edges_and_the_outer_ring(meta, seed):
    size = meta["image_size"]
    rgbd = smooth_scene(size, seed)
    result = forward_backward_warp(rgbd, orbit_camera(torch.zeros(1), torch.zeros(1)))
    near_edge = ~erode(depth_edge(rgbd[:, 3:], 0.02, 0.02), 5)
    # Mesh 1 has no ring, so border pixels cover at most 6 of 9 samples. The centre samples of the last row and
    # column lie exactly on its bottom and right border edges, which the top-left rule does not own: they read
    # the far depth, and depth_edge drops their inner neighbours as well.
    ring = torch.ones_like(near_edge)
    ring[..., 1:-1, 1:-1] = False
    kept = torch.zeros_like(near_edge)
    kept[..., 1:-2, 1:-2] = True
    assert result.mask.bool()[kept & ~near_edge].all()
    assert not result.mask.bool()[ring].any()
    assert not result.mask.bool()[..., -2, :].any() and not result.mask.bool()[..., -2].any()
    valid = result.mask.bool()
    assert (result.depth - rgbd[:, 3:]).abs()[valid].max() < 1e-4
    assert (result.color - rgbd[:, :3]).abs()[valid.expand(-1, 3, -1, -1)].mean() < 0.01


@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 2**16), yaw=st.floats(-0.2, 0.2), pitch=st.floats(-0.15, 0.15))
def test_warp_to_a_camera_and_back_returns_the_input_where_kept(meta, seed, yaw, pitch):
    size = meta["image_size"]
    rgbd = smooth_scene(size, seed, edge=False)
    result = forward_backward_warp(rgbd, orbit_camera(torch.tensor([yaw]), torch.tensor([pitch])))
    valid = result.mask.bool()
    assert valid[..., 2:-2, 2:-2].float().mean() > 0.8
    depth_error = (result.depth - rgbd[:, 3:]).abs()[valid]
    assert (depth_error < 1e-3).float().mean() > 0.99
    color_error = (result.color - rgbd[:, :3]).abs()[valid.expand(-1, 3, -1, -1)]
    assert color_error.mean() < 0.02 and (color_error < 0.1).float().mean() > 0.99


def hidden_from(side: torch.Tensor, depth: torch.Tensor, front: torch.Tensor) -> torch.Tensor:
    """Which pixels of view 0 (linear depth (1, N, N) of a backdrop with one fronto-parallel box in front, camera
    `front`) the side camera surely cannot see: the segment from its centre to the pixel's 3D point crosses the box
    plane at least a pixel inside the box. Exact geometry, independent of any renderer. Returns (1, 1, N, N)."""
    size = depth.shape[-1]
    box = depth < 1.0  # smooth_scene: backdrop at 1.2 ± 0.05, box at 0.8-0.9
    box_depth = depth[box].mean()
    points = unproject(depth, 45.0)[0].permute(1, 2, 0)  # (N, N, 3) in view 0's camera frame
    centre = (front[0] @ torch.cat([camera_center(side)[0], torch.ones(1)]))[:3]
    s = (-box_depth - centre[2]) / (points[..., 2] - centre[2])
    crossing = centre + s[..., None] * (points - centre)
    f = 0.5 / math.tan(math.radians(22.5))
    j = ((crossing[..., 0] / -crossing[..., 2]) * f + 0.5) * size - 0.5
    i = (0.5 - (crossing[..., 1] / -crossing[..., 2]) * f) * size - 0.5
    inside = (i.round() >= 0) & (i.round() < size) & (j.round() >= 0) & (j.round() < size)
    ii, jj = i.round().long().clamp(0, size - 1), j.round().long().clamp(0, size - 1)
    core = erode(box[:, None], 3)[0, 0]  # box pixels whose neighbours are all box
    return (~box[0] & (s > 0) & (s < 1) & inside & core[ii, jj])[None, None]


@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 2**16), yaw=st.sampled_from([-0.3, -0.2, 0.2, 0.3]), pitch=st.floats(-0.1, 0.1))
def test_warp_and_back_with_depth_edges_drops_what_the_side_camera_cannot_see(meta, seed, yaw, pitch):
    """A box in front of a backdrop: backdrop pixels the box hides from the side camera (exact geometry) come back
    as holes, and every pixel kept comes back with its own depth and colour, not the box's."""
    size = meta["image_size"]
    rgbd = smooth_scene(size, seed, edge=True)
    front = orbit_camera(torch.zeros(1), torch.zeros(1))
    side = orbit_camera(torch.tensor([yaw]), torch.tensor([pitch]))
    result = forward_backward_warp(rgbd, side)
    hidden = hidden_from(side, zbuffer_to_linear(rgbd[:, 3], 0.5, 100), front)
    assert hidden.any(), "the box hides part of the backdrop from this camera"
    assert not result.mask.bool()[hidden].any()
    valid = result.mask.bool()
    assert valid[..., 2:-2, 2:-2].float().mean() > 0.6
    depth_error = (result.depth - rgbd[:, 3:]).abs()[valid]
    assert depth_error.max() < 1e-2 and (depth_error < 1e-3).float().mean() > 0.99
    color_error = (result.color - rgbd[:, :3]).abs()[valid.expand(-1, 3, -1, -1)]
    assert color_error.mean() < 0.02 and (color_error < 0.1).float().mean() > 0.99


def test_bad_input_raises_clear_errors(warping, meta):
    rgbd = to_image(warping["train_rgbd"])
    size = rgbd.shape[-1]
    side = orbit_camera(torch.tensor([0.1]), torch.tensor([0.0]))
    with pytest.raises(ValueError, match="square"):
        forward_backward_warp(rgbd[..., :-4], side)
    with pytest.raises(ValueError, match=r"\(B, 4, H, W\)"):
        forward_backward_warp(rgbd[:, :3], side)
    for bad in (math.nan, math.inf):
        broken = rgbd.clone()
        broken[0, 3, 5, 5] = bad
        with pytest.raises(ValueError, match="NaN or inf"):
            forward_backward_warp(broken, side)
    with pytest.raises(ValueError, match="modelview"):
        forward_backward_warp(rgbd, torch.eye(3))
    with pytest.raises(ValueError, match="rigid"):
        forward_backward_warp(rgbd, torch.ones(1, 4, 4))
    away = orbit_camera(torch.tensor([math.pi]), torch.tensor([0.0]), radius=3.0)  # behind the scene, backwards
    looking_away = torch.diag(torch.tensor([-1.0, 1.0, -1.0, 1.0]))[None] @ orbit_camera(0.0, 0.0, radius=1.5)
    for camera in (away, looking_away):
        with pytest.raises(ValueError, match="sees nothing"):
            forward_backward_warp(rgbd, camera)
    with pytest.raises(ValueError, match="texture"):
        render_simple(reference_mesh(warping, meta, "flags"), rgbd[:, :3, : size // 2], side, size)
