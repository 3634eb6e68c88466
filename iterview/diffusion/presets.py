"""Which sampler runs, and with how many steps: `SamplerChoice`, the official choices and the CLI presets."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from iterview.diffusion.guidance import clip_denoised
from iterview.diffusion.samplers import (
    Callback,
    X0Fn,
    ddim_sample,
    ddim_timesteps,
    ddpm_sample,
    dpmpp_2m_sample,
    dpmpp_3m_sample,
    dpmpp_timesteps,
    unipc_sample,
)
from iterview.diffusion.schedule import DiffusionSchedule, Generators, ModelFn

SAMPLERS = {
    "ddpm": ddpm_sample,
    "ddim": ddim_sample,
    "dpmpp": dpmpp_2m_sample,
    "dpmpp3m": dpmpp_3m_sample,
    "unipc": unipc_sample,
}
SOLVERS = ("dpmpp", "dpmpp3m", "unipc")  # the multistep solvers, on `dpmpp_timesteps`


@dataclass(frozen=True)
class SamplerChoice:
    """name: 'ddpm' (ancestral, always all T steps), 'ddim' (η = 0), 'dpmpp' (DPM-Solver++ 2M), 'dpmpp3m'
    (DPM-Solver++ 3M) or 'unipc' (UniPC-bh2 with the corrector); the three solvers take steps >= 2.
    clip: clip the predicted x0 to [-1, 1] before any guidance (for briefly trained models; not official).
    cfg_window: (t_low, t_high), network timesteps between which (inclusive) classifier-free guidance runs;
    elsewhere the conditional model alone, one U-Net evaluation instead of two. None: guidance at every step."""

    name: str = "ddim"
    steps: int = 50
    clip: bool = False
    eta: float = 0.0
    cfg_window: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.name not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.name!r}: expected one of {', '.join(SAMPLERS)}")
        if self.steps < 1:
            raise ValueError(f"sampler steps must be >= 1, got {self.steps}")
        if (self.eta != 0 and self.name != "ddim") or not 0 <= self.eta <= 1:
            raise ValueError(f"eta must be in [0, 1] and needs the ddim sampler, got {self.name} with eta={self.eta}")
        if self.cfg_window is not None:
            low, high = self.cfg_window
            if not 0 <= low <= high:
                raise ValueError(f"cfg_window must be (t_low, t_high) with 0 <= t_low <= t_high, got {self.cfg_window}")

    @property
    def label(self) -> str:
        """Short name for tables and logs, e.g. `unipc10`, `unipc10+cfg81-578`, `ddim100+eta1`."""
        window = "" if self.cfg_window is None else f"+cfg{self.cfg_window[0]}-{self.cfg_window[1]}"
        eta = f"+eta{self.eta:g}" if self.eta else ""
        return f"{self.name}{self.steps}{eta}{window}"

    def timesteps(self, schedule: DiffusionSchedule) -> list[int]:
        """The network timesteps at which the sampler calls the model, noisiest first (one call each)."""
        if self.name == "ddpm":
            return list(range(schedule.num_timesteps - 1, -1, -1))
        if self.name == "ddim":
            return [t for t, _ in ddim_timesteps(self.steps, schedule.num_timesteps)]
        return dpmpp_timesteps(schedule, self.steps)

    def guided_at(self, t: int) -> bool:
        """Whether classifier-free guidance runs at network timestep t."""
        return self.cfg_window is None or self.cfg_window[0] <= t <= self.cfg_window[1]

    def evaluations(self, schedule: DiffusionSchedule, guided: bool) -> int:
        """U-Net image evaluations per instance: one per step, two where classifier-free guidance runs."""
        return sum(2 if guided and self.guided_at(t) else 1 for t in self.timesteps(schedule))

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
        extra = {"eta": self.eta} if self.eta else {}
        return SAMPLERS[self.name](model_fn, x, schedule, steps, generator, x0_fn, callback, progress, **extra)


OFFICIAL_UNCOND = SamplerChoice("ddpm", 1000)
OFFICIAL_COND = SamplerChoice("ddim", 50)


SAMPLER_PRESETS = ("official", "fast")
FAST_STEPS = 20  # a solver's steps when it is named without any
# Classifier-free guidance window of the fast G_c, network timesteps at T = 1000: EDM sigma in [0.28, 5.42] of the
# linear schedule (Kynkaanniemi et al. 2024, "Applying guidance in a limited interval").
GUIDANCE_WINDOW = (81, 578)
# The fast preset, measured at the official samplers' quality on the synth benchmark (README, Speed): G_u
# ancestral DDIM (eta = 1) with 25 steps, G_c DDIM-10 guided within the window; 440 U-Net evaluations per 3x9
# instance instead of 4,600.
FAST_UNCOND = SamplerChoice("ddim", 25, eta=1.0)
FAST_COND = SamplerChoice("ddim", 10, cfg_window=GUIDANCE_WINDOW)


def _scaled_window(choice: SamplerChoice, timesteps: int) -> SamplerChoice:
    """The choice with its guidance window moved from T = 1000 to `timesteps` network timesteps."""
    if choice.cfg_window is None or timesteps == 1000:
        return choice
    low, high = (round(t * timesteps / 1000) for t in choice.cfg_window)
    return replace(choice, cfg_window=(low, high))


def resolve_samplers(
    preset: str = "official",
    sampler_uncond: str | None = None,
    sampler_cond: str | None = None,
    steps_uncond: int | None = None,
    steps_cond: int | None = None,
    timesteps: int = 1000,
) -> tuple[SamplerChoice, SamplerChoice]:
    """Sampler per model. official: G_u DDPM over all T steps (DDIM when fewer steps are asked, as the official
    --steps_uncond), G_c DDIM-50; fast: FAST_UNCOND and FAST_COND. Steps override the preset's; a sampler name
    other than the preset's gives that sampler plain (eta 0, no window) with its default steps."""
    if preset not in SAMPLER_PRESETS:
        raise ValueError(f"unknown sampler preset {preset!r}: expected one of {', '.join(SAMPLER_PRESETS)}")
    if preset == "fast":
        presets = FAST_UNCOND, FAST_COND
    else:
        official_u = "ddim" if steps_uncond is not None and steps_uncond < timesteps else "ddpm"
        presets = SamplerChoice(official_u, timesteps), OFFICIAL_COND
    default_steps = {"ddpm": timesteps, "ddim": 50} | dict.fromkeys(SOLVERS, FAST_STEPS)

    def choice(preset_choice: SamplerChoice, name: str | None, steps: int | None) -> SamplerChoice:
        name = name or preset_choice.name
        if name == "ddpm":  # DDPM always walks every step (the official sampler ignores `steps`)
            return SamplerChoice("ddpm", timesteps)
        if name != preset_choice.name:
            return SamplerChoice(name, steps or default_steps[name])
        steps = steps or (preset_choice.steps if preset == "fast" else default_steps[name])
        return _scaled_window(replace(preset_choice, steps=steps), timesteps)

    return choice(presets[0], sampler_uncond, steps_uncond), choice(presets[1], sampler_cond, steps_cond)
