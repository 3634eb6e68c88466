import math
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import iterview.geometry.raster as raster
from iterview.geometry.cameras import orbit_camera
from iterview.geometry.mesh import depth_to_mesh
from iterview.geometry.raster import Fragments, interpolate, rasterize, sample_nearest, window_to_linear

pytestmark = pytest.mark.usefixtures("one_thread")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def ray_cast(vertices, faces, size, fov, near, far):
    """Float64 oracle: the nearest hit of each pixel-centre ray from a camera at the origin looking down -z.

    vertices: (V, 3) camera space; faces: (F, 3). Returns face (S, S) (-1 where empty), bary (S, S, 3),
    window depth (S, S), front (S, S), and `clear` (S, S): False where the answer is ambiguous at the
    rasteriser's precision, i.e. the sample lies within 1/128 pixel of an edge of a triangle clipped to
    [near, far] (GL snaps vertices to 1/256 pixel; a sample on an edge is a tie for the fill rule), or the
    nearest two hits are within 1e-6 in depth.
    """
    v = vertices.double()[faces]  # (F, 3, 3)
    half = math.tan(math.radians(fov) / 2)
    centres = (torch.arange(size, dtype=torch.float64) + 0.5) / size * 2 - 1
    ndc_y, ndc_x = torch.meshgrid(-centres, centres, indexing="ij")
    ray = torch.stack([ndc_x * half, ndc_y * half, -torch.ones_like(ndc_x)], -1).reshape(-1, 1, 3)
    e1, e2 = v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]
    p = torch.linalg.cross(ray.expand(-1, len(v), 3), e2.expand(len(ray), -1, 3), dim=-1)
    det = (e1 * p).sum(-1)
    s = -v[:, 0].expand(len(ray), -1, 3)
    u = (s * p).sum(-1) / det
    q = torch.linalg.cross(s, e1.expand(len(ray), -1, 3), dim=-1)
    w = (ray * q).sum(-1) / det
    t = (e2 * q).sum(-1) / det  # ray z is -1, so t is the eye depth
    bary = torch.stack([1 - u - w, u, w], -1)
    hit = (bary >= 0).all(-1) & (t >= near) & (t <= far)
    window = ((far + near) / (far - near) - 2 * far * near / ((far - near) * t) + 1) / 2
    window = torch.where(hit, window, math.inf)
    best, face = window.min(1)
    second = window.topk(2, dim=1, largest=False).values[:, 1] if len(v) > 1 else torch.full_like(best, math.inf)
    clear = ((second - best > 1e-6) | ~best.isfinite()) & (_edge_distance(v, size, half, near, far) > 1 / 128)
    face = torch.where(best.isfinite(), face, -1)
    front = (torch.linalg.cross(e1, e2, dim=-1) * -v[:, 0]).sum(-1) > 0
    chosen = face.clamp(min=0)
    shape = (size, size)
    return (
        face.reshape(shape),
        bary[torch.arange(len(ray)), chosen].reshape(*shape, 3),
        torch.where(face >= 0, best, 1.0).reshape(shape),
        (front[chosen] & (face >= 0)).reshape(shape),
        clear.reshape(shape),
    )


def _edge_distance(triangles, size, half, near, far):
    """(S²,) distance in pixels from each sample to the nearest edge of the triangles (F, 3, 3) clipped to the
    depth range [near, far] and projected."""
    centres = torch.arange(size, dtype=torch.float64) + 0.5
    row, column = (c.reshape(-1) for c in torch.meshgrid(centres, centres, indexing="ij"))
    distance = torch.full((size * size,), math.inf, dtype=torch.float64)
    for triangle in triangles:
        polygon = list(triangle)
        for plane, sign in ((near, 1), (far, -1)):  # Sutherland-Hodgman on depth: -z >= near, -z <= far
            clipped = []
            for a, b in zip(polygon, polygon[1:] + polygon[:1], strict=True):
                a_in, b_in = sign * (-a[2] - plane) >= 0, sign * (-b[2] - plane) >= 0
                if a_in:
                    clipped.append(a)
                if a_in != b_in:
                    clipped.append(a + (b - a) * (-plane - a[2]) / (b[2] - a[2]))
            polygon = clipped
        if len(polygon) < 3:
            continue
        points = torch.stack(polygon)
        x = (points[:, 0] / -points[:, 2] / half + 1) / 2 * size
        y = (1 - points[:, 1] / -points[:, 2] / half) / 2 * size
        for k in range(len(points)):
            ax, ay, bx, by = x[k], y[k], x[(k + 1) % len(points)], y[(k + 1) % len(points)]
            length = ((bx - ax) ** 2 + (by - ay) ** 2).clamp(min=1e-30)
            along = (((column - ax) * (bx - ax) + (row - ay) * (by - ay)) / length).clamp(0, 1)
            gap = torch.hypot(column - ax - along * (bx - ax), row - ay - along * (by - ay))
            distance = torch.minimum(distance, gap)
    return distance


def assert_matches_ray_cast(vertices, faces, size, fov=45.0, near=0.1, far=10.0):
    fragments = rasterize(vertices[None], faces[None], torch.eye(4)[None], size, fov, near, far)
    face, bary, depth, front, clear = ray_cast(vertices, faces, size, fov, near, far)
    assert torch.equal(fragments.face[0][clear], face[clear])
    hit = clear & (face >= 0)
    assert torch.equal(fragments.front[0][hit], front[hit])
    torch.testing.assert_close(fragments.bary[0][hit].double(), bary[hit], atol=2e-4, rtol=0)
    torch.testing.assert_close(fragments.zbuffer[0][hit].double(), depth[hit], atol=1e-4, rtol=0)
    assert (fragments.zbuffer[0][~fragments.covered[0]] == 1).all()
    return fragments


coordinate = st.floats(-1.5, 1.5)
vertex = st.tuples(coordinate, coordinate, st.floats(-12.0, 0.6))


@settings(max_examples=60, deadline=None)
@given(triangles=st.lists(st.tuples(vertex, vertex, vertex), min_size=1, max_size=6), size=st.sampled_from([16, 23]))
def test_random_triangles_match_a_ray_caster(triangles, size):
    # Vertices may lie behind the camera (z > 0), between it and the near plane, or beyond the far plane.
    vertices = torch.tensor(triangles, dtype=torch.float32).reshape(-1, 3)
    faces = torch.arange(len(vertices)).reshape(-1, 3)
    assert_matches_ray_cast(vertices, faces, size)


def test_near_plane_clipping_and_guard_band():
    # A wall from far away to right in front of the camera: it crosses the near plane, and its near vertices
    # project millions of pixels away (guard-band clipping keeps the integer arithmetic exact).
    vertices = torch.tensor(
        [[-3.0, -1.0, -4.0], [3.0, -1.0, -4.0], [-3.0, 0.5, 0.5], [3.0, 0.5, 0.5], [0.2, 0.1, -1e-4], [0.4, 0.3, -5.0]]
    )
    faces = torch.tensor([[0, 1, 2], [2, 1, 3], [4, 0, 5]])
    fragments = assert_matches_ray_cast(vertices, faces, 32, near=2e-4)
    assert fragments.covered.float().mean() > 0.3


def test_fill_rule_covers_each_sample_once():
    # Every vertex of this grid mesh sits exactly on a sample centre and every edge passes through samples:
    # drawing each face alone, every sample must be covered exactly once, top and left borders included.
    n = 8
    mesh = depth_to_mesh(torch.full((1, n, n), 2.0), orbit_camera(0.0, 0.0))
    num_faces = mesh.faces.shape[1]
    one_face = torch.eye(num_faces, dtype=torch.bool)
    fragments = rasterize(
        mesh.position.expand(num_faces, -1, -1),
        mesh.faces.expand(num_faces, -1, -1),
        mesh.modelview.expand(num_faces, -1, -1),
        n,
        face_mask=one_face,
    )
    count = fragments.covered.sum(0)
    expected = torch.zeros(n, n, dtype=torch.long)
    expected[:-1, :-1] = 1  # the mesh spans pixel centres 0.5 .. n - 0.5: bottom and right borders are not owned
    assert torch.equal(count, expected)


def test_depth_test_nearest_wins_and_ties_keep_the_earlier_face():
    near_tri = [[-1.0, -1.0, -2.0], [1.0, -1.0, -2.0], [0.0, 1.0, -2.0]]
    far_tri = [[-1.0, -1.0, -3.0], [1.0, -1.0, -3.0], [0.0, 1.0, -3.0]]
    vertices = torch.tensor(far_tri + near_tri + near_tri)
    faces = torch.arange(9).reshape(3, 3)
    fragments = rasterize(vertices[None], faces[None], torch.eye(4)[None], 16)
    assert fragments.covered.any()
    assert (fragments.face[fragments.covered] == 1).all()  # nearer than face 0, drawn before its twin face 2


@pytest.mark.parametrize("device", DEVICES)
def test_batch_elements_use_their_own_camera_and_equal_single_renders(device):
    depth = 1.0 + 0.3 * torch.rand(3, 12, 12, generator=torch.Generator().manual_seed(1))
    mesh = depth_to_mesh(depth, orbit_camera(torch.zeros(3), torch.zeros(3)), padding=2)
    cameras = orbit_camera(torch.tensor([0.0, 0.2, -0.3]), torch.tensor([0.0, 0.1, -0.1])).to(device)
    batch = rasterize(mesh.position.to(device), mesh.faces.to(device), cameras, 20)
    for b in range(3):
        single = rasterize(
            mesh.position[b : b + 1].to(device), mesh.faces[b : b + 1].to(device), cameras[b : b + 1], 20
        )
        for name in ("face", "bary", "zbuffer", "front"):
            assert torch.equal(getattr(batch, name)[b], getattr(single, name)[0]), name


def test_memory_chunking_does_not_change_the_result(monkeypatch):
    depth = 1.0 + 0.5 * torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(2))
    mesh = depth_to_mesh(depth, orbit_camera(torch.zeros(2), torch.zeros(2)), padding="frustum")
    cameras = orbit_camera(torch.tensor([0.3, -0.2]), torch.tensor([0.1, 0.0]))
    whole = rasterize(mesh.position, mesh.faces, cameras, 48, near=0.01)
    monkeypatch.setattr(raster, "_GROUP_FACES", 1)
    monkeypatch.setattr(raster, "_MAX_BANDS", 64)
    monkeypatch.setattr(raster, "_MAX_CANDIDATES", 256)
    chunked = rasterize(mesh.position, mesh.faces, cameras, 48, near=0.01)
    for name in ("face", "bary", "zbuffer", "front"):
        assert torch.equal(getattr(whole, name), getattr(chunked, name)), name


def test_face_mask_and_discard_back():
    vertices = torch.tensor([[-1.0, -1.0, -2.0], [1.0, -1.0, -2.0], [0.0, 1.0, -2.0]])
    ccw, cw = torch.tensor([[[0, 1, 2]]]), torch.tensor([[[0, 2, 1]]])
    camera = torch.eye(4)[None]
    assert rasterize(vertices[None], ccw, camera, 8).front.any()
    back = rasterize(vertices[None], cw, camera, 8)
    assert back.covered.any() and not back.front.any()
    assert not rasterize(vertices[None], cw, camera, 8, discard_back=torch.tensor([[True]])).covered.any()
    assert rasterize(vertices[None], ccw, camera, 8, discard_back=torch.tensor([[True]])).covered.any()
    assert not rasterize(vertices[None], ccw, camera, 8, face_mask=torch.tensor([[False]])).covered.any()


def test_interpolate_reproduces_linear_attributes():
    vertices = torch.tensor([[-1.0, -1.0, -2.0], [1.5, -1.0, -3.0], [0.0, 1.0, -1.5], [0.0, 0.0, -9.0]])
    vertices = torch.stack([vertices, vertices.flip(0) * torch.tensor([1.0, -1.0, 1.0])])  # two different meshes
    faces = torch.tensor([[[0, 1, 2]], [[1, 2, 3]]])
    fragments = rasterize(vertices, faces, torch.eye(4).expand(2, 4, 4), 16)
    # Camera-space position is linear on a triangle: its interpolation must lie on the pixel rays.
    position = interpolate(fragments, faces, vertices)
    covered = fragments.covered
    assert covered[0].any() and covered[1].any() and not torch.equal(covered[0], covered[1])
    ray = position[covered][:, :2] / -position[covered][:, 2:]
    centres = (torch.arange(16) + 0.5) / 16 * 2 - 1
    ndc_y, ndc_x = torch.meshgrid(-centres, centres, indexing="ij")
    expected = torch.stack([ndc_x, ndc_y], -1).expand(2, 16, 16, 2)[covered] * math.tan(math.radians(22.5))
    torch.testing.assert_close(ray, expected, atol=1e-5, rtol=0)
    assert (position[~covered] == 0).all()


def test_sample_nearest_takes_the_texel_under_uv_and_clamps():
    texture = torch.arange(12.0).reshape(1, 1, 3, 4)
    uv = torch.tensor([[[[0.0, 0.0], [0.99, 0.99], [0.26, 0.34], [-0.5, 1.5]]]])
    out = sample_nearest(texture, uv)
    assert out.flatten().tolist() == [0.0, 11.0, 5.0, 8.0]


def test_window_to_linear_matches_the_official_read_back():
    z = window_to_linear(torch.tensor([0.0, 1.0]), 0.1, 200.0)
    assert z[0].item() == pytest.approx(0.1)
    assert z[1].item() == pytest.approx(199.98779, abs=1e-4)  # float32 (f + n) - (f - n), as GL reads it back
    assert window_to_linear(torch.tensor([0.0]), 0.01, 200.0).item() == pytest.approx(0.01)


def test_bad_input_raises_clear_errors():
    vertices = torch.zeros(1, 3, 3)
    faces = torch.tensor([[[0, 1, 2]]])
    camera = torch.eye(4)[None]
    with pytest.raises(ValueError, match="position must be"):
        rasterize(vertices[0], faces, camera, 8)
    with pytest.raises(ValueError, match="faces must be integer"):
        rasterize(vertices, faces.float(), camera, 8)
    with pytest.raises(ValueError, match="outside"):
        rasterize(vertices, faces + 1, camera, 8)
    with pytest.raises(ValueError, match="modelview"):
        rasterize(vertices, faces, torch.eye(4), 8)
    with pytest.raises(ValueError, match="size"):
        rasterize(vertices, faces, camera, 0)
    with pytest.raises(ValueError, match="finite"):
        rasterize(torch.full((1, 3, 3), math.nan), faces, camera, 8)
    with pytest.raises(ValueError, match="face_mask"):
        rasterize(vertices, faces, camera, 8, face_mask=torch.ones(2, dtype=torch.bool))


def _python_calls_of_a_render(n: int) -> tuple[int, Fragments]:
    """Python function calls made while rasterising an n² depth mesh (padding ring) at 3n² (3× SSAA)."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, n), torch.linspace(-1, 1, n), indexing="ij")
    depth = (1.5 + 0.1 * torch.sin(3 * x) * torch.cos(2 * y))[None]
    camera = orbit_camera(torch.zeros(1), torch.zeros(1))
    mesh = depth_to_mesh(depth, camera, padding=n)
    calls = [0]

    def count(frame, event, arg):
        calls[0] += event == "call"

    sys.setprofile(count)
    try:
        fragments = rasterize(mesh.position, mesh.faces, camera, 3 * n)
    finally:
        sys.setprofile(None)
    return calls[0], fragments


def test_384_render_of_a_128_mesh_loops_over_no_triangle_in_python():
    """The training warp's scale (128² mesh, 32k triangles, rendered at 384²): the Python work does not grow
    with the triangle count (4× the triangles of the 64² case), and every pixel is covered by the padded mesh."""
    small, _ = _python_calls_of_a_render(64)
    large, fragments = _python_calls_of_a_render(128)
    assert fragments.face.shape == (1, 384, 384) and (fragments.face >= 0).all()
    assert large <= 1.5 * small + 50, (small, large)
    assert large < 2 * 128 * 128, "far fewer Python calls than triangles"
