"""`harness bench boot`: the kernel's figure, read from the guest's log, and boots that TCG's patching race
killed, booted again rather than timed or fatal."""

import math

import pytest

from harness.commands.bench import RACE_BOOTS_MAX, guest_clock_at_init, timed_boots
from harness.machine import accel
from harness.machine.config import MachineConfig
from harness.machine.vm import GuestDied

TWO_VCPUS = MachineConfig(cpus=2)

DMESG = """\
[    1.397723] Freeing unused kernel image (initmem) memory: 4024K
[    1.405027] x86/mm: Checked W+X mappings: passed, no W+X pages found.
[    1.405289] Run /init as init process
[    1.405372]     with arguments:
[   12.000001] Run /init as init process
"""


def test_the_first_run_init_line_gives_the_guest_clock():
    assert guest_clock_at_init(DMESG) == 1.405289


def test_a_log_without_the_line_gives_nan_not_a_figure():
    assert math.isnan(guest_clock_at_init("[    0.000000] Linux version 6.12\n[    1.0] Run /sbin/init\n"))


RACE = "guest kernel failure: [    1.061625] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI"
FIGURES = {"kernel_to_init_s": 1.2, "init_ready_s": 1.7, "ssh_ready_s": 1.9, "qemu_cpu_s": 2.2}


def boots(*outcomes):
    """A boot callable that raises or returns each outcome in turn."""
    queue = list(outcomes)

    def boot():
        outcome = queue.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome
    return boot


def test_a_boot_the_patching_race_killed_is_booted_again_said_and_counted_not_timed():
    said = []
    runs, raced = timed_boots(2, boots(FIGURES, GuestDied(RACE), FIGURES), "tcg", TWO_VCPUS, said.append)
    assert (runs, raced) == ([FIGURES, FIGURES], 1)
    assert "boot 2/2: " + RACE + ": TCG's patching race" in said[1]


def test_any_other_boot_failure_ends_the_benchmark():
    with pytest.raises(GuestDied, match="VFS"):
        timed_boots(2, boots(GuestDied("guest kernel failure: Kernel panic - not syncing: VFS")), "tcg", TWO_VCPUS,
                    lambda _: None)


def test_the_race_is_not_retried_where_it_cannot_happen_nor_without_end(monkeypatch):
    monkeypatch.setattr(accel, "host_cpu_emulated", lambda: False)
    with pytest.raises(GuestDied):  # under KVM on real hardware an int3 oops is the kernel's own
        timed_boots(1, boots(GuestDied(RACE)), "kvm", TWO_VCPUS, lambda _: None)
    with pytest.raises(GuestDied):
        timed_boots(1, boots(*[GuestDied(RACE)] * (RACE_BOOTS_MAX + 1)), "tcg", TWO_VCPUS, lambda _: None)
