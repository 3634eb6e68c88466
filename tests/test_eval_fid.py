"""FID / KID / IS: the Inception port, the official protocol and the formulas against reference implementations."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from fid_helper_pytorch._resample_func import nv_bilinear
from PIL import Image

from iterview.eval.fid import (
    Features,
    FeatureStats,
    ImageFiles,
    center_crop_resize,
    extract_features,
    frechet_distance,
    generated_images,
    image_metrics,
    inception_score,
    kernel_inception_distance,
    list_images,
    real_stats,
    seeded_subset,
)
from iterview.eval.inception import (
    InceptionV3,
    _from_torchvision_names,
    _tf_name,
    bundled_weights_path,
    load_inception,
    tf_bilinear_resize,
)


@pytest.fixture(scope="module")
def inception() -> InceptionV3:
    return load_inception()


def _scenes(count: int, size: int, seed: int = 0) -> torch.Tensor:
    """Smooth coloured images with a disc: (count, 3, size, size) uint8."""
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    images = []
    for _ in range(count):
        a, b, c = torch.rand(3, 3, 1, 1, generator=g)
        cx, cy, r = torch.rand(3, generator=g) * torch.tensor([0.6, 0.6, 0.3]) + torch.tensor([0.2, 0.2, 0.1])
        disc = ((xs - cx) ** 2 + (ys - cy) ** 2 < r**2).float()
        images.append((a * xs + b * ys) * (1 - disc) + c * disc)
    return (torch.stack(images) * 255).round().to(torch.uint8)


# ------------------------------------------------------------------------------------------- the network


def test_port_matches_the_bundled_torchscript_with_nvidia_resize(inception):
    images = _scenes(2, 40)
    reference = torch.jit.load(str(bundled_weights_path())).eval()
    with torch.inference_mode():
        ours = inception(images)
        theirs = reference((nv_bilinear(images.float(), (299, 299)) - 128) / 128)
    assert ours.shape == (2, 2048)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_tf_bilinear_resize_matches_nvidia_resize_and_tf1_semantics():
    x = torch.rand(2, 3, 37, 53, dtype=torch.float64)
    torch.testing.assert_close(tf_bilinear_resize(x, 299), nv_bilinear(x, (299, 299)))
    big = torch.rand(1, 3, 401, 350, dtype=torch.float64)
    torch.testing.assert_close(tf_bilinear_resize(big, 299), nv_bilinear(big, (299, 299)))
    # TF1 (align_corners=False, no half-pixel): out[i] samples in[i·in/out], clamped at the last pixel.
    row = torch.tensor([[[[0.0, 10.0]]]]).expand(1, 1, 2, 2)
    assert tf_bilinear_resize(row, 4)[0, 0, 0].tolist() == [0.0, 5.0, 10.0, 10.0]


_A = ["branch1x1", "branch5x5_1", "branch5x5_2", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3", "branch_pool"]
_B = ["branch3x3", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"]
_C = ["branch1x1", "branch_pool"] + [f"branch7x7_{i}" for i in (1, 2, 3)] + [f"branch7x7dbl_{i}" for i in range(1, 6)]
_D = ["branch3x3_1", "branch3x3_2"] + [f"branch7x7x3_{i}" for i in range(1, 5)]
_E = ["branch1x1", "branch3x3_1", "branch3x3_2a", "branch3x3_2b", "branch3x3dbl_1", "branch3x3dbl_2"]
_E += ["branch3x3dbl_3a", "branch3x3dbl_3b", "branch_pool"]
_TORCHVISION_BLOCKS = {"5b": _A, "5c": _A, "5d": _A, "6a": _B, "6b": _C, "6c": _C, "6d": _C, "6e": _C}
_TORCHVISION_BLOCKS |= {"7a": _D, "7b": _E, "7c": _E}
TORCHVISION_CONVS = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3"] + [
    f"Mixed_{block}.{name}" for block, names in _TORCHVISION_BLOCKS.items() for name in names
]


def test_torchvision_names_map_one_to_one_onto_the_tf_graph_with_matching_shapes():
    ours = {k.removesuffix(".weight"): v.shape for k, v in InceptionV3().state_dict().items() if k.endswith("weight")}
    mapped = [_tf_name(name) for name in TORCHVISION_CONVS]
    assert len(TORCHVISION_CONVS) == 94 and sorted(mapped) == sorted(ours)
    # Known torchvision shapes pin the order inside factorised towers.
    known = {
        "Mixed_5b.branch5x5_2": (64, 48, 5, 5),
        "Mixed_6a.branch3x3": (384, 288, 3, 3),
        "Mixed_6b.branch7x7_2": (128, 128, 1, 7),
        "Mixed_6b.branch7x7_3": (192, 128, 7, 1),
        "Mixed_6c.branch7x7dbl_2": (160, 160, 7, 1),
        "Mixed_7a.branch7x7x3_4": (192, 192, 3, 3),
        "Mixed_7b.branch3x3_2a": (384, 384, 1, 3),
        "Mixed_7c.branch3x3dbl_3b": (384, 384, 3, 1),
    }
    for name, shape in known.items():
        assert tuple(ours[_tf_name(name)]) == shape, name


def test_pytorch_fid_state_dict_loads_with_batch_norm_scale_folded(tmp_path):
    bundled = load_inception().state_dict()
    state = {"fc.weight": torch.randn(1008, 2048), "fc.bias": torch.randn(1008)}
    for name in TORCHVISION_CONVS:
        tf = _tf_name(name)
        state |= {
            f"{name}.conv.weight": bundled[f"{tf}.weight"],
            f"{name}.bn.weight": torch.ones_like(bundled[f"{tf}.beta"]),
            f"{name}.bn.bias": bundled[f"{tf}.beta"],
            f"{name}.bn.running_mean": bundled[f"{tf}.mean"],
            f"{name}.bn.running_var": bundled[f"{tf}.var"],
        }
    torch.save(state, tmp_path / "pt_inception.pth")
    model = load_inception(tmp_path / "pt_inception.pth")
    assert model.logits is not None
    torch.testing.assert_close(model.logits.weight, state["fc.weight"])
    loaded = model.state_dict()
    assert all(torch.equal(loaded[key], value) for key, value in bundled.items())

    # A non-unit scale is folded exactly: same output as conv -> BN(gamma, beta) -> ReLU.
    conv = {"a.conv.weight": torch.randn(4, 3, 3, 3), "a.bn.weight": torch.rand(4) + 0.5, "a.bn.bias": torch.randn(4)}
    conv |= {"a.bn.running_mean": torch.randn(4), "a.bn.running_var": torch.rand(4) + 0.1}
    x = torch.randn(2, 3, 8, 8)
    expected = torch.relu(
        torch.nn.functional.batch_norm(
            torch.nn.functional.conv2d(x, conv["a.conv.weight"]),
            conv["a.bn.running_mean"],
            conv["a.bn.running_var"],
            conv["a.bn.weight"],
            conv["a.bn.bias"],
            eps=1e-3,
        )
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("iterview.eval.inception._tf_name", lambda name: "a")
        folded = _from_torchvision_names(conv)
    got = torch.nn.functional.conv2d(x, folded["a.weight"])
    got = torch.relu(
        torch.nn.functional.batch_norm(got, folded["a.mean"], folded["a.var"], None, folded["a.beta"], eps=1e-3)
    )
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


class _NvidiaLayout(torch.nn.Module):
    """The module layout of NVIDIA's inception-2015-12-05.pt: `layers` and the 1008-way `output`."""

    def __init__(self, layers: torch.nn.Module) -> None:
        super().__init__()
        self.layers = layers
        self.output = torch.nn.Linear(2048, 1008)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.layers(x).flatten(1))


def test_nvidia_torchscript_with_classifier_gives_unbiased_logits_and_is(tmp_path, inception):
    nvidia = _NvidiaLayout(inception.layers)
    torch.jit.script(nvidia).save(str(tmp_path / "inception-2015-12-05.pt"))
    model = load_inception(tmp_path / "inception-2015-12-05.pt")
    torch.testing.assert_close(model.logits.weight, nvidia.output.weight)
    features = extract_features(model, _scenes(2, 16), progress=False)
    assert features.logits.shape == (2, 1008)
    expected = features.pool @ nvidia.output.weight.detach().T
    torch.testing.assert_close(features.logits, expected, atol=1e-4, rtol=1e-4)
    metrics = image_metrics(features, FeatureStats.from_features(features), kid_subsets=2)
    assert metrics["is_mean"] >= 1.0 and abs(metrics["fid"]) < 1e-3


def test_bad_weights_files_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="Inception weights not found"):
        load_inception(tmp_path / "missing.pt")
    torch.save({"something": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a pytorch-fid"):
        load_inception(tmp_path / "other.pt")


# ------------------------------------------------------------------------------------------- the formulas


def _scipy_fid(a: np.ndarray, b: np.ndarray) -> float:
    m1, s1, m2, s2 = a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * root))


def test_fid_matches_scipy_sqrtm_reference_in_float64():
    g = np.random.default_rng(0)
    a = g.normal(size=(400, 32))
    b = g.normal(size=(300, 32)) @ g.normal(size=(32, 32)) * 0.3 + 0.5
    for x, y in ((a, b), (b, a), (a, a[::-1] * 1.01)):
        ours = FeatureStats.from_features(Features(torch.from_numpy(x)))
        theirs = FeatureStats.from_features(Features(torch.from_numpy(y)))
        value = frechet_distance(ours.mu, ours.sigma, theirs.mu, theirs.sigma)
        assert value == pytest.approx(_scipy_fid(x, y), rel=1e-7, abs=1e-9)


def test_fid_of_a_set_with_itself_is_zero_even_with_singular_covariance():
    features = torch.randn(10, 64, dtype=torch.float64)  # rank 9 covariance
    stats = FeatureStats.from_features(Features(features))
    assert abs(frechet_distance(stats.mu, stats.sigma, stats.mu, stats.sigma)) < 1e-6 * stats.sigma.trace()


def _numpy_kid(x: np.ndarray, y: np.ndarray) -> float:
    d, m = x.shape[1], len(x)
    kxx, kyy, kxy = ((x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3)
    return float(
        (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean()
    )


def test_kid_matches_the_unbiased_mmd_formula():
    g = np.random.default_rng(1)
    x, y = g.normal(size=(60, 16)), g.normal(size=(60, 16)) + 0.2
    # A subset as large as both sets is the whole set: every subset gives the same value.
    mean, std = kernel_inception_distance(torch.from_numpy(x), torch.from_numpy(y), subsets=3, subset_size=1000)
    assert mean == pytest.approx(_numpy_kid(x, y), rel=1e-10)
    assert std == pytest.approx(0.0, abs=1e-12)
    # Subsets: the mean of the formula over seeded random subsets, reproducible with the same generator.
    first = kernel_inception_distance(
        torch.from_numpy(x), torch.from_numpy(y), 20, 30, torch.Generator().manual_seed(3)
    )
    again = kernel_inception_distance(
        torch.from_numpy(x), torch.from_numpy(y), 20, 30, torch.Generator().manual_seed(3)
    )
    assert first == again and first[1] > 0
    same = kernel_inception_distance(torch.from_numpy(x), torch.from_numpy(x), 1, 60)
    assert same[0] < 0.01 * first[0]


def test_kid_clamps_the_subset_to_the_smaller_set_and_needs_two_images():
    x, y = torch.randn(5, 8), torch.randn(50, 8)
    kernel_inception_distance(x, y, subsets=2, subset_size=1000)
    with pytest.raises(ValueError, match="at least 2 images"):
        kernel_inception_distance(x[:1], y)


def test_inception_score_formula():
    uniform = torch.zeros(20, 1008)
    assert inception_score(uniform, splits=2)[0] == pytest.approx(1.0)
    confident = torch.full((30, 1008), -50.0)
    confident[torch.arange(30), torch.arange(30) % 3] = 50.0
    assert inception_score(confident, splits=1)[0] == pytest.approx(3.0, rel=1e-6)
    logits = torch.randn(40, 10, dtype=torch.float64) * 2
    p = torch.softmax(logits, 1).numpy()
    reference = np.exp((p * (np.log(p) - np.log(p.mean(0, keepdims=True)))).sum(1).mean())
    assert inception_score(logits, splits=1)[0] == pytest.approx(reference, rel=1e-10)
    with pytest.raises(ValueError, match="at least 10 images"):
        inception_score(logits[:5], splits=10)


# ------------------------------------------------------------------------------------------- the protocol


def test_fid_of_a_set_with_itself_is_zero_and_grows_monotonically_with_noise(inception):
    clean = _scenes(3, 32)
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    levels = [0.0, 20.0, 60.0]
    batch = torch.cat([(clean.float() + level * noise).clamp(0, 255).round().to(torch.uint8) for level in levels])
    features = extract_features(inception, batch, batch_size=9, progress=False).pool
    stats = [FeatureStats.from_features(Features(chunk)) for chunk in features.split(3)]
    fids = [frechet_distance(stats[0].mu, stats[0].sigma, s.mu, s.sigma) for s in stats]
    assert abs(fids[0]) < 1e-6 * stats[0].sigma.trace()
    assert fids[0] < fids[1] < fids[2], fids


def _write(path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    (image.convert(mode) if mode else image).save(path)


def test_real_images_are_centre_cropped_and_lanczos_resized_any_mode(tmp_path):
    g = np.random.default_rng(0)
    wide = g.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    _write(tmp_path / "real" / "a" / "wide.png", wide)
    _write(tmp_path / "real" / "b" / "cmyk.jpg", wide[:, :40], mode="CMYK")
    _write(tmp_path / "real" / "b" / "grey.png", wide[:, :, 0])
    paths = list_images(tmp_path / "real")
    assert [p.name for p in paths] == ["wide.png", "cmyk.jpg", "grey.png"]
    items = ImageFiles(paths, 16, real=True)
    assert all(items[i].shape == (3, 16, 16) and items[i].dtype == torch.uint8 for i in range(3))
    expected = Image.fromarray(wide[:, 10:50]).resize((16, 16), Image.Resampling.LANCZOS)
    assert torch.equal(items[0], torch.from_numpy(np.array(expected)).permute(2, 0, 1))
    assert center_crop_resize(Image.fromarray(wide[:16, :16]), 16).size == (16, 16)
    grey = items[2]
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])


def test_generated_sets_are_checked_before_any_work(tmp_path):
    _write(tmp_path / "fake" / "0.png", np.zeros((16, 16, 3), np.uint8))
    _write(tmp_path / "fake" / "1.png", np.zeros((16, 20, 3), np.uint8))
    with pytest.raises(ValueError, match=r"1\.png is 20x16, expected 16x16"):
        ImageFiles(list_images(tmp_path / "fake"), 16, real=False)
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        list_images(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        list_images(tmp_path / "empty")


def test_real_statistics_are_cached_safely_and_reused(tmp_path, inception):
    images = _scenes(3, 24)
    for i, image in enumerate(images):
        _write(tmp_path / "real" / f"{i}.png", image.permute(1, 2, 0).numpy())
        _write(tmp_path / "fake" / f"{i}.png", image.permute(1, 2, 0).numpy())
    cache = tmp_path / "stats" / "real.safetensors"
    stats = real_stats(inception, tmp_path / "real", image_size=24, cache=cache, progress=False)
    assert cache.is_file() and not list(cache.parent.glob("*.tmp*"))
    assert stats.meta == {"count": 3, "image_size": 24, "source": str((tmp_path / "real").resolve())}

    class Unused(InceptionV3):
        def forward(self, images):
            raise AssertionError("the cache must be used")

    cached = real_stats(Unused(), tmp_path / "real", image_size=24, cache=cache)
    assert torch.equal(cached.sigma, stats.sigma) and torch.equal(cached.features, stats.features)
    assert torch.equal(real_stats(Unused(), None, image_size=24, cache=cache).mu, stats.mu)
    with pytest.raises(ValueError, match="image size 24, not 32"):
        real_stats(inception, tmp_path / "real", image_size=32, cache=cache)
    with pytest.raises(ValueError, match="were computed from"):
        real_stats(inception, tmp_path / "fake", image_size=24, cache=cache)
    with pytest.raises(ValueError, match="no real images given"):
        real_stats(inception, None, image_size=24, cache=tmp_path / "none.safetensors")

    fake = extract_features(inception, generated_images(tmp_path / "fake", 24, num_samples=2), progress=False)
    assert fake.pool.shape == (2, 2048) and fake.logits is None
    metrics = image_metrics(fake, cached, kid_subsets=5)
    assert metrics["num_fake"] == 2 and metrics["num_real"] == 3
    assert np.isfinite(metrics["fid"]) and np.isfinite(metrics["kid_mean"]) and "is_mean" not in metrics


def test_real_statistics_of_a_seeded_subset(tmp_path, inception):
    images = _scenes(4, 24)
    for i, image in enumerate(images):
        _write(tmp_path / "real" / f"{i}.png", image.permute(1, 2, 0).numpy())
    paths = list_images(tmp_path / "real")
    chosen = seeded_subset(paths, 2, seed=5)
    assert len(chosen) == 2 and set(chosen) <= set(paths) and seeded_subset(paths, 2, seed=5) == chosen
    assert seeded_subset(paths, None) == paths == seeded_subset(paths, 9)
    cache = tmp_path / "real.safetensors"
    stats = real_stats(inception, tmp_path / "real", 24, cache, progress=False, num_samples=2, seed=5)
    assert stats.meta["count"] == 2 and stats.meta["subset"] == [2, 5]
    expected = extract_features(inception, ImageFiles(chosen, 24, real=True), progress=False)
    torch.testing.assert_close(stats.features, expected.pool)
    with pytest.raises(ValueError, match="subset"):
        real_stats(inception, tmp_path / "real", 24, cache, num_samples=3, seed=5)
