"""A small CNN that tells the synth benchmark's object classes apart, and the metrics built on it.

Class accuracy of class-conditional samples and the Inception Score computed with this classifier in place of
Inception (the official IS keeps using the user's Inception file). The classifier sees RGB only, in [-1, 1]
at 32², so it judges the generated colour image the way a person would look at it.

    python -m iterview.eval.classifier DATA/train DATA/heldout OUT   # retrain (about 2 minutes on 2 CPU cores)
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from iterview.errors import read_json
from iterview.io import atomic_path

INPUT_SIZE = 32
WEIGHTS_FILE = "classifier.safetensors"
CONFIG_FILE = "config.json"
FORMAT = "iterview.classifier"


class SynthClassifier(nn.Module):
    """Three conv stages (32 → 16 → 8 → 4 px), global average pooling and a linear head. RGB (B, 3, S, S) in
    [-1, 1] → logits (B, num_classes); other sizes are resized bilinearly to 32²."""

    def __init__(self, num_classes: int = 4, width: int = 32) -> None:
        super().__init__()
        self.num_classes, self.width = num_classes, width
        layers: list[nn.Module] = []
        channels = 3
        for stage, out in enumerate((width, 2 * width, 4 * width)):
            for _ in range(2):
                layers += [nn.Conv2d(channels, out, 3, padding=1), nn.GroupNorm(8, out), nn.SiLU()]
                channels = out
            if stage < 2:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        """rgb: (B, 3, S, S) in [-1, 1] -> logits (B, num_classes)."""
        if rgb.shape[-1] != INPUT_SIZE or rgb.shape[-2] != INPUT_SIZE:
            rgb = F.interpolate(rgb, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", antialias=True)
        return self.head(self.features(rgb).mean((2, 3)))


def save_classifier(model: SynthClassifier, directory: str | Path, metadata: dict | None = None) -> Path:
    """Write model.safetensors-style weights and a config (with optional metadata, e.g. accuracy) atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {"format": FORMAT, "num_classes": model.num_classes, "width": model.width, **(metadata or {})}
    with atomic_path(directory / WEIGHTS_FILE) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    with atomic_path(directory / CONFIG_FILE) as tmp:
        tmp.write_text(json.dumps(config, indent=1) + "\n")
    return directory


def load_classifier(directory: str | Path, device: str | torch.device = "cpu") -> SynthClassifier:
    """Read a classifier folder written by `save_classifier` (strict: every key and shape must match)."""
    directory = Path(directory)
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(f"no classifier in {directory} (missing {CONFIG_FILE})")
    config = read_json(config_path, "classifier config")
    found = config.get("format") if isinstance(config, dict) else None
    if found != FORMAT:
        raise ValueError(f"{config_path} is not a synth classifier config (format {found!r})")
    model = SynthClassifier(config["num_classes"], config["width"])
    model.load_state_dict(load_file(str(directory / WEIGHTS_FILE)), strict=True)
    return model.to(device).eval()


@torch.no_grad()
def predict(model: SynthClassifier, rgb: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Class probabilities (N, C) of RGB images (N, 3, S, S) in [-1, 1]."""
    device = next(model.parameters()).device
    chunks = [model(chunk.to(device)).softmax(-1).cpu() for chunk in rgb.split(batch_size)]
    return torch.cat(chunks)


def class_accuracy(probabilities: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of images whose most likely class is their label."""
    return (probabilities.argmax(-1) == labels.to(probabilities.device)).float().mean().item()


def classifier_inception_score(probabilities: torch.Tensor, splits: int = 10) -> tuple[float, float]:
    """Inception Score with this classifier: exp(E KL(p(y|x) ‖ p(y))) over `splits` equal parts, mean and std
    (the torch-fidelity protocol, with at most log C nats, i.e. IS ≤ C)."""
    if len(probabilities) < splits:
        raise ValueError(f"the Inception Score needs at least {splits} images, got {len(probabilities)}")
    scores = []
    for part in probabilities.double().chunk(splits):
        marginal = part.mean(0, keepdim=True)
        kl = (part * (part.clamp(min=1e-12).log() - marginal.clamp(min=1e-12).log())).sum(-1).mean()
        scores.append(math.exp(kl.item()))
    values = torch.tensor(scores)
    return values.mean().item(), values.std(unbiased=False).item()


def _augment(rgb: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flips, a little blur and noise: generated images are softer than renders."""
    batch = rgb.shape[0]
    flip = torch.rand(batch, generator=generator) < 0.5
    rgb = torch.where(flip[:, None, None, None], rgb.flip(-1), rgb)
    blur = F.avg_pool2d(F.pad(rgb, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    mix = torch.rand(batch, 1, 1, 1, generator=generator)
    rgb = rgb + mix * (blur - rgb)
    return rgb + 0.05 * torch.rand(batch, 1, 1, 1, generator=generator) * torch.randn(rgb.shape, generator=generator)


def _load_split(root: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    from iterview.data.datasets import RGBDDataset

    dataset = RGBDDataset(root, INPUT_SIZE)
    if dataset.num_classes is None:
        raise ValueError(f"{root} has no class labels to train a classifier on")
    batch = next(iter(DataLoader(dataset, batch_size=len(dataset))))
    return batch["x_0"][:, :3], batch["classes"]


def train_classifier(
    train_dir: str | Path, heldout_dir: str | Path, epochs: int = 6, seed: int = 0, progress: bool = True
) -> tuple[SynthClassifier, float]:
    """Train on one labelled dataset, return the model and its accuracy on the held-out one."""
    images, labels = _load_split(train_dir)
    test_images, test_labels = _load_split(heldout_dir)
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SynthClassifier(int(labels.max()) + 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = epochs * math.ceil(len(images) / 128)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=steps)
    bar = tqdm(total=steps, desc="classifier", disable=not progress)
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        for index in order.split(128):
            loss = F.cross_entropy(model(_augment(images[index], generator)), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    model.eval()
    return model, class_accuracy(predict(model, test_images), test_labels)


def main() -> None:
    """Train the classifier on a synth training split, measure it on the held-out split and save it (a script:
    `python -m iterview.eval.classifier TRAIN HELDOUT OUTPUT`)."""
    parser = argparse.ArgumentParser(description="Train the synth benchmark classifier.")
    parser.add_argument("train_dir", type=Path)
    parser.add_argument("heldout_dir", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model, accuracy = train_classifier(args.train_dir, args.heldout_dir, args.epochs, args.seed)
    save_classifier(model, args.output, {"heldout_accuracy": accuracy, "epochs": args.epochs, "seed": args.seed})
    print(json.dumps({"heldout_accuracy": accuracy, "output": str(args.output)}))


if __name__ == "__main__":
    main()
