import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from iterview.geometry.cameras import camera_center, orbit_camera, zbuffer_to_linear
from iterview.geometry.mesh import FLAG_EDGE, FLAG_ERODED, FLAG_PADDING, depth_to_mesh, unproject

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module")
def warping(reference):
    return load_file(reference / "warping" / "warping.safetensors")


@pytest.fixture(scope="module")
def fov(reference):
    return json.loads((reference / "warping" / "warping.json").read_text())["fov_degrees"]


def assert_matches_reference(mesh, arrays, prefix, normals=False):
    assert torch.equal(mesh.faces[0].cpu(), arrays[f"{prefix}_faces"])
    assert torch.equal(mesh.flag[0].cpu(), arrays[f"{prefix}_flag"][:, 0].long())
    torch.testing.assert_close(mesh.position[0].cpu(), arrays[f"{prefix}_position"], atol=1e-5, rtol=0)
    torch.testing.assert_close(mesh.uv[0].cpu(), arrays[f"{prefix}_uv"], atol=1e-6, rtol=0)
    if normals:
        torch.testing.assert_close(mesh.normal[0].cpu(), arrays[f"{prefix}_normal"], atol=2e-5, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("name", "tol"), [("noflags", None), ("flags", 0.02)])
def test_simple_meshes_match_official(warping, fov, device, name, tol):
    depth = zbuffer_to_linear(warping["train_rgbd"][..., 3], 0.5, 100)[None].to(device)
    camera = warping["source0_modelview"][None].to(device)  # the training view: lookAt((0, 0, 1) → origin)
    mesh = depth_to_mesh(depth, camera, fov=fov, atol=tol, rtol=tol)
    assert_matches_reference(mesh, warping, f"simple_mesh_{name}")
    if tol is not None:
        assert (mesh.flag == FLAG_EDGE).any()


@pytest.mark.parametrize("device", DEVICES)
def test_frustum_mesh_with_normals_and_erosion_matches_official(warping, fov, device):
    depth = zbuffer_to_linear(warping["infer_rgbd0"][..., 3], 0.6, 5)[None].to(device)
    mesh = depth_to_mesh(
        depth,
        warping["source0_modelview"][None].to(device),
        fov=fov,
        padding="frustum",
        atol=0.03,
        rtol=0.03,
        erode_rgb=3,
        compute_normals=True,
    )
    assert_matches_reference(mesh, warping, "agg_mesh0", normals=True)
    assert set(mesh.flag.unique().tolist()) == {0, FLAG_PADDING, FLAG_ERODED, FLAG_EDGE | FLAG_ERODED}


def test_batch_equals_single_images(warping):
    z0 = zbuffer_to_linear(warping["infer_rgbd0"][..., 3], 0.6, 5)
    z1 = zbuffer_to_linear(warping["infer_rgbd1"][..., 3], 0.6, 5)
    cameras = torch.stack([warping["source0_modelview"], warping["source1_modelview"]])
    options = dict(padding="frustum", atol=0.03, rtol=0.03, erode_rgb=3, compute_normals=True)
    batch = depth_to_mesh(torch.stack([z0, z1]), cameras, **options)
    assert not torch.equal(batch.faces[0], batch.faces[1])  # the diagonal choice is per image
    for b, z in enumerate([z0, z1]):
        single = depth_to_mesh(z[None], cameras[b : b + 1], **options)
        for field in ("position", "uv", "flag", "faces", "normal"):
            assert torch.equal(getattr(batch, field)[b], getattr(single, field)[0]), field


def test_sizes_and_padding_ring_geometry():
    n, pixels = 6, 3
    depth = torch.full((1, n, n), 2.0)
    mesh = depth_to_mesh(depth, orbit_camera(0.0, 0.0), padding=pixels)
    m = n + 2
    assert mesh.position.shape == (1, m * m, 3) and mesh.faces.shape == (1, 2 * (m - 1) ** 2, 3)
    grid = mesh.position[0].reshape(m, m, 3)
    ppp = 2 * math.tan(math.radians(22.5)) / n
    # The ring lies `pixels` pixel pitches beyond the border vertices, at the border depth.
    torch.testing.assert_close(grid[1:-1, 0, 0] - grid[1:-1, 1, 0], torch.full((n,), -pixels * ppp * 2.0))
    torch.testing.assert_close(grid[0, 1:-1, 1] - grid[1, 1:-1, 1], torch.full((n,), pixels * ppp * 2.0))
    torch.testing.assert_close(grid[..., 2], torch.full((m, m), -1.0))  # world z = 1 - depth
    flags = mesh.flag[0].reshape(m, m)
    assert (flags[1:-1, 1:-1] == 0).all() and (flags[[0, -1]] == FLAG_PADDING).all()
    assert (flags[:, [0, -1]] == FLAG_PADDING).all()

    frustum = depth_to_mesh(depth, orbit_camera(0.0, 0.0), padding="frustum")
    ring = frustum.flag[0] == FLAG_PADDING
    torch.testing.assert_close(frustum.position[0, ring, 2], torch.full((int(ring.sum()),), 0.9))


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(2, 10),
    depth=st.floats(0.2, 50.0),
    yaw=st.floats(-3.0, 3.0),
    pitch=st.floats(-1.2, 1.2),
    padding=st.sampled_from([None, 2, "frustum"]),
)
def test_fronto_parallel_plane_normal_faces_the_camera(n, depth, yaw, pitch, padding):
    camera = orbit_camera(yaw, pitch, 1.5)
    mesh = depth_to_mesh(torch.full((1, n, n), depth), camera, padding=padding, compute_normals=True)
    toward_camera = camera_center(camera) / 1.5  # the camera looks at the origin
    torch.testing.assert_close(mesh.normal[0], toward_camera.expand_as(mesh.normal[0]), atol=1e-5, rtol=0)
    front = depth_to_mesh(torch.full((1, n, n), depth), orbit_camera(0.0, 0.0), compute_normals=True)
    torch.testing.assert_close(front.normal[0], torch.tensor([0.0, 0.0, 1.0]).expand(n * n, 3))


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(2, 9),
    yaw=st.floats(-3.0, 3.0),
    pitch=st.floats(-1.2, 1.2),
    padding=st.sampled_from([None, 1, 4, "frustum"]),
)
def test_faces_are_counter_clockwise_from_the_source_camera(seed, n, yaw, pitch, padding):
    generator = torch.Generator().manual_seed(seed)
    depth = torch.exp(torch.empty(2, n, n).uniform_(-2.0, 4.0, generator=generator))
    camera = orbit_camera(torch.tensor([yaw, -yaw]), torch.tensor([pitch, pitch / 2]), 1.0)
    mesh = depth_to_mesh(depth.double(), camera.double(), padding=padding)
    homogeneous = torch.cat([mesh.position, torch.ones_like(mesh.position[..., :1])], dim=-1)
    cam = (camera.double()[:, None] @ homogeneous[..., None]).squeeze(-1)
    screen = cam[..., :2] / -cam[..., 2:3]  # x right, y up
    a, b, c = (torch.gather(screen, 1, mesh.faces[..., k, None].expand(-1, -1, 2)) for k in range(3))
    signed_area = (b - a)[..., 0] * (c - a)[..., 1] - (b - a)[..., 1] * (c - a)[..., 0]
    assert (signed_area > 0).all()


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(2, 8),
    atol=st.sampled_from([None, 0.0, 1.0, 3.0]),
    rtol=st.sampled_from([None, 0.0, 0.2, 0.75]),
    erode_rgb=st.integers(0, 3),
    padded=st.booleans(),
)
def test_flags_decode_to_the_official_rules(seed, n, atol, rtol, erode_rgb, padded):
    generator = torch.Generator().manual_seed(seed)
    # two levels with exact ranges (3 in depth, 0.75 in inverse depth) so that the strict ">" is tested at ties
    depth = 1 + 3 * torch.rand(1, n, n, generator=generator).round()
    mesh = depth_to_mesh(
        depth, orbit_camera(0.0, 0.0), padding=2 if padded else None, atol=atol, rtol=rtol, erode_rgb=erode_rgb
    )
    m = n + 2 if padded else n
    z = torch.nn.functional.pad(depth[None], (1, 1, 1, 1), mode="replicate")[0, 0] if padded else depth[0]
    z = z.reshape(-1)
    edge = torch.zeros(m * m, dtype=torch.bool)
    if atol is not None or rtol is not None:
        for face in mesh.faces[0].tolist():
            zs = z[face]
            if zs.max() - zs.min() > (atol or 0) and (1 / zs).max() - (1 / zs).min() > (rtol or 0):
                edge[face] = True
    near_edge = torch.zeros(m, m, dtype=torch.bool)
    for i, j in edge.reshape(m, m).nonzero().tolist():
        near_edge[max(i - erode_rgb, 0) : i + erode_rgb + 1, max(j - erode_rgb, 0) : j + erode_rgb + 1] = True
    ring = torch.ones(m, m, dtype=torch.bool)
    if padded:
        ring[1:-1, 1:-1] = False
    else:
        ring[:] = False
    flag = mesh.flag[0]
    assert torch.equal((flag & FLAG_EDGE).bool(), edge)
    assert torch.equal((flag & FLAG_PADDING).bool(), ring.reshape(-1))
    expected_eroded = near_edge.reshape(-1) if erode_rgb > 0 else torch.zeros(m * m, dtype=torch.bool)
    assert torch.equal((flag & FLAG_ERODED).bool(), expected_eroded)


def test_unproject_points_land_on_pixel_centres():
    n = 8
    depth = torch.rand(1, n, n) + 0.5
    points = unproject(depth, 45.0)
    assert points.shape == (1, 3, n, n)
    focal = 0.5 / math.tan(math.radians(22.5))
    pixel = points[:, :2] / -points[:, 2:] * focal * n + n / 2  # x right, y up, in pixels from bottom-left
    columns = torch.arange(n) + 0.5
    torch.testing.assert_close(pixel[0, 0], columns.expand(n, n))
    torch.testing.assert_close(pixel[0, 1], columns.flip(0)[:, None].expand(n, n))
    torch.testing.assert_close(-points[:, 2], depth)


@pytest.mark.parametrize(
    ("depth", "modelview", "options", "message"),
    [
        (torch.ones(1, 4, 5), None, {}, "square"),
        (torch.ones(4, 4), None, {}, "square"),
        (torch.ones(1, 1, 4, 4), None, {}, "square"),
        (torch.ones(1, 4, 4, dtype=torch.int64), None, {}, "floating-point"),
        (torch.ones(1, 4, 4).index_put((torch.tensor([0]),) * 3, torch.tensor(math.nan)), None, {}, "nan"),
        (torch.ones(1, 4, 4).index_put((torch.tensor([0]),) * 3, torch.tensor(math.inf)), None, {}, "inf"),
        (torch.zeros(1, 4, 4), None, {}, "> 0"),
        (-torch.ones(1, 4, 4), None, {}, "> 0"),
        (torch.ones(1, 4, 4), torch.eye(3), {}, "modelview"),
        (torch.ones(2, 4, 4), torch.eye(4).expand(3, 4, 4), {}, "batch"),
        (torch.ones(1, 4, 4), torch.full((4, 4), math.nan), {}, "NaN"),
        (torch.ones(1, 4, 4), None, {"padding": "ring"}, "padding"),
        (torch.ones(1, 4, 4), None, {"padding": -1}, "padding"),
        (torch.ones(1, 4, 4), None, {"padding": True}, "padding"),
        (torch.ones(1, 4, 4), None, {"atol": -0.1}, "atol"),
        (torch.ones(1, 4, 4), None, {"rtol": math.nan}, "rtol"),
        (torch.ones(1, 4, 4), None, {"erode_rgb": -1}, "erode_rgb"),
        (torch.ones(1, 4, 4), None, {"fov": 0.0}, "fov"),
    ],
)
def test_bad_input_is_rejected(depth, modelview, options, message):
    with pytest.raises(ValueError, match=message):
        depth_to_mesh(depth, torch.eye(4) if modelview is None else modelview, **options)
