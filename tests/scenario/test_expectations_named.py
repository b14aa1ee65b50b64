"""A check on a kernel holds for it whichever way the run names it: a named stack and the spec it stands for are one
kernel (`harness run stale-data-mlock.yaml --kernel seed002` keeps the scenario's expected leak on its spec)."""

from __future__ import annotations

from conftest import write_scenario

from harness.kernels.spec import parse_kernel_spec
from harness.scenario.expectations import _named_as_run, check_kernel_names
from harness.scenario.schema import load_scenario


def specs(*texts: str) -> list:
    return [parse_kernel_spec(t) for t in texts]


SEED002 = "base+zeroing-stats+balloon-opt-ins+host-zeroed-reporting"


def test_a_check_on_a_spec_applies_to_its_named_stack(tmp_path):
    path = write_scenario(tmp_path, f"name: s\nkernels: [{SEED002}]\nsteps: [memtouch: 64M]\n"
                                    f"expect:\n  expected_leaks: [{{kernel: {SEED002}, why: trusts the host}}]\n"
                                    "  kernel_log: [{kernel: seed002, contains: refusing}]\n")
    scenario = load_scenario(path)
    check_kernel_names(scenario, specs("seed002"))  # no "not a kernel this run knows"
    as_run = _named_as_run(scenario.expect, ["seed002"])
    assert [x.kernel for x in as_run.expected_leaks] == ["seed002"]
    assert [x.kernel for x in _named_as_run(scenario.expect, [SEED002]).kernel_log] == [SEED002]
    assert [x.kernel for x in _named_as_run(scenario.expect, ["stock"]).expected_leaks] == [SEED002]  # not run: kept
