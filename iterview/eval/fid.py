"""FID, KID and IS on TF-Inception-v3 features with the official protocol (torch-fidelity's formulas).

Real images are centre-cropped and LANCZOS-resized to the model size; generated images are taken as they are
(up to 10K, a seeded random subset). Real features are cached in a safetensors file, never a pickle.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from iterview.data.images import IMAGE_EXTENSIONS, is_image_file, load_rgb
from iterview.eval.inception import FEATURE_DIM, InceptionV3
from iterview.io import atomic_path

CACHE_VERSION = "1"


def list_images(directory: str | Path) -> list[Path]:
    """All images under directory (recursive, sorted); FileNotFoundError / ValueError when there are none."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"image folder not found: {directory}")
    paths = sorted(p for p in directory.rglob("*") if is_image_file(p) and p.is_file())
    if not paths:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {directory}")
    return paths


def center_crop_resize(image: Image.Image, size: int) -> Image.Image:
    """Official real-image protocol: centre square crop, then LANCZOS resize to size²."""
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    image = image.crop((left, top, left + side, top + side))
    return image if image.size == (size, size) else image.resize((size, size), Image.Resampling.LANCZOS)


class ImageFiles(Dataset):
    """Images as uint8 (3, S, S) tensors. real=True applies the crop+resize protocol; generated images must
    already be S×S (checked up front, from the file headers, so a bad set fails before any work)."""

    def __init__(self, paths: Sequence[Path], size: int, real: bool) -> None:
        self.paths, self.size, self.real = list(paths), size, real
        if not real:
            for path in self.paths:
                with Image.open(path) as image:
                    if image.size != (size, size):
                        found = f"{image.size[0]}x{image.size[1]}"
                        raise ValueError(f"generated image {path} is {found}, expected {size}x{size}")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        image = load_rgb(self.paths[index])
        if self.real:
            image = center_crop_resize(image, self.size)
        return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)


@contextlib.contextmanager
def _exact_convolutions() -> Iterator[None]:
    # TF32 convolutions (cuDNN's default on recent GPUs) move FID by ~0.1: keep features in true fp32.
    previous = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = previous


@dataclass
class Features:
    """pool: (N, 2048) float32 Inception pool features; logits: (N, 1008) float32 or None."""

    pool: torch.Tensor
    logits: torch.Tensor | None = None


@torch.inference_mode()
def extract_features(
    model: InceptionV3,
    images: Dataset | torch.Tensor,
    batch_size: int = 50,
    num_workers: int = 0,
    progress: bool = True,
    desc: str = "inception features",
) -> Features:
    """Inception features of a dataset of uint8 (3, H, W) images, or of a uint8 tensor (N, 3, H, W)."""
    device = next(model.parameters()).device
    loader = DataLoader(images, batch_size=batch_size, num_workers=num_workers)
    pools, logits = [], []
    with _exact_convolutions():
        for batch in tqdm(loader, desc=desc, disable=not progress, unit="batch"):
            pool = model(batch.to(device))
            pools.append(pool.float().cpu())
            if model.logits is not None:
                logits.append(model.logits(pool).float().cpu())
    return Features(torch.cat(pools), torch.cat(logits) if logits else None)


# ----------------------------------------------------------------------------------------------- statistics


@dataclass
class FeatureStats:
    """Cached statistics of an image set: mu (2048,) and sigma (2048, 2048) float64; features (N, 2048) for KID;
    logits (N, 1008) when the model had them; meta: image_size, count, source."""

    mu: torch.Tensor
    sigma: torch.Tensor
    features: torch.Tensor
    meta: dict

    @classmethod
    def from_features(cls, features: Features, **meta) -> FeatureStats:
        """Mean and covariance (float64) of the pool features; meta records their count and provenance."""
        pool = features.pool.double()
        sigma = torch.cov(pool.T) if len(pool) > 1 else torch.zeros(FEATURE_DIM, FEATURE_DIM, dtype=torch.float64)
        return cls(pool.mean(0), sigma, features.pool, {"count": len(pool), **meta})

    def save(self, path: str | Path) -> Path:
        """Atomic safetensors write (temp file + os.replace)."""
        path = Path(path)
        tensors = {"mu": self.mu, "sigma": self.sigma, "features": self.features.contiguous()}
        metadata = {"version": CACHE_VERSION, "meta": json.dumps(self.meta)}
        with atomic_path(path) as tmp:
            save_file(tensors, tmp, metadata=metadata)
        return path

    @classmethod
    def load(cls, path: str | Path) -> FeatureStats:
        """Read statistics written by `save`; a missing or foreign file is a clear error."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"statistics file not found: {path}")
        from safetensors import safe_open

        with safe_open(path, "pt") as handle:
            metadata = handle.metadata() or {}
        if metadata.get("version") != CACHE_VERSION:
            raise ValueError(f"{path} is not an iterview statistics file (version {CACHE_VERSION})")
        tensors = load_file(path)
        return cls(tensors["mu"], tensors["sigma"], tensors["features"], json.loads(metadata["meta"]))


# ----------------------------------------------------------------------------------------------- metrics


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """‖mu1 − mu2‖² + tr(S1 + S2 − 2·(S1·S2)^½), in float64.

    tr((S1·S2)^½) is computed as Σ√λ of the symmetric PSD matrix S1^½·S2·S1^½ (same eigenvalues as S1·S2), which
    needs no complex sqrtm and no eps retry, and also runs on the GPU.
    """
    mu1, sigma1, mu2, sigma2 = (t.double() for t in (mu1, sigma1, mu2, sigma2))
    root1 = _psd_sqrt(sigma1)
    trace_sqrt = _significant(torch.linalg.eigvalsh(root1 @ sigma2 @ root1)).sqrt().sum()
    distance = (mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * trace_sqrt
    return float(distance)


def _psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    eigenvalues, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * _significant(eigenvalues).sqrt()) @ vectors.T


def _significant(eigenvalues: torch.Tensor) -> torch.Tensor:
    # With fewer images than features most eigenvalues are rounding noise; their square roots (~1e-8 each) would
    # add up over 2048 dimensions, so values under the usual rank tolerance count as zero.
    tolerance = eigenvalues.abs().max() * len(eigenvalues) * torch.finfo(eigenvalues.dtype).eps
    return torch.where(eigenvalues > tolerance, eigenvalues, 0.0)


def _polynomial_mmd2(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Unbiased MMD² with the cubic kernel k(a, b) = (a·b/d + 1)³. x, y: (m, d) float64."""
    m, d = x.shape
    k_xx = (x @ x.T / d + 1) ** 3
    k_yy = (y @ y.T / d + 1) ** 3
    k_xy = (x @ y.T / d + 1) ** 3
    within = (k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
    return within - 2 * k_xy.sum() / m**2


def kernel_inception_distance(
    features1: torch.Tensor,
    features2: torch.Tensor,
    subsets: int = 100,
    subset_size: int = 1000,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    """KID (mean, std) over `subsets` random subsets (without replacement) of subset_size, clamped to the smaller
    set, as torch-fidelity computes it. features: (N, D)."""
    m = min(subset_size, len(features1), len(features2))
    if m < 2:
        raise ValueError(f"KID needs at least 2 images per set, got {len(features1)} and {len(features2)}")
    if generator is None:
        generator = torch.Generator().manual_seed(2020)
    x_all, y_all = features1.double(), features2.double()
    values = []
    for _ in range(subsets):
        x = x_all[torch.randperm(len(x_all), generator=generator)[:m].to(x_all.device)]
        y = y_all[torch.randperm(len(y_all), generator=generator)[:m].to(y_all.device)]
        values.append(_polynomial_mmd2(x, y))
    values = torch.stack(values)
    return float(values.mean()), float(values.std(unbiased=False))


def inception_score(
    logits: torch.Tensor, splits: int = 10, generator: torch.Generator | None = None
) -> tuple[float, float]:
    """IS (mean, std) over `splits` chunks of a random permutation: exp(E KL(p(y|x) ‖ p(y))). logits: (N, 1008)."""
    if len(logits) < splits:
        raise ValueError(f"IS with {splits} splits needs at least {splits} images, got {len(logits)}")
    if generator is None:
        generator = torch.Generator().manual_seed(2020)
    logits = logits.double()[torch.randperm(len(logits), generator=generator).to(logits.device)]
    n = len(logits)
    scores = []
    for i in range(splits):
        chunk = logits[i * n // splits : (i + 1) * n // splits]
        log_p = chunk.log_softmax(dim=1)
        log_q = log_p.exp().mean(0, keepdim=True).log()
        scores.append((log_p.exp() * (log_p - log_q)).sum(1).mean().exp())
    scores = torch.stack(scores)
    return float(scores.mean()), float(scores.std(unbiased=False))


# ----------------------------------------------------------------------------------------------- protocol


def real_stats(
    model: InceptionV3,
    real_dir: str | Path | None,
    image_size: int = 128,
    cache: str | Path | None = None,
    batch_size: int = 50,
    num_workers: int = 0,
    progress: bool = True,
    num_samples: int | None = None,
    seed: int = 0,
) -> FeatureStats:
    """Statistics of the images under real_dir (crop + LANCZOS to image_size; all of them, or a seeded subset of
    num_samples as `seeded_subset`), read from / written to cache. A cache is only used for the folder, image
    size and subset it was made from; real_dir may be None to just read it."""
    subset = None if num_samples is None else [num_samples, seed]
    if cache is not None and Path(cache).is_file():
        stats = FeatureStats.load(cache)
        if stats.meta.get("image_size") != image_size:
            found = stats.meta.get("image_size")
            raise ValueError(f"cached statistics {cache} are for image size {found}, not {image_size}")
        if stats.meta.get("subset") != subset:
            raise ValueError(f"cached statistics {cache} are of subset {stats.meta.get('subset')}, not {subset}")
        source = stats.meta.get("source")
        if real_dir is not None and source is not None and Path(source).resolve() != Path(real_dir).resolve():
            raise ValueError(f"cached statistics {cache} were computed from {source}, not {real_dir}: remove the file")
        return stats
    if real_dir is None:
        raise ValueError(f"no real images given and no cached statistics at {cache}")
    dataset = ImageFiles(seeded_subset(list_images(real_dir), num_samples, seed), image_size, real=True)
    features = extract_features(model, dataset, batch_size, num_workers, progress, desc="real images")
    meta = {"image_size": image_size, "source": str(Path(real_dir).resolve())} | ({"subset": subset} if subset else {})
    stats = FeatureStats.from_features(features, **meta)
    if cache is not None:
        stats.save(cache)
    return stats


def generated_images(
    fake_dir: str | Path, image_size: int = 128, num_samples: int | None = 10_000, seed: int = 0
) -> ImageFiles:
    """A seeded random subset (up to num_samples) of the generated images under fake_dir, size-checked."""
    return ImageFiles(seeded_subset(list_images(fake_dir), num_samples, seed), image_size, real=False)


def seeded_subset(paths: Sequence[Path], num_samples: int | None, seed: int = 0) -> list[Path]:
    """Up to num_samples of paths, drawn by a seeded permutation (in its order); all of them when None or more."""
    paths = list(paths)
    if num_samples is None or num_samples >= len(paths):
        return paths
    order = torch.randperm(len(paths), generator=torch.Generator().manual_seed(seed))[:num_samples]
    return [paths[i] for i in order.tolist()]


def image_metrics(
    fake: Features, real: FeatureStats, kid_subsets: int = 100, kid_subset_size: int = 1000, is_splits: int = 10
) -> dict[str, float]:
    """FID, KID (mean, std) and, when logits are present, IS (mean, std) of a generated set against real stats."""
    fake_stats = FeatureStats.from_features(fake)
    metrics = {"fid": frechet_distance(fake_stats.mu, fake_stats.sigma, real.mu, real.sigma)}
    kid_mean, kid_std = kernel_inception_distance(fake.pool, real.features, kid_subsets, kid_subset_size)
    metrics |= {"kid_mean": kid_mean, "kid_std": kid_std}
    if fake.logits is not None:
        splits = min(is_splits, len(fake.logits))
        metrics["is_mean"], metrics["is_std"] = inception_score(fake.logits, splits)
    metrics["num_fake"], metrics["num_real"] = len(fake.pool), int(real.meta["count"])
    return metrics
