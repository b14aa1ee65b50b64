"""`harness compare A B` pairs kernels only within one configuration: the fault-scale scenarios measure the same
kernels with the opt-ins off and on, at 1 and 2 vCPUs, and those four bundles must never be judged against
each other."""

from __future__ import annotations

import json
from dataclasses import asdict

import bundle_synth as synth
import pytest

from harness.errors import InputError
from harness.machine.config import MachineConfig
from harness.paths import REPO_ROOT
from harness.results.bundle import load_bundle
from harness.results.compare import configuration, run_compare

SAMPLES = {"base+zeroing-stats": {("fault_ops_per_s", "page_fault1"): [140000.0, 140001.0, 140000.0]}}


def bundle_of(tmp_path, scenario_file):
    path = synth.write_bundle(tmp_path / scenario_file, SAMPLES, timing="icount")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["scenario"]["content"] = (REPO_ROOT / "scenarios" / f"{scenario_file}.yaml").read_text()
    (path / "manifest.json").write_text(json.dumps(manifest))
    return load_bundle(path)


def test_bundles_of_one_configuration_are_compared(tmp_path):
    a = bundle_of(tmp_path / "a", "fault-scale-off-1cpu")
    b = bundle_of(tmp_path / "b", "fault-scale-off-1cpu")
    (comparison,) = run_compare(a, b, 5.0)
    assert comparison.rows


@pytest.mark.parametrize("other, differs", [("fault-scale-off-2cpu", "guest.cpus 1 vs 2"),
                                            ("fault-scale-on-1cpu", "qemu.balloon")])
def test_bundles_of_two_configurations_are_bad_input(tmp_path, other, differs):
    a = bundle_of(tmp_path / "a", "fault-scale-off-1cpu")
    b = bundle_of(tmp_path / "b", other)
    with pytest.raises(InputError) as exc:
        run_compare(a, b, 5.0)
    assert "ran different configurations" in str(exc.value) and differs in str(exc.value)


def test_bundles_without_their_scenario_text_are_compared_as_before(tmp_path):
    a = load_bundle(synth.write_bundle(tmp_path / "a", SAMPLES))
    assert configuration(a) is None
    (comparison,) = run_compare(a, load_bundle(synth.write_bundle(tmp_path / "b", SAMPLES)), 5.0)
    assert comparison.rows


def with_machine(bundle, **machine):
    manifest = json.loads((bundle.path / "manifest.json").read_text())
    manifest["machine"] = {**asdict(MachineConfig()), **machine}
    (bundle.path / "manifest.json").write_text(json.dumps(manifest))
    return load_bundle(bundle.path)


def test_the_recorded_machine_is_what_is_compared(tmp_path):
    """Bundles that record their machine are paired by it, not by re-reading their scenarios: the same scenario
    text run with another --timing is one configuration (timing is judged apart), another vCPU count is not."""
    a = with_machine(bundle_of(tmp_path / "a", "fault-scale-off-1cpu"), cpus=1, timing="icount")
    b = with_machine(bundle_of(tmp_path / "b", "fault-scale-off-1cpu"), cpus=1, timing="realtime")
    assert configuration(a) == configuration(b) and "machine" in configuration(a)
    c = with_machine(bundle_of(tmp_path / "c", "fault-scale-off-1cpu"), cpus=2)
    with pytest.raises(InputError, match="machine.cpus 1 vs 2"):
        run_compare(a, c, 5.0)
    # Against a bundle from before the record, both sides are read from their scenarios: with the machine type
    # each ran (the old one pc, whatever today's default is).
    old = bundle_of(tmp_path / "old", "fault-scale-off-1cpu")
    pc = with_machine(bundle_of(tmp_path / "pc", "fault-scale-off-1cpu"), cpus=1, machine_type="pc")
    (comparison,) = run_compare(pc, old, 5.0)
    assert comparison.rows
    with pytest.raises(InputError, match="qemu.machine 'q35' vs 'pc'"):
        run_compare(a, old, 5.0)
