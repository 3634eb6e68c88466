import cv2
import numpy as np
import pytest
import torch
from geometry_support import indices, size_of
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import load_file

from iterview.geometry.cameras import linear_to_zbuffer
from iterview.geometry.imageops import (
    coverage_mask,
    depth_edge,
    erode,
    gaussian_blur3,
    lanczos_downsample,
    subsample_center,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
BACKENDS = ["torch", "numba"]  # on the CPU: the PyTorch path and the compiled kernels


@pytest.fixture(scope="module")
def warping(reference):
    return load_file(reference / "warping" / "warping.safetensors")


def chw(array: torch.Tensor, device="cpu") -> torch.Tensor:
    """Reference H×W×C -> (1, C, H, W)."""
    return array.permute(2, 0, 1)[None].to(device)


def pil_lanczos(image: torch.Tensor, size: int) -> torch.Tensor:
    """The official call on one (C, H, W) image."""
    levels = (np.clip(image.permute(1, 2, 0).numpy(), 0, 1) * 255).astype(np.uint8)
    pil = Image.fromarray(levels[..., 0] if levels.shape[-1] == 1 else levels)
    resized = np.asarray(pil.resize((size, size), Image.LANCZOS))
    return torch.from_numpy(resized.reshape(size, size, -1).astype(np.float32) / 255).permute(2, 0, 1)


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    height=st.integers(1, 70),
    width=st.integers(1, 70),
    size=st.integers(1, 40),
    channels=st.sampled_from([1, 3]),
)
def test_lanczos_equals_pil_bit_for_bit(backend, seed, height, width, size, channels):
    generator = torch.Generator().manual_seed(seed)
    image = torch.rand(2, channels, height, width, generator=generator) * 1.4 - 0.2  # out of range gets clipped
    ours = lanczos_downsample(image, size, backend=backend)
    assert ours.shape == (2, channels, size, size)
    for b in range(2):
        assert torch.equal(ours[b], pil_lanczos(image[b], size))


@pytest.mark.parametrize("device", DEVICES)
def test_lanczos_ssaa3_batch_equals_pil(warping, device):
    cam = indices(warping, r"fbw_cam(\d+)_color")[0]  # the warp's supersampled render and its image size
    render, size = size_of(warping, f"fbw_cam{cam}_pass1_color"), size_of(warping, f"fbw_cam{cam}_color")
    image = torch.rand(3, 3, render, render, generator=torch.Generator().manual_seed(1))
    ours = lanczos_downsample(image.to(device), size).cpu()
    for b in range(3):
        assert torch.equal(ours[b], pil_lanczos(image[b], size))


@pytest.mark.parametrize("device", DEVICES)
def test_fbw_and_aggregation_colours_match_official(warping, device):
    cameras, targets = indices(warping, r"fbw_cam(\d+)_color"), indices(warping, r"agg_target(\d+)_color")
    assert cameras and targets
    for cam in cameras:
        size = size_of(warping, f"fbw_cam{cam}_color")
        colour = lanczos_downsample(chw(warping[f"fbw_cam{cam}_pass1_color"], device), size)
        expected = chw(warping[f"fbw_cam{cam}_color"], device)
        assert torch.equal(colour * chw(warping[f"fbw_cam{cam}_mask"], device), expected)
    for target in targets:
        size = size_of(warping, f"agg_target{target}_color")
        colour = lanczos_downsample(chw(warping[f"agg_target{target}_raw_color"], device), size)
        expected = chw(warping[f"agg_target{target}_color"], device)
        assert torch.equal(colour * chw(warping[f"agg_target{target}_mask_rgb"], device), expected)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    height=st.integers(2, 30),
    width=st.integers(2, 30),
    sigma=st.lists(st.floats(1e-3, 1.001), min_size=1, max_size=3),
)
def test_gaussian_blur3_equals_cv2(seed, height, width, sigma):
    generator = torch.Generator().manual_seed(seed)
    image = torch.rand(len(sigma), 3, height, width, generator=generator)
    ours = gaussian_blur3(image, torch.tensor(sigma))
    for b, s in enumerate(sigma):
        expected = cv2.GaussianBlur(image[b].permute(1, 2, 0).numpy(), (3, 3), s)
        torch.testing.assert_close(ours[b], torch.from_numpy(expected).permute(2, 0, 1), atol=1e-6, rtol=0)


def test_gaussian_blur3_tiny_sigma_is_identity_and_preserves_constants():
    image = torch.rand(2, 3, 9, 9)
    torch.testing.assert_close(gaussian_blur3(image, torch.tensor([1e-3, 1e-3])), image)
    flat = torch.full((1, 1, 5, 7), 0.3)
    torch.testing.assert_close(gaussian_blur3(flat, torch.tensor([0.8])), flat)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    height=st.integers(1, 24),
    width=st.integers(1, 24),
    kernel=st.integers(1, 9),
    density=st.floats(0.0, 0.3),
)
def test_erode_equals_cv2(seed, height, width, kernel, density):
    generator = torch.Generator().manual_seed(seed)
    mask = torch.rand(2, 1, height, width, generator=generator) >= density
    ours = erode(mask, kernel)
    for b in range(2):
        expected = cv2.erode(mask[b, 0].numpy().astype(np.uint8), np.ones((kernel, kernel), np.uint8))
        assert torch.equal(ours[b, 0], torch.from_numpy(expected.astype(bool)))


def test_erode_border_does_not_erode():
    assert erode(torch.ones(1, 1, 4, 4, dtype=torch.bool), 9).all()


def brute_force_depth_edge(depth: np.ndarray, atol: float, rtol: float) -> np.ndarray:
    d = np.maximum(depth, 1e-6)
    count = np.zeros(d.shape, dtype=int)
    height, width = d.shape
    for i in range(height):
        for j in range(width):
            for di, dj in ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)):
                y, x = i + di, j + dj
                if 0 <= y < height and 0 <= x < width:
                    a, b = d[i, j], d[y, x]
                    count[i, j] += abs(a - b) > atol and abs(1 / a - 1 / b) > rtol
    return count < 3


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), height=st.integers(1, 12), width=st.integers(1, 12))
def test_depth_edge_counts_discontinuous_neighbour_pairs(backend, seed, height, width):
    generator = torch.Generator().manual_seed(seed)
    depth = torch.rand(2, 1, height, width, generator=generator).round() * torch.rand(1, generator=generator) * 2
    ours = depth_edge(depth, 0.02, 0.02, backend=backend)
    for b in range(2):
        assert np.array_equal(ours[b, 0].numpy(), brute_force_depth_edge(depth[b, 0].double().numpy(), 0.02, 0.02))


def test_depth_edge_keeps_smooth_depth_and_drops_step_lines():
    ramp = torch.linspace(0.2, 0.3, 16).expand(1, 1, 16, 16)
    assert depth_edge(ramp, 0.02, 0.02).all()
    step = torch.full((1, 1, 8, 8), 0.2)
    step[..., 4:] = 0.8
    kept = depth_edge(step, 0.02, 0.02)[0, 0]
    assert not kept[1:-1, 3:5].any() and kept[:, :3].all() and kept[:, 5:].all()
    assert kept[0, 3] and kept[-1, 4]  # the corners of the step line only take part in two pairs


@pytest.mark.parametrize("device", DEVICES)
def test_warp_and_aggregation_masks_match_official(warping, device):
    """Centre sub-sampling, the 7-of-9 coverage test, depth_edge on z-buffer depth and the 5×5 mask_rgb erosion."""
    for cam in (0, 1):
        depth = linear_to_zbuffer(
            subsample_center(chw(warping[f"fbw_cam{cam}_pass1_depth_linear"], device), 3), 0.5, 100
        )
        covered = coverage_mask(chw(warping[f"fbw_cam{cam}_pass1_mask"], device).bool(), 3)
        mask = covered & depth_edge(depth, 0.02, 0.02)
        expected = chw(warping[f"fbw_cam{cam}_mask"], device).bool()
        assert not torch.equal(covered, expected)  # depth_edge does remove pixels here
        assert torch.equal(mask, expected)
        torch.testing.assert_close(depth * mask, chw(warping[f"fbw_cam{cam}_depth"], device), atol=1e-6, rtol=0)
    for target in range(3):
        prefix = f"agg_target{target}"
        depth = linear_to_zbuffer(subsample_center(chw(warping[f"{prefix}_raw_depth"], device), 3), 0.6, 5)
        torch.testing.assert_close(depth, chw(warping[f"{prefix}_depth_convex"], device), atol=1e-6, rtol=0)
        mask = coverage_mask(chw(warping[f"{prefix}_raw_mask_depth"], device).bool(), 3) & depth_edge(depth, 0.03, 0.03)
        mask_rgb = coverage_mask(chw(warping[f"{prefix}_raw_mask_color"], device).bool(), 3) & erode(mask, 5)
        assert torch.equal(mask, chw(warping[f"{prefix}_mask"], device).bool())
        assert torch.equal(mask_rgb, chw(warping[f"{prefix}_mask_rgb"], device).bool())


@pytest.mark.parametrize("backend", BACKENDS)
def test_subsample_center_and_coverage_thresholds(backend):
    x = torch.arange(36.0).reshape(1, 1, 6, 6)
    assert torch.equal(subsample_center(x, 3), torch.tensor([[[[7.0, 10.0], [25.0, 28.0]]]]))
    assert torch.equal(
        subsample_center(torch.arange(100.0).reshape(10, 10), 5), torch.tensor([[22.0, 27.0], [72.0, 77.0]])
    )
    blocks = torch.zeros(1, 1, 3, 6, dtype=torch.bool)
    blocks[..., :2, :3] = True  # 6 of 9: not covered
    blocks[..., :, 3:] = True
    blocks[..., 0, 3:5] = False  # 7 of 9: covered
    assert coverage_mask(blocks, 3, backend=backend).tolist() == [[[[False, True]]]]
    assert coverage_mask(blocks, 3, threshold=0.5, backend=backend).tolist() == [[[[True, True]]]]
    assert coverage_mask(blocks[..., :3], 1, threshold=1.0, backend=backend).sum() == 0  # more than all: none


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: lanczos_downsample(torch.rand(3, 8, 8), 4), "B, C, H, W"),
        (lambda: lanczos_downsample(torch.full((1, 3, 8, 8), float("nan")), 4), "NaN"),
        (lambda: lanczos_downsample(torch.rand(1, 3, 8, 8), 0), "size"),
        (lambda: gaussian_blur3(torch.rand(2, 3, 8, 8), torch.tensor([0.5])), "sigma"),
        (lambda: gaussian_blur3(torch.rand(1, 3, 8, 8), torch.tensor([0.0])), "sigma"),
        (lambda: gaussian_blur3(torch.rand(1, 3, 1, 8), torch.tensor([0.5])), "H, W >= 2"),
        (lambda: erode(torch.ones(1, 1, 4, 4), 3), "bool"),
        (lambda: erode(torch.ones(1, 1, 4, 4, dtype=torch.bool), 0), "kernel"),
        (lambda: depth_edge(torch.rand(4, 4), 0.1, 0.1), "B, 1, H, W"),
        (lambda: subsample_center(torch.rand(1, 1, 7, 6), 3), "H·3"),
        (lambda: coverage_mask(torch.ones(1, 1, 6, 6, dtype=torch.bool), 0), "ssaa"),
    ],
)
def test_bad_input_is_rejected(call, message):
    with pytest.raises(ValueError, match=message):
        call()
