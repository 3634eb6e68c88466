"""A sampling run: seeds and classes, the official output layout, resuming and striping over processes.

Layout (official §6.6) under the run folder: `grids/`, `conds/`, `results/`, `scenes/`, named by the suffix
`class{c:03d}_seed{s:05d}` (or `seed{s:05d}` without classes). A scene's JSON is written last, so an instance
whose `scenes/scene_<suffix>.json` exists is finished and skipped when the run is repeated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from iterview.diffusion.presets import OFFICIAL_COND, OFFICIAL_UNCOND, SamplerChoice
from iterview.geometry.inference import OFFICIAL_GEOMETRY, InferenceGeometry
from iterview.io import colorize_depth, make_grid, save_png
from iterview.pipeline.multiview import OFFICIAL_GUIDANCE, Guidance, MultiViewPipeline, MultiViewResult
from iterview.pipeline.runinfo import scene_is_complete
from iterview.pipeline.viewsets import Viewset, make_viewset, viewset_name

SUBFOLDERS = ("grids", "conds", "results", "scenes")


def parse_seeds(spec: str) -> list[int]:
    """Official list syntax: comma-separated ints and inclusive ranges, e.g. '0-8,12' -> [0, ..., 8, 12]."""
    seeds: list[int] = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        first, dash, last = part.partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            raise ValueError(f"bad seed list {spec!r}: expected comma-separated ints and ranges like '0-8,12'")
        seeds.extend(range(int(first), int(last) + 1) if dash else [int(first)])
    if not seeds:
        raise ValueError(f"seed list {spec!r} is empty")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seed list {spec!r} repeats a seed")
    return seeds


def _sampler_tag(choice: SamplerChoice, official: str) -> str:
    plain = choice.name == official and not choice.eta and choice.cfg_window is None
    return str(choice.steps) if plain else choice.label


def run_name(viewset: str, sampler_uncond: SamplerChoice, sampler_cond: SamplerChoice, strength: float) -> str:
    """Official folder name, e.g. `viewset_3x9_steps_u1000_c50_guidance3.0`; non-official samplers are named
    by their label (`steps_uddim25+eta1_cddim10+cfg81-578`)."""
    uncond = "ddpm" if sampler_uncond.name == "ddpm" else "ddim"
    return (
        f"viewset_{viewset_name(viewset)}_steps_u{_sampler_tag(sampler_uncond, uncond)}"
        f"_c{_sampler_tag(sampler_cond, 'ddim')}_guidance{float(strength)}"
    )


def instance_suffix(seed: int, label: int | None) -> str:
    """Official file suffix: `class{label:03d}_seed{seed:05d}`, or `seed{seed:05d}` without a label."""
    return (f"class{label:03d}_" if label is not None else "") + f"seed{seed:05d}"


@dataclass
class Instance:
    """One sample: its seed, label, suffix, cameras (V, 4, 4) and generator (already advanced past the
    label and camera draws)."""

    seed: int
    label: int | None
    viewset: Viewset
    generator: torch.Generator

    @property
    def suffix(self) -> str:
        """The instance's file suffix."""
        return instance_suffix(self.seed, self.label)


def make_instance(
    seed: int, index: int, classes: str, num_classes: int | None, viewset: str, device: torch.device
) -> Instance:
    """Seed the instance's generator and draw, in this order, its class (if random) and its cameras (if random).

    classes: 'mod' (seed mod num_classes), 'uniform' (index mod num_classes), 'random', or ints ('7' or '1,2,…'
    one per seed, where index picks the entry).
    """
    generator = torch.Generator(device).manual_seed(seed)
    label = None
    if num_classes is not None:
        if classes == "mod":
            label = seed % num_classes
        elif classes == "uniform":
            label = index % num_classes
        elif classes == "random":
            label = int(torch.randint(num_classes, (1,), generator=generator, device=device))
        else:
            values = [int(v) for v in classes.split(",")]
            label = values[0] if len(values) == 1 else values[index]
            if not 0 <= label < num_classes:
                raise ValueError(f"class {label} out of range for a model with {num_classes} classes")
    return Instance(seed, label, make_viewset(viewset, generator), generator)


def check_classes(classes: str, count: int) -> None:
    """Validate a --classes value for `count` seeds before anything runs."""
    if classes in ("mod", "uniform", "random"):
        return
    try:
        values = [int(v) for v in classes.split(",")]
    except ValueError:
        raise ValueError(f"--classes must be mod, uniform, random or ints, got {classes!r}") from None
    if len(values) not in (1, count):
        raise ValueError(f"--classes lists {len(values)} classes for {count} seeds: give one, or one per seed")


def scene_path(root: Path, suffix: str) -> Path:
    """Stem of an instance's scene file under the run folder root."""
    return root / "scenes" / f"scene_{suffix}"


def is_finished(root: Path, suffix: str) -> bool:
    """Whether the instance's scene JSON (written last) exists."""
    return scene_path(root, suffix).with_suffix(".json").is_file()


def save_instance(
    root: Path,
    result: MultiViewResult,
    index: int,
    instance: Instance,
    geometry: InferenceGeometry,
    info: dict | None = None,
    made_by: dict | None = None,
) -> Path:
    """Write one instance's official files, then its scene (last: it marks the instance finished), recording
    `info` (how it was made, e.g. a lifted photo's sources) and `made_by` (the run's record) in the scene."""
    sfx, name = instance.suffix, instance.viewset.name
    rgb = result.rgbd[index, :, :3] * 0.5 + 0.5
    depth = result.rgbd[index, :, 3:] * 0.5 + 0.5
    if name == "uncond":
        save_png(rgb[0], root / "results" / f"rgb_{sfx}.png")
    elif name == "random":
        save_png(make_grid(rgb, instance.viewset.grid), root / "grids" / f"rgb_{sfx}.png")
        save_png(rgb[0], root / "conds" / f"rgb_{sfx}.png")
        save_png(rgb[1], root / "results" / f"rgb_{sfx}.png")
    else:
        grid = instance.viewset.grid
        save_png(make_grid(rgb, grid), root / "grids" / f"rgb_{sfx}.png")
        save_png(make_grid(colorize_depth(depth), grid), root / "grids" / f"depth_{sfx}.png")
        # Official condition grids put an empty (-1) image at view 0.
        cond_rgb = torch.stack([torch.zeros_like(rgb[0]), *(c.color[index] for c in result.conditions)])
        cond_depth = torch.stack([torch.zeros_like(depth[0]), *(c.depth[index] for c in result.conditions)])
        save_png(make_grid(cond_rgb, grid), root / "conds" / f"rgb_cond_{sfx}.png")
        save_png(make_grid(colorize_depth(cond_depth), grid), root / "conds" / f"depth_cond_{sfx}.png")
    scene = replace(result.scene(index, geometry, instance.seed), info=info, made_by=made_by)
    return scene.save(scene_path(root, sfx))


def _already_sampled(root: Path, instance: Instance, made_by: dict | None) -> bool:
    """Whether the instance's scene is finished in root; with made_by, also whole and made by that run."""
    if made_by is None:
        return is_finished(root, instance.suffix)
    return scene_is_complete(scene_path(root, instance.suffix), made_by)


def sample_viewset(
    g_u: nn.Module,
    g_c: nn.Module | None,
    output_dir: str | Path,
    seeds: Sequence[int],
    viewset: str = "3x9",
    classes: str = "mod",
    batch_size: int = 10,
    sampler_uncond: SamplerChoice = OFFICIAL_UNCOND,
    sampler_cond: SamplerChoice = OFFICIAL_COND,
    guidance: Guidance = OFFICIAL_GUIDANCE,
    geometry: InferenceGeometry = OFFICIAL_GEOMETRY,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
    made_by: dict | None = None,
) -> list[Path]:
    """Sample every seed on `viewset` into output_dir (the run folder) and return the scenes written.

    Process `rank` of `world_size` takes seeds[rank::world_size]; finished instances are skipped, so a killed
    run resumes where it stopped. With `made_by` (the run's record, see `runinfo`), every scene records it and
    a finished instance must be whole and made by it. Models must already be on the device to sample on.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    check_classes(classes, len(seeds))
    root = Path(output_dir)
    for sub in SUBFOLDERS:
        (root / sub).mkdir(parents=True, exist_ok=True)
    device = next(g_u.parameters()).device
    num_classes = getattr(g_u, "num_classes", None)
    pipeline = MultiViewPipeline(g_u, g_c, None, sampler_uncond, sampler_cond, guidance, geometry, progress=progress)
    mine = list(enumerate(seeds))[rank::world_size]
    written: list[Path] = []
    bar = tqdm(total=len(mine), desc="instances", disable=not progress)

    def run(batch: list[Instance]) -> None:
        modelviews = torch.stack([inst.viewset.modelviews for inst in batch])
        labels = None if num_classes is None else torch.tensor([inst.label for inst in batch], device=device)
        result = pipeline(modelviews, [inst.generator for inst in batch], labels)
        for index, instance in enumerate(batch):
            written.append(save_instance(root, result, index, instance, geometry, made_by=made_by))
            bar.update()

    batch: list[Instance] = []
    for index, seed in mine:
        instance = make_instance(seed, index, classes, num_classes, viewset, device)
        if _already_sampled(root, instance, made_by):
            bar.update()
            continue
        batch.append(instance)
        if len(batch) == batch_size:
            run(batch)
            batch = []
    if batch:
        run(batch)
    bar.close()
    return written
