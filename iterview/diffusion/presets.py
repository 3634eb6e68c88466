"""Which sampler runs, and with how many steps: `SamplerChoice`, the official choices and the CLI presets."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from iterview.diffusion.guidance import clip_denoised
from iterview.diffusion.samplers import Callback, X0Fn, ddim_sample, ddpm_sample, dpmpp_2m_sample
from iterview.diffusion.schedule import DiffusionSchedule, Generators, ModelFn

SAMPLERS = {"ddpm": ddpm_sample, "ddim": ddim_sample, "dpmpp": dpmpp_2m_sample}


@dataclass(frozen=True)
class SamplerChoice:
    """name: 'ddpm' (ancestral, always all T steps), 'ddim' (η = 0) or 'dpmpp' (DPM-Solver++ 2M, steps >= 2).
    clip: clip the predicted x0 to [-1, 1] before any guidance (for briefly trained models; not official)."""

    name: str = "ddim"
    steps: int = 50
    clip: bool = False

    def __post_init__(self) -> None:
        if self.name not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.name!r}: expected one of {', '.join(SAMPLERS)}")
        if self.steps < 1:
            raise ValueError(f"sampler steps must be >= 1, got {self.steps}")

    def sample(
        self,
        model_fn: ModelFn,
        x: torch.Tensor,
        schedule: DiffusionSchedule,
        generator: Generators = None,
        x0_fn: X0Fn | None = None,
        callback: Callback | None = None,
        progress: bool = False,
    ) -> torch.Tensor:
        """Run the chosen sampler from noise x (B, C, H, W); with `clip`, x0 is clipped before x0_fn."""
        if self.clip:
            x0_fn = clip_denoised(x0_fn)
        steps = None if self.name == "ddpm" else self.steps
        return SAMPLERS[self.name](model_fn, x, schedule, steps, generator, x0_fn, callback, progress)


OFFICIAL_UNCOND = SamplerChoice("ddpm", 1000)
OFFICIAL_COND = SamplerChoice("ddim", 50)


SAMPLER_PRESETS = ("official", "fast")
FAST_STEPS = 20


def resolve_samplers(
    preset: str = "official",
    sampler_uncond: str | None = None,
    sampler_cond: str | None = None,
    steps_uncond: int | None = None,
    steps_cond: int | None = None,
    timesteps: int = 1000,
) -> tuple[SamplerChoice, SamplerChoice]:
    """Sampler per model. official: G_u DDPM over all T steps (DDIM when fewer steps are asked, as the official
    --steps_uncond), G_c DDIM-50; fast: DPM-Solver++(2M) with 20 steps for both. Names and steps override."""
    if preset not in SAMPLER_PRESETS:
        raise ValueError(f"unknown sampler preset {preset!r}: expected one of {', '.join(SAMPLER_PRESETS)}")
    default_steps = {"ddpm": timesteps, "ddim": 50, "dpmpp": FAST_STEPS}
    if preset == "fast":
        name_u, name_c = "dpmpp", "dpmpp"
    else:
        name_u = "ddim" if steps_uncond is not None and steps_uncond < timesteps else "ddpm"
        name_c = "ddim"
    name_u, name_c = sampler_uncond or name_u, sampler_cond or name_c

    def choice(name: str, steps: int | None) -> SamplerChoice:
        # DDPM always walks every step (the official sampler ignores `steps`).
        return SamplerChoice(name, timesteps if name == "ddpm" else steps or default_steps.get(name, 0))

    return choice(name_u, steps_uncond), choice(name_c, steps_cond)
