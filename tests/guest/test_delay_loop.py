"""lpj= for TCG guests with several vCPUs: learnt from the first boot's own TSC measurement, passed to later boots,
and never under icount, KVM or one vCPU."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

from harness.guest import delay_loop
from harness.guest.launch import choose_accel, make_vm, prepare_boot, wait_ready
from harness.kernels.spec import parse_kernel_spec
from harness.machine.config import MachineConfig
from harness.machine.vm import GuestDied
from harness.scenario.steps import retry_boot_after


@pytest.fixture
def tsc_cache(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "tsc.json"
    monkeypatch.setattr(delay_loop, "_cache_file", lambda: path)
    return path


def test_the_tsc_rate_is_read_from_the_guest_s_line():
    assert delay_loop.parse_tsc_khz("[    0.016000] tsc: Detected 2597.896 MHz processor\n") == 2597896
    assert delay_loop.parse_tsc_khz("[    0.000000] tsc: Fast TSC calibration failed\n") is None


def test_a_preset_only_for_tcg_in_real_time_with_several_vcpus(tsc_cache, monkeypatch):
    kernel = prepare_boot(parse_kernel_spec("stock")).kernel
    assert delay_loop.kernel_hz(kernel) == 250  # Debian's cloud kernel
    two = MachineConfig(cpus=2, timing="realtime")
    assert delay_loop.preset(kernel, "tcg", two) is None  # nothing learnt yet
    monkeypatch.setattr(delay_loop, "known_tsc_khz", lambda: 2597896)
    assert delay_loop.preset(kernel, "tcg", two) == "lpj=10391584"  # what the boot CPU prints for itself
    assert delay_loop.preset(kernel, "kvm", two) is None
    assert delay_loop.preset(kernel, "tcg", MachineConfig(cpus=2, timing="icount")) is None
    assert delay_loop.preset(kernel, "tcg", MachineConfig(cpus=1)) is None
    assert delay_loop.preset(kernel, "tcg", MachineConfig(cpus=2, cmdline="lpj=5000000")) is None


def boot_and_read(kit, config, accel, logdir: Path) -> tuple[str, str]:
    """One boot's QEMU command line and dmesg.  A boot that TCG's patching race killed (1 in 30-60 with 2
    vCPUs) is booted again, as the harness does for its repetitions; it died before learning anything."""
    for attempt in (1, 2):
        try:
            with make_vm(kit, config, accel, logdir / f"try{attempt}") as vm:
                guest, _ = wait_ready(vm, kit.keys, 120)
                return " ".join(vm.argv), guest.run("dmesg").stdout
        except GuestDied as died:
            if attempt == 2 or not retry_boot_after(str(died), accel, config, booted=False, aborted=False):
                raise
            warnings.warn(f"boot died of TCG's patching race, booting again: {died}", stacklevel=1)
    raise AssertionError("unreachable")


@pytest.mark.vm
def test_the_first_boot_teaches_the_next_one_its_delay_loop(tsc_cache, tmp_path):
    """Under TCG: the first 2-vCPU boot calibrates and remembers the TSC rate; the second skips every CPU's
    calibration with the preset.  Under KVM neither boot gets one."""
    kit = prepare_boot(parse_kernel_spec("stock"))
    accel = choose_accel().accel
    config = MachineConfig(memory_mib=512, cpus=2)
    logs = [boot_and_read(kit, config, accel, tmp_path / f"boot{n}") for n in (1, 2)]
    if accel != "tcg":
        assert "lpj=" not in logs[0][0] + logs[1][0] and not tsc_cache.exists()
        return
    (first_argv, first_log), (second_argv, second_log) = logs
    assert "lpj=" not in first_argv
    khz = delay_loop.parse_tsc_khz(first_log)
    assert khz is not None and delay_loop.known_tsc_khz() == khz
    lpj = re.search(r"\blpj=(\d+)", second_argv)
    assert lpj is not None and int(lpj.group(1)) == khz * 1000 // 250
    assert "Calibrating delay loop (skipped) preset value" in second_log, second_log[:3000]
    assert "smp: Brought up 1 node, 2 CPUs" in second_log
