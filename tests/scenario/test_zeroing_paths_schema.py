"""The zeroing_paths step wraps one other step: validation at load time, bad input before anything boots."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness.errors import InputError
from harness.paths import REPO_ROOT
from harness.scenario.schema import load_scenario
from harness.scenario.step_params import MemtouchParams
from tests.conftest import write_scenario as write


def test_zeroing_paths_wraps_one_step(tmp_path):
    s = load_scenario(write(tmp_path, "name: t\nsteps:\n  - zeroing_paths: {memtouch: {size: 256M, fault: store}}\n"
                                      "    phase: touch4k\n  - zeroing_paths: {step: {memtouch: 64M}}\n"))
    first, second = s.steps
    assert (first.kind, first.phase) == ("zeroing_paths", "touch4k")
    inner = first.params.step
    assert inner.kind == "memtouch" and inner.params == MemtouchParams(size="256M", fault="store")
    assert second.phase == "memtouch1", "the default phase is named after the step that runs"


@pytest.mark.parametrize("step, message", [
    ("{zeroing_paths: {boot: }}", "steps[0].zeroing_paths.step: breaks down the zeroing of another kind"),
    ("{zeroing_paths: {zeroing_paths: {memtouch: 1M}}}", "not zeroing_paths"),
    ("{zeroing_paths: {memtouch: 1M, phase: x}}", "steps[0].zeroing_paths.step.phase: the phase goes on"),
    ("{zeroing_paths: {memdirty: 3G}}", "steps[0].zeroing_paths.step.memdirty.size: 3072 MiB does not fit"),
    ("{zeroing_paths: {memtouch: {size: 1M, bogus: 1}}}", "bogus: unknown key"),
    ("{zeroing_paths: }", "steps[0].zeroing_paths.step: missing"),
])
def test_bad_zeroing_paths_steps_are_one_line(tmp_path, step, message):
    path = write(tmp_path, f"name: t\nguest: {{memory: 2G}}\nsteps: [{step}]\n")
    with pytest.raises(InputError) as exc:
        load_scenario(path)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_a_kernel_without_the_series_is_bad_input_before_any_boot(tmp_path):
    scenario = REPO_ROOT / "scenarios" / "zeroing-paths.yaml"
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(scenario), "--kernel",
                           "base+zeroing-stats", "--results", str(tmp_path / "r")], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "need the zeroing-sources series" in lines[0] and "base+zeroing-stats" in lines[0]
    assert not (tmp_path / "r").exists()
