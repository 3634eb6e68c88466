"""Which sampler runs, and with how many steps: `SamplerChoice`, the official choices and the CLI presets."""

from __future__ import annotations

from dataclasses import dataclass

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
    cfg_window: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.name not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.name!r}: expected one of {', '.join(SAMPLERS)}")
        if self.steps < 1:
            raise ValueError(f"sampler steps must be >= 1, got {self.steps}")
        if self.cfg_window is not None:
            low, high = self.cfg_window
            if not 0 <= low <= high:
                raise ValueError(f"cfg_window must be (t_low, t_high) with 0 <= t_low <= t_high, got {self.cfg_window}")

    @property
    def label(self) -> str:
        """Short name for tables and logs, e.g. `unipc10`, `unipc10+cfg81-578`."""
        window = "" if self.cfg_window is None else f"+cfg{self.cfg_window[0]}-{self.cfg_window[1]}"
        return f"{self.name}{self.steps}{window}"

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
    default_steps = {"ddpm": timesteps, "ddim": 50} | dict.fromkeys(SOLVERS, FAST_STEPS)
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
