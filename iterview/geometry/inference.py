"""The geometry of inference in one place: how generated RGBD views are read, meshed, aggregated and rendered.

Sampling, fusion rendering, export and evaluation all take an `InferenceGeometry`; a scene file records the one
it was sampled with, so every later step reads its views exactly as they were made.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

OFFICIAL_SIZE = 128  # the official tolerances and erosion radius are in pixels of 128-px images


@dataclass(frozen=True)
class InferenceGeometry:
    """Official inference constants (§3.8, §6.2, §6.5).

    fov: degrees; near, far: the depth channel is the z-buffer of (near, far); renderer_near, renderer_far: the
    aggregation renderer's projection while sampling, fusion_near, fusion_far while rendering videos; atol, rtol:
    meshing discontinuity tolerances (linear and inverse depth); erode_rgb: RGB erosion radius in pixels;
    condition_ssaa, fusion_ssaa: supersampling of the conditions and of the free-view frames.
    """

    fov: float = 45.0
    near: float = 0.6
    far: float = 5.0
    renderer_near: float = 0.01
    renderer_far: float = 200.0
    fusion_near: float = 0.1
    fusion_far: float = 200.0
    atol: float = 0.03
    rtol: float = 0.03
    erode_rgb: int = 3
    condition_ssaa: int = 3
    fusion_ssaa: int = 5

    def __post_init__(self) -> None:
        if not 0 < self.fov < 180:
            raise ValueError(f"fov must be in (0, 180) degrees, got {self.fov}")
        for name in ("", "renderer_", "fusion_"):
            near, far = getattr(self, f"{name}near"), getattr(self, f"{name}far")
            if not 0 < near < far < math.inf:
                raise ValueError(f"{name}near and {name}far must satisfy 0 < near < far < inf, got {near}, {far}")
        if not (math.isfinite(self.atol) and math.isfinite(self.rtol) and self.atol >= 0 and self.rtol >= 0):
            raise ValueError(f"atol and rtol must be finite and >= 0, got {self.atol} and {self.rtol}")
        for name in ("erode_rgb", "condition_ssaa", "fusion_ssaa"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")

    @classmethod
    def for_size(cls, image_size: int) -> InferenceGeometry:
        """The official geometry carried to image_size px: the meshing tolerances grow and the erosion radius
        shrinks by 128 / image_size (rounded, at least 1), as the training warp does (`pixel_scale`)."""
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 2:
            raise ValueError(f"image size must be an integer >= 2, got {image_size!r}")
        official = cls()
        scale = OFFICIAL_SIZE / image_size
        return cls(
            atol=official.atol * scale,
            rtol=official.rtol * scale,
            erode_rgb=max(1, round(official.erode_rgb / scale)),
        )

    def to_dict(self) -> dict[str, float | int]:
        """Plain JSON-ready values."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> InferenceGeometry:
        """Read `to_dict` output; missing entries take the official values, unknown ones are an error."""
        known = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown inference geometry entries {unknown}: expected some of {', '.join(known)}")
        try:
            return cls(**{k: float(v) if known[k] == "float" else v for k, v in values.items()})
        except (TypeError, ValueError) as error:
            raise ValueError(f"bad inference geometry {values}: {error}") from error


OFFICIAL_GEOMETRY = InferenceGeometry()
