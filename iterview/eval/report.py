"""Evaluation results: computing them for a run's files, printing them, and a self-contained HTML report."""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from iterview.io import atomic_path

_LABELS = {
    "fid": "FID ↓",
    "kid_mean": "KID ↓",
    "kid_std": "KID std",
    "is_mean": "IS ↑",
    "is_std": "IS std",
    "num_fake": "generated images",
    "num_real": "real images",
    "psnr": "colour PSNR (dB) ↑",
    "depth_absrel": "depth AbsRel ↓",
    "coverage": "coverage by neighbours",
    "scenes": "scenes",
}
_SECTIONS = {
    "images": "image metrics",
    "consistency": "3D consistency: views against their warped neighbours",
    "ground_truth": "novel views against the ground truth",
}


def evaluate_samples(
    fake: Path | None = None,
    real: Path | None = None,
    real_stats: Path | None = None,
    scenes: Path | None = None,
    image_size: int = 128,
    num_samples: int | None = 10_000,
    seed: int = 0,
    inception_weights: Path | None = None,
    batch_size: int = 50,
    workers: int = 0,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    neighbours: int = 4,
    device: torch.device | str | None = None,
    progress: bool = True,
    num_real: int | None = None,
    on_bad_scene=None,
) -> dict[str, dict]:
    """Image metrics of `fake` against `real` (or cached `real_stats`) and consistency of the scenes under
    `scenes`; either part may be absent. num_samples / num_real: seeded subsets of the generated / real images
    (None: all). Returns {"images": {...}, "consistency": {...}}. on_bad_scene: see `folder_consistency`."""
    from iterview.eval.consistency import folder_consistency
    from iterview.eval.fid import extract_features, generated_images, image_metrics
    from iterview.eval.fid import real_stats as compute_real_stats
    from iterview.eval.inception import load_inception

    if fake is None and scenes is None:
        raise ValueError("nothing to evaluate: give generated images (--fake) and/or scenes (--scenes)")
    if fake is not None and real is None and (real_stats is None or not Path(real_stats).is_file()):
        raise ValueError("image metrics need real images (--real) or an existing real statistics file (--real-stats)")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    metrics: dict[str, dict] = {}
    if fake is not None:
        generated = generated_images(fake, image_size, num_samples, seed)  # checked before any slow work
        model = load_inception(inception_weights, device)
        reference = compute_real_stats(
            model, real, image_size, real_stats, batch_size, workers, progress, num_real, seed
        )
        features = extract_features(model, generated, batch_size, workers, progress, desc="generated images")
        metrics["images"] = image_metrics(features, reference, kid_subsets, kid_subset_size)
    if scenes is not None:
        metrics["consistency"] = folder_consistency(scenes, neighbours, device, progress, on_bad_scene)
    return metrics


def print_metrics(metrics: dict[str, dict]) -> None:
    """A rich table per section."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for section, values in metrics.items():
        table = Table(title=_SECTIONS.get(section, section), show_header=False)
        for key, value in values.items():
            table.add_row(_LABELS.get(key, key), _format(value))
        console.print(table)


def _format(value: float | int | str) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


@dataclass
class ReportSection:
    """A titled part of the HTML report: images (PNG paths, shown in order), videos (MP4 paths), a note."""

    title: str
    images: Sequence[Path] = ()
    videos: Sequence[Path] = ()
    note: str = ""


@dataclass
class Report:
    """The demo's report: sections of media, the metrics and how long each stage took."""

    title: str
    sections: list[ReportSection] = field(default_factory=list)
    metrics: dict[str, dict] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def write(self, path: str | Path) -> Path:
        """Atomically write one self-contained HTML file (media embedded as data URIs) and `<path>.json`."""
        path = Path(path)
        with atomic_path(path) as tmp:
            tmp.write_text(self.html(), encoding="utf-8")
        with atomic_path(path.with_suffix(".json")) as tmp:
            tmp.write_text(json.dumps({"metrics": self.metrics, "timings_s": self.timings}, indent=1))
        return path

    def html(self) -> str:
        """The report as one self-contained HTML page (images and videos inlined)."""
        parts = [f"<h1>{html.escape(self.title)}</h1>"]
        for section in self.sections:
            parts.append(f"<h2>{html.escape(section.title)}</h2>")
            if section.note:
                parts.append(f"<p>{html.escape(section.note)}</p>")
            parts += [f'<img src="{_data_uri(p, "image/png")}" alt="{html.escape(p.name)}">' for p in section.images]
            video = '<video controls loop autoplay muted src="{}"></video>'
            parts += [video.format(_data_uri(p, "video/mp4")) for p in section.videos]
        for name, values in self.metrics.items():
            parts.append(f"<h2>Metrics: {html.escape(_SECTIONS.get(name, name))}</h2>{_table(values)}")
        if self.timings:
            parts.append(f"<h2>Time (s)</h2>{_table(self.timings)}")
        style = (
            "body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}"
            "img,video{image-rendering:pixelated;margin:4px 0;display:block}img{width:100%}"
            "video{width:256px;display:inline-block;margin-right:8px}"
            "td{padding:2px 12px}td:last-child{text-align:right;font-family:monospace}"
        )
        return (
            f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>"
        )


def _table(values: dict) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(_LABELS.get(key, key))}</td><td>{html.escape(_format(value))}</td></tr>"
        for key, value in values.items()
    )
    return f"<table>{rows}</table>"


def _data_uri(path: Path, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(Path(path).read_bytes()).decode('ascii')}"
