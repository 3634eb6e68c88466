"""The `reference` fixture: a missing reference folder fails the golden tests on CI and skips them locally."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).with_name("conftest.py")
GOLDEN = "def test_golden(reference):\n    assert reference.is_dir()\n"


def _run_golden(tmp_path: Path, reference: Path, **env: str) -> subprocess.CompletedProcess:
    """Run one golden test that uses the fixture, in a fresh pytest process with only the given switches set."""
    shutil.copy(CONFTEST, tmp_path / "conftest.py")
    (tmp_path / "test_golden.py").write_text(GOLDEN)
    clean = {k: v for k, v in os.environ.items() if k not in ("CI", "ITERVIEW_REQUIRE_REFERENCE")}
    clean.update(env, ITERVIEW_REFERENCE=str(reference))
    command = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "test_golden.py"]
    return subprocess.run(command, cwd=tmp_path, env=clean, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("env", [{"CI": "true"}, {"ITERVIEW_REQUIRE_REFERENCE": "1"}])
def test_missing_reference_fails_where_required(tmp_path, env):
    result = _run_golden(tmp_path, tmp_path / "no-such-reference", **env)
    assert result.returncode == 1, result.stdout
    assert "official reference data not found" in result.stdout
    assert "1 error" in result.stdout and "skipped" not in result.stdout


def test_missing_reference_skips_locally_with_the_reason(tmp_path):
    result = _run_golden(tmp_path, tmp_path / "no-such-reference")
    assert result.returncode == 0, result.stdout
    assert "1 skipped" in result.stdout and "official reference data not found" in result.stdout


def test_present_reference_passes_where_required(tmp_path):
    result = _run_golden(tmp_path, tmp_path, ITERVIEW_REQUIRE_REFERENCE="1")
    assert result.returncode == 0 and "1 passed" in result.stdout, result.stdout


def test_ci_script_requires_the_reference():
    script = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert "export ITERVIEW_REQUIRE_REFERENCE=1" in script
