"""The compiled CPU kernels (numba) against the plain PyTorch path they replace: same meshes, fragments,
interpolation, aggregation and warps, whatever the thread count."""

import functools
import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from iterview.geometry.aggregate import aggregate_render
from iterview.geometry.cameras import orbit_camera
from iterview.geometry.imageops import coverage_mask, depth_edge, lanczos_downsample
from iterview.geometry.mesh import FLAG_EDGE, depth_to_mesh, map_mesh
from iterview.geometry.raster import clip_coordinates, interpolate, rasterize, use_kernels
from iterview.geometry.warp import forward_backward_warp, render_simple

pytest.importorskip("numba")
pytestmark = pytest.mark.usefixtures("one_thread")

INFERENCE_MESH = dict(padding="frustum", atol=0.03, rtol=0.03, erode_rgb=3, compute_normals=True)


def bumpy_depth(batch: int, size: int, seed: int) -> torch.Tensor:
    """Linear depth (B, N, N): a smooth bump with a step, so meshes have slivers, skirts and discontinuities."""
    generator = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    bump = 1.2 + 0.3 * torch.sin(3 * x) * torch.cos(2 * y) + 0.6 * (x > 0.2)
    return bump + 0.05 * torch.rand(batch, size, size, generator=generator)


def both_backends(**kwargs):
    return (rasterize(**kwargs, backend="torch"), rasterize(**kwargs, backend="numba"))


@pytest.mark.parametrize("near", [0.01, 1.1])  # 1.1 cuts through the scene: near-plane clipping
def test_rasterize_kernels_match_the_torch_path(near):
    depth = bumpy_depth(3, 24, seed=0)
    mesh = depth_to_mesh(depth, orbit_camera(torch.zeros(3), torch.zeros(3)), padding="frustum")
    cameras = orbit_camera(torch.tensor([0.0, 0.5, -0.9]), torch.tensor([0.0, 0.2, -0.3]))
    generator = torch.Generator().manual_seed(1)
    face_mask = torch.rand(mesh.faces.shape[:2], generator=generator) > 0.05
    discard_back = torch.rand(mesh.faces.shape[:2], generator=generator) > 0.5
    reference, compiled = both_backends(
        position=mesh.position,
        faces=mesh.faces,
        modelview=cameras,
        size=61,
        near=near,
        face_mask=face_mask,
        discard_back=discard_back,
    )
    assert reference.covered.float().mean() > 0.3 and (~reference.front & reference.covered).any()
    assert torch.equal(compiled.face, reference.face)
    assert torch.equal(compiled.front, reference.front)
    torch.testing.assert_close(compiled.zbuffer, reference.zbuffer, rtol=0, atol=1e-7)
    # PyTorch's vectorised addcmul may fuse multiply-adds where the kernel rounds twice: barycentrics evaluated
    # near a small triangle's edge then differ in the last bits of their cancelling terms.
    torch.testing.assert_close(compiled.bary, reference.bary, rtol=0, atol=1e-4)
    assert (compiled.bary - reference.bary).abs().gt(1e-5).float().mean() < 0.01

    attributes = torch.cat([mesh.position, mesh.uv, mesh.flag[..., None]], dim=-1)
    expected = interpolate(reference, mesh.faces, attributes, backend="torch")
    torch.testing.assert_close(interpolate(reference, mesh.faces, attributes, backend="numba"), expected)


def test_aggregation_kernel_matches_shade_view_and_the_compositor():
    sources = orbit_camera(torch.tensor([-0.3, 0.0, 0.35]), torch.tensor([0.1, 0.0, -0.1]))
    depth = bumpy_depth(3, 20, seed=2)
    generator = torch.Generator().manual_seed(3)
    meshes = [depth_to_mesh(depth[k : k + 1], sources[k : k + 1], **INFERENCE_MESH) for k in range(3)]
    textures = [torch.rand(1, 3, 20, 20, generator=generator) for _ in range(3)]
    targets = orbit_camera(torch.tensor([0.2, -0.25]), torch.tensor([0.05, 0.1]))  # a batch: bands span both
    meshes = [map_mesh(mesh, lambda v: v.expand(2, *v.shape[1:])) for mesh in meshes]
    textures = [texture.expand(2, -1, -1, -1) for texture in textures]
    reference = aggregate_render(meshes, textures, targets, 60, backend="torch")
    compiled = aggregate_render(meshes, textures, targets, 60, backend="numba")
    assert reference.mask_depth.float().mean() > 0.5 and not reference.mask_depth.all()
    assert torch.equal(compiled.mask_color, reference.mask_color)
    assert torch.equal(compiled.mask_depth, reference.mask_depth)
    torch.testing.assert_close(compiled.color, reference.color, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(compiled.depth, reference.depth, rtol=1e-4, atol=0)


@pytest.mark.parametrize("stacked_faces", [10**6, 1500])  # alike views in one pass, or one view per pass
def test_aggregation_kernel_composites_views_in_order_across_stacked_passes(monkeypatch, stacked_faces):
    import iterview.geometry.aggregate as aggregate

    monkeypatch.setattr(aggregate, "_STACKED_FACES", stacked_faces)
    yaws, pitches = torch.tensor([-0.3, 0.0, 0.35, 0.15, -0.1]), torch.tensor([0.1, 0.0, -0.1, 0.05, 0.2])
    sources = orbit_camera(yaws, pitches)
    sizes = (20, 20, 16, 20, 20)  # the 16-px view cannot stack with its neighbours
    meshes = [
        depth_to_mesh(bumpy_depth(1, size, seed=k), sources[k : k + 1], **INFERENCE_MESH)
        for k, size in enumerate(sizes)
    ]
    generator = torch.Generator().manual_seed(7)
    textures = [torch.rand(1, 3, size, size, generator=generator) for size in sizes]
    assert aggregate._stackable_runs(meshes, textures) == (
        [(0, 2), (2, 3), (3, 5)] if stacked_faces > 10**5 else [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]
    )
    target = orbit_camera(torch.tensor([0.05]), torch.tensor([0.05]))
    reference = aggregate_render(meshes, textures, target, 48, backend="torch")
    compiled = aggregate_render(meshes, textures, target, 48, backend="numba")
    assert torch.equal(compiled.mask_color, reference.mask_color)
    assert torch.equal(compiled.mask_depth, reference.mask_depth)
    torch.testing.assert_close(compiled.color, reference.color, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(compiled.depth, reference.depth, rtol=1e-4, atol=0)


def test_simple_render_kernel_matches_rasterize_interpolate_and_sample_nearest():
    front = orbit_camera(torch.zeros(2), torch.zeros(2))
    mesh = depth_to_mesh(bumpy_depth(2, 24, seed=5), front, atol=0.03, rtol=0.03)  # with edge flags
    texture = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(6))
    side = orbit_camera(torch.tensor([0.4]), torch.tensor([0.1]))
    behind = orbit_camera(torch.tensor([2.8]), torch.tensor([0.1]), 2.5, torch.tensor([0.0, 0.0, -0.5]))
    cameras = torch.cat([side, behind])
    fragments = rasterize(mesh.position, mesh.faces, cameras, 72, backend="torch")
    assert (~fragments.covered).any() and (fragments.covered & ~fragments.front)[1].float().mean() > 0.3
    reference = render_simple(mesh, texture, cameras, 72, backend="torch")
    compiled = render_simple(mesh, texture, cameras, 72, backend="numba")
    assert 0.1 < reference.mask[0].float().mean() < fragments.front[0].float().mean()  # edges are masked
    assert torch.equal(compiled.mask, reference.mask)
    assert torch.equal(compiled.depth, reference.depth)
    # the barycentrics may differ in their last bits (see above): a uv on a texel border may pick its neighbour
    assert (compiled.color != reference.color).any(1).float().mean() < 0.002
    assert not compiled.color[1].any()  # back faces are black


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    size=st.integers(2, 20),
    batch=st.integers(1, 3),
    padding=st.sampled_from([None, "frustum", 1, 2.5, 32]),
    tolerances=st.sampled_from([(None, None), (0.03, 0.03), (0.05, None), (None, 0.1), (0.0, 0.0)]),
    erode_rgb=st.integers(0, 3),
    flat=st.booleans(),
)
def test_meshing_kernel_matches_the_torch_path(seed, size, batch, padding, tolerances, erode_rgb, flat):
    depth = bumpy_depth(batch, size, seed)
    if flat:  # a fronto-parallel patch: quads whose two diagonals tie
        depth[:, : size // 2, : size // 2] = 1.5
    cameras = orbit_camera(torch.rand(batch, generator=torch.Generator().manual_seed(seed)), torch.zeros(batch))
    options = dict(padding=padding, atol=tolerances[0], rtol=tolerances[1], erode_rgb=erode_rgb)
    reference = depth_to_mesh(depth, cameras, compute_normals=True, backend="torch", **options)
    compiled = depth_to_mesh(depth, cameras, compute_normals=True, backend="numba", **options)
    for name in ("position", "uv", "flag", "faces", "normal", "modelview"):
        assert torch.equal(getattr(compiled, name), getattr(reference, name)), name
    if tolerances != (None, None) and size > 4:
        assert (compiled.flag & FLAG_EDGE).any()


def test_clip_kernel_matches_clip_coordinates():
    from iterview.geometry.cameras import perspective
    from iterview.geometry.raster_kernels import clip_vertices

    position = torch.randn(3, 500, 3, generator=torch.Generator().manual_seed(8)) * 3
    cameras = orbit_camera(torch.tensor([0.0, 0.7, -2.0]), torch.tensor([0.0, 0.3, -0.4]), 2.0)
    clip = torch.empty(3, 500, 4)
    clip_vertices(position.numpy(), cameras.numpy(), perspective(45.0, 0.1, 200.0).numpy(), clip.numpy())
    assert torch.equal(clip, clip_coordinates(position, cameras, 45.0, 0.1, 200.0))


def test_forward_backward_warp_kernels_match_the_torch_path(monkeypatch):
    import iterview.geometry.warp as warp

    y, x = torch.meshgrid(torch.linspace(-1, 1, 24), torch.linspace(-1, 1, 24), indexing="ij")
    rgbd = torch.stack([x.abs(), y.abs(), (x * y).abs(), 0.5 + 0.3 * (x.square() + y.square() < 0.3)])[None]
    side = orbit_camera(torch.tensor([0.3, -0.2]), torch.tensor([0.1, 0.0]))
    compiled = forward_backward_warp(rgbd.expand(2, -1, -1, -1), side)
    monkeypatch.setattr(warp, "use_kernels", lambda device, backend: False)
    for name, function in (("depth_to_mesh", depth_to_mesh), ("lanczos_downsample", lanczos_downsample)):
        monkeypatch.setattr(warp, name, functools.partial(function, backend="torch"))
    for name, function in (("coverage_mask", coverage_mask), ("depth_edge", depth_edge)):
        monkeypatch.setattr(warp, name, functools.partial(function, backend="torch"))
    reference = forward_backward_warp(rgbd.expand(2, -1, -1, -1), side)
    assert 0.3 < reference.mask.mean() < 0.95
    assert torch.equal(compiled.mask, reference.mask)
    assert torch.equal(compiled.depth, reference.depth)
    # the barycentrics may differ in their last bits (see above): a uv on a texel border may pick its neighbour
    assert (compiled.color != reference.color).any(1).float().mean() < 0.002


def test_bands_are_dealt_out_spread_over_the_image():
    from iterview.geometry.raster_kernels import spread

    for count in (1, 2, 7, 8, 16, 640):
        order = [spread(i, count) for i in range(count)]
        assert sorted(order) == list(range(count))
        if count >= 8:  # a thread's run of consecutive bands reaches both halves of the image
            first_half = order[: count // 2]
            assert min(first_half) < count // 4 and max(first_half) >= 3 * count // 4


def test_kernels_give_the_same_result_on_any_thread_count():
    mesh = depth_to_mesh(bumpy_depth(2, 32, seed=4), orbit_camera(torch.zeros(2), torch.zeros(2)), padding=32)
    cameras = orbit_camera(torch.tensor([0.3, -0.2]), torch.tensor([0.1, 0.0]))
    one = rasterize(mesh.position, mesh.faces, cameras, 96, backend="numba")
    torch.set_num_threads(2)  # the fixture restores the count
    two = rasterize(mesh.position, mesh.faces, cameras, 96, backend="numba")
    for name in ("face", "bary", "zbuffer", "front"):
        assert torch.equal(getattr(one, name), getattr(two, name)), name


def test_kernel_loops_give_pytorchs_threads_to_the_kernels():
    import numba

    from iterview.geometry.raster_kernels import band_count, pytorch_on_one_thread, running_on

    torch.set_num_threads(2)  # the fixture restores the count
    kernel_threads = min(2, numba.config.NUMBA_NUM_THREADS)
    with pytorch_on_one_thread():
        assert torch.get_num_threads() == 1
        with running_on():
            assert numba.get_num_threads() == kernel_threads
            assert band_count(640) == 4 * kernel_threads  # the kernel's threads, not PyTorch's one
            assert band_count(3) == 3  # never more bands than rows
        with pytorch_on_one_thread(), running_on(1):  # nested: the outermost count stays
            assert (torch.get_num_threads(), numba.get_num_threads()) == (1, kernel_threads)
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with pytest.raises(RuntimeError, match="inside"), pytorch_on_one_thread():
        raise RuntimeError("inside")
    assert torch.get_num_threads() == 2  # restored after an error too
    with running_on(1):
        assert numba.get_num_threads() == 1


def test_backend_choice():
    assert use_kernels(torch.device("cpu"), "auto")
    assert not use_kernels(torch.device("cpu"), "torch")
    with pytest.raises(ValueError, match="backend must be"):
        use_kernels(torch.device("cpu"), "opengl")
    with pytest.raises(ValueError, match="CPU tensors"):
        use_kernels(torch.device("meta"), "numba")


FAULTS_PER_WARP = """
import resource, torch
from iterview.geometry import raster_kernels
from iterview.geometry.cameras import orbit_camera
from iterview.geometry.warp import forward_backward_warp
y, x = torch.meshgrid(torch.linspace(-1, 1, 128), torch.linspace(-1, 1, 128), indexing="ij")
rgbd = torch.stack([x.abs(), y.abs(), (x * y).abs(), 0.5 + 0.3 * (x.square() + y.square() < 0.3)])[None]
side = orbit_camera(torch.tensor([0.15]), torch.tensor([0.05]))
for _ in range(3):
    forward_backward_warp(rgbd, side)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    forward_backward_warp(rgbd, side)
print(raster_kernels.keep_freed_memory(), (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt and Linux page-fault counts")
def test_warps_reuse_freed_memory_instead_of_faulting_in_new_pages():
    def faults(**env: str) -> tuple[str, float]:
        environment = {**os.environ, **env, "OMP_NUM_THREADS": "1"}
        out = subprocess.run([sys.executable, "-c", FAULTS_PER_WARP], env=environment, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        applied, count = out.stdout.split()
        return applied, float(count)

    applied, count = faults()
    assert applied == "True" and count < 400  # 1-180 measured, ~1,400 before
    small_thresholds = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
    applied, count = faults(**small_thresholds)  # the process's own setting wins: buffers are mapped afresh
    assert applied == "False" and count > 2000


THREADING_LAYER = """
import importlib.metadata, multiprocessing, numba, torch
from iterview.geometry.cameras import orbit_camera
from iterview.geometry.warp import forward_backward_warp

def warp(_):
    rgbd = torch.rand(1, 4, 16, 16, generator=torch.Generator().manual_seed(0)) * 0.2 + 0.4
    return forward_backward_warp(rgbd, orbit_camera(torch.tensor([0.1]), torch.tensor([0.0]))).mask.sum().item()

first = warp(0)
with multiprocessing.get_context("fork").Pool(2) as pool:  # DataLoader workers fork after kernels ran
    forked = pool.map(warp, range(2))
tbb = any(d.metadata["Name"] == "tbb" for d in importlib.metadata.distributions())
print(numba.threading_layer(), tbb, first == forked[0] == forked[1])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork")
def test_kernels_run_on_tbb_where_installed_and_survive_a_fork():
    environment = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    out = subprocess.run([sys.executable, "-c", THREADING_LAYER], env=environment, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    layer, tbb_installed, same = out.stdout.split()
    assert same == "True"
    assert layer == ("tbb" if tbb_installed == "True" else "workqueue")
