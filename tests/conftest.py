"""Shared fixtures: the official reference data lives in ../shared/reference beside the project root."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference"


@pytest.fixture(scope="session")
def reference() -> Path:
    """The official reference data folder; tests that need it skip with a clear reason if it is absent."""
    if not REFERENCE.is_dir():
        pytest.skip(f"official reference data not found at {REFERENCE}")
    return REFERENCE


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models and renders are thousands of small kernels: one thread is as fast, and on a shared CPU a second
    OpenMP thread waiting for a core makes every kernel stall. Modules opt in with `pytestmark`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
