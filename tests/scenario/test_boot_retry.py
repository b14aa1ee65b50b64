"""A boot that TCG's race with the kernel's code patching killed ("Oops: int3") is booted once more, and the
bundle says so; any other failure, a second such death, or a guest that had already answered is not."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from rich.console import Console

from harness.machine import accel
from harness.machine.config import MachineConfig
from harness.machine.vm import GuestDied
from harness.scenario.parallel import PlannedRep
from harness.scenario.runner import _order_entry
from harness.scenario.steps import RepResult, RepRunner, retry_boot_after

RACE = ("QEMU exited with code 0 after a guest kernel failure: [    1.045529] Oops: int3: 0000 [#1] PREEMPT SMP "
        "NOPTI")
TWO = MachineConfig(cpus=2, timing="realtime")


def test_only_tcg_s_patching_race_at_boot_is_retried(monkeypatch):
    monkeypatch.setattr(accel, "host_cpu_emulated", lambda: False)
    assert retry_boot_after(RACE, "tcg", TWO, booted=False, aborted=False)
    assert not retry_boot_after(RACE, "kvm", TWO, booted=False, aborted=False)
    assert not retry_boot_after(RACE, "tcg", MachineConfig(cpus=2, timing="icount"), booted=False, aborted=False)
    assert not retry_boot_after(RACE, "tcg", MachineConfig(cpus=1), booted=False, aborted=False)
    assert not retry_boot_after(RACE, "tcg", TWO, booted=True, aborted=False)  # a step's failure is a result
    assert not retry_boot_after(RACE, "tcg", TWO, booted=False, aborted=True)
    assert not retry_boot_after("guest kernel failure: Kernel panic - not syncing: VFS", "tcg", TWO,
                                booted=False, aborted=False)


def test_a_kvm_guest_nested_in_a_tcg_host_is_retried_too(monkeypatch):
    monkeypatch.setattr(accel, "host_cpu_emulated", lambda: True)  # the KVM runner VM: its CPU is QEMU's TCG
    assert retry_boot_after(RACE, "kvm", TWO, booted=False, aborted=False)
    assert not retry_boot_after(RACE, "kvm", MachineConfig(cpus=1), booted=False, aborted=False)


def runner(tmp_path, failures: list[str]) -> tuple[RepRunner, Console]:
    console = Console(record=True, width=200)
    kit = SimpleNamespace(kernel=SimpleNamespace(spec=SimpleNamespace(text="stock", slug="stock")))
    sink = SimpleNamespace(rep_dir=lambda slug, rep: tmp_path / slug / f"rep{rep}")
    r = RepRunner(scenario=None, machine=TWO, kit=kit, accel="tcg", sink=sink, rep=1, progress=None,
                  console=console)
    r.dir.mkdir(parents=True)

    def run_once() -> RepResult:
        (r.dir / "serial.log").write_text("console of this boot\n")
        if failures:
            raise GuestDied(failures.pop(0))
        return r.result

    r._run_once = run_once  # type: ignore[method-assign]  # the boot itself is tested on real guests
    return r, console


def test_the_second_boot_runs_and_the_first_one_s_console_is_kept(tmp_path):
    r, console = runner(tmp_path, [RACE])
    result = r.run()
    assert result.boot_retried_after == RACE
    assert (r.dir / "boot-attempt1-serial.log").is_file() and (r.dir / "serial.log").is_file()
    assert "booting it once more" in " ".join(console.export_text().split())
    entry = _order_entry(PlannedRep(0, "stock", 1), result)
    assert entry == {"kernel": "stock", "rep": 1, "from": "boot", "boot_retried_after": RACE}
    assert "boot_retried_after" not in _order_entry(PlannedRep(0, "stock", 2), RepResult("stock", 2))


@pytest.mark.parametrize("failures", [[RACE, RACE], ["guest kernel failure: Kernel panic - not syncing"]])
def test_a_second_death_or_another_failure_fails_the_repetition(tmp_path, failures):
    r, _ = runner(tmp_path, list(failures))
    with pytest.raises(GuestDied):
        r.run()
