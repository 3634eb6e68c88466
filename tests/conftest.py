"""Shared fixtures: the official reference data lives in ../shared/reference beside the project root."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

DEFAULT_REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference"


def reference_root() -> Path:
    """The reference folder: `ITERVIEW_REFERENCE` if set (another set of the same format), else the default."""
    return Path(os.environ.get("ITERVIEW_REFERENCE") or DEFAULT_REFERENCE)


def reference_required() -> bool:
    """On CI (`CI` set) or with `ITERVIEW_REQUIRE_REFERENCE=1` a missing reference is a failure, never a skip."""
    flag = os.environ.get("ITERVIEW_REQUIRE_REFERENCE", "").strip().lower()
    if flag in ("1", "true", "yes"):
        return True
    ci = os.environ.get("CI", "").strip().lower()
    return flag not in ("0", "false", "no") and ci not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def reference() -> Path:
    """The official reference data folder. Locally, tests that need it skip with the reason if it is absent; where
    the reference is required (see `reference_required`) they fail instead, so a lost folder cannot turn CI green."""
    root = reference_root()
    if not root.is_dir():
        message = f"official reference data not found at {root}"
        if reference_required():
            pytest.fail(f"{message} (required: CI or ITERVIEW_REQUIRE_REFERENCE is set)", pytrace=False)
        pytest.skip(message)
    return root


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield


@pytest.fixture
def fresh_dynamo() -> Iterator[None]:
    """A test that compiles starts and ends with no compiled graphs and no shapes dynamo remembers from others."""
    torch.compiler.reset()
    yield
    torch.compiler.reset()


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models and renders are thousands of small kernels: one thread is as fast, and on a shared CPU a second
    OpenMP thread waiting for a core makes every kernel stall. Modules opt in with `pytestmark`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
