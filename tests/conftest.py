"""Shared fixtures.  Tests marked `vm` boot real guests under QEMU (TCG where KVM is unusable)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from harness.paths import REPO_ROOT

TEST_SERIES = Path(__file__).resolve().parent / "data" / "series"  # test-only patch series

SMOKE = REPO_ROOT / "scenarios" / "smoke.yaml"


def write_scenario(tmp_path: Path, text: str) -> Path:
    """`text` as the scenario file s.yaml in `tmp_path`."""
    p = tmp_path / "s.yaml"
    p.write_text(text)
    return p


def qemu_pids_matching(text: str) -> list[int]:
    """PIDs of QEMU processes whose command line mentions `text`."""
    out = subprocess.run(["pgrep", "-f", f"qemu-system-x86_64.*{text}"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@pytest.fixture(scope="session")
def smoke_results(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("smoke-results")


@pytest.fixture(scope="session")
def smoke_bundles(smoke_results) -> list[Path]:
    """Two complete bundles of scenarios/smoke.yaml on the stock kernel, from real guest boots."""
    from harness.results.scenario_run import run_scenario

    bundles = []
    for _ in range(2):
        outcome = run_scenario(SMOKE, results_dir=smoke_results)
        assert outcome.ok, f"smoke run failed: {outcome.error} (bundle {outcome.bundle})"
        bundles.append(outcome.bundle)
    return bundles


@pytest.fixture
def patches_root(tmp_path, monkeypatch):
    """kernel_patches/ plus the test-only series, as one patches root."""
    root = tmp_path / "patches"
    root.mkdir()
    for d in [*(REPO_ROOT / "kernel_patches").iterdir(), *TEST_SERIES.iterdir()]:
        (root / d.name).symlink_to(d)
    monkeypatch.setenv("BALLOON_TESTBED_PATCHES", str(root))
    return root
