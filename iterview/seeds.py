"""The one way iterview derives seeds: a base seed and keys (rank, epoch, index, a scene's name) mixed into a
64-bit seed for a `torch.Generator`, the same on every platform and in every run."""

from __future__ import annotations

import numpy as np


def derive_seed(*keys: int | str) -> int:
    """A well-mixed 64-bit seed from non-negative integer or string keys, e.g. (seed, epoch, index) or
    (seed, scene name). Distinct key tuples give independent seeds."""
    numbers = [int.from_bytes(k.encode(), "little") if isinstance(k, str) else k for k in keys]
    if not numbers or min(numbers) < 0:
        raise ValueError(f"seed keys must be non-negative and at least one, got {keys}")
    return int(np.random.SeedSequence(numbers).generate_state(1, dtype=np.uint64)[0])
