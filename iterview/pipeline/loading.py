"""Models and their inference settings from what a user names: a shipped set (`synth`), a training run, a
checkpoint, a model folder or an official `.pt` with its config."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from iterview.diffusion.presets import SamplerChoice, resolve_samplers
from iterview.geometry.inference import InferenceGeometry
from iterview.models.adm import compile_for_inference, prepare_for_inference
from iterview.models.checkpoint import load_model
from iterview.models.shipped import inference_settings
from iterview.pipeline.multiview import Guidance, MultiViewPipeline
from iterview.validate import model_pair, resolve_weights


def load_network(
    spec: str | Path,
    role: str,
    config: str | Path | None = None,
    device: str | torch.device = "cpu",
    fast: bool = True,
    compile: bool = False,
):
    """One U-Net in eval mode on device; role: uncond (G_u) or cond (G_c). fast: its inference path
    (`prepare_for_inference`, outputs within 1e-4 of the official formulation); False keeps the official one.
    compile: that path compiled (`compile_for_inference`: minutes per input shape, for long runs)."""
    if compile and not fast:
        raise ValueError("compile=True compiles the fast inference path: it needs fast=True")
    model = load_model(resolve_weights(spec, role), config)[0].to(device)
    if compile:
        return compile_for_inference(model)
    return prepare_for_inference(model) if fast else model


def inference_geometry(spec: str | Path, image_size: int) -> InferenceGeometry:
    """The geometry for the named models: a shipped set's own, else the official one carried to image_size."""
    settings = inference_settings(spec)
    if "geometry" in settings:
        return InferenceGeometry.from_dict(settings["geometry"])
    return InferenceGeometry.for_size(image_size)


def sampling_settings(
    spec: str | Path | None, choices: tuple[SamplerChoice, SamplerChoice], guidance: float | None
) -> tuple[SamplerChoice, SamplerChoice, float]:
    """The samplers (G_u, G_c) with the named models' x0 clipping, and the guidance strength: `guidance` if
    given, else a shipped set's own, else the official one."""
    settings = inference_settings(spec)
    clip = bool(settings.get("clip_denoised", False))
    strength = guidance if guidance is not None else settings.get("guidance", Guidance().strength)
    return replace(choices[0], clip=clip), replace(choices[1], clip=clip), float(strength)


def load_pipeline(
    uncond: str | Path | None,
    cond: str | Path | None = None,
    sampler: str = "official",
    steps_uncond: int | None = None,
    steps_cond: int | None = None,
    guidance: float | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
    config_uncond: str | Path | None = None,
    config_cond: str | Path | None = None,
    fast_unet: bool = True,
    compile_unet: bool = False,
) -> MultiViewPipeline:
    """A MultiViewPipeline of the named models. A shipped set brings the geometry, guidance strength and x0
    clipping it was trained for; anything else gets the official ones. `guidance` overrides the strength;
    config_uncond / config_cond: the configs of official `.pt` checkpoints; fast_unet, compile_unet: `fast` and
    `compile` of `load_network`."""
    choices = resolve_samplers(sampler, None, None, steps_uncond, steps_cond)
    choice_u, choice_c, strength = sampling_settings(cond if cond is not None else uncond, choices, guidance)
    unet = dict(device=device, fast=fast_unet, compile=compile_unet)
    g_u = load_network(uncond, "uncond", config_uncond, **unet) if uncond is not None else None
    g_c = load_network(cond, "cond", config_cond, **unet) if cond is not None else None
    if g_u is not None:
        model_pair(g_u, uncond, g_c, cond)
    geometry = inference_geometry(cond if cond is not None else uncond, (g_u if g_u is not None else g_c).image_size)
    return MultiViewPipeline(
        g_u, g_c, None, choice_u, choice_c, Guidance(strength=strength), geometry, progress=progress
    )


def sampler_summary(pipeline: MultiViewPipeline) -> dict:
    """What a metric was measured with: samplers, steps, guidance strength, clipping."""

    def describe(choice: SamplerChoice) -> str:
        return choice.label + ("+clip" if choice.clip else "")

    return {
        "sampler_uncond": describe(pipeline.sampler_uncond),
        "sampler_cond": describe(pipeline.sampler_cond),
        "guidance": pipeline.guidance.strength,
    }
