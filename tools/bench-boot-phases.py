#!/usr/bin/env python3
"""Where boot to SSH goes, phase by phase, on the host's clock: stock kernel, realtime TCG, 2 GiB, 2 vCPUs
(`harness bench boot`'s guest).  Run it on an idle machine.  Prints every boot, then the medians.

    .venv/bin/python tools/bench-boot-phases.py BOOTS

The guest's printk clock is put on the host's by the console: each line's arrival (the serial log is read every
millisecond) less its timestamp; the smallest such difference over the boot is when the guest's clock read 0.
Phases: `qemu_to_clock` (QEMU, firmware and the kernel's first steps, until its clock starts), `kernel`
(to `Run /init`), `init` (/init until it prints the ready marker), `login` (the harness's SSH login and its
first command).  Then `relogin`: a second login and command on the booted guest, as after a migration or a
load from a saved boot.

Run it with PYTHONPATH=/path/to/another/checkout to time that checkout's code.
"""

from __future__ import annotations

import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from harness.constants import READY_MARKER
from harness.guest.launch import choose_accel, connect, make_vm, prepare_boot, wait_ready
from harness.kernels.spec import STOCK
from harness.machine.config import MachineConfig

PHASES = ["qemu_to_clock", "kernel", "init", "login", "ssh_ready", "relogin"]
STAMP = re.compile(r"\[\s*(\d+\.\d+)\]")
# Parsed here rather than imported from harness.commands.bench, so that the tool runs on older checkouts too.
RUN_INIT = re.compile(r"^\[\s*(\d+\.\d+)\] Run /init as init process", re.M)


def follow_console(serial_log: Path, started: float, timeout: float = 60) -> tuple[float, float]:
    """Read the console as it grows until the ready marker: (host time the guest clock read 0, marker's
    arrival), both in seconds since QEMU started."""
    clock_zero, pos, pending = float("inf"), 0, b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if serial_log.exists():
            with serial_log.open("rb") as f:
                f.seek(pos)
                chunk = f.read()
            pos += len(chunk)
            arrival = time.monotonic() - started
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                text = line.decode(errors="replace")
                if READY_MARKER in text:
                    return clock_zero, arrival
                stamp = STAMP.match(text)
                if stamp and float(stamp.group(1)) > 0:
                    clock_zero = min(clock_zero, arrival - float(stamp.group(1)))
        time.sleep(0.001)
    raise TimeoutError(f"no {READY_MARKER!r} on the console within {timeout:.0f} s")


def boot(kit, accel: str, rundir: Path) -> dict[str, float]:
    with make_vm(kit, MachineConfig(), accel, rundir) as vm:
        clock_zero, marker = follow_console(vm.serial_log, vm.started_at)
        guest, ready = wait_ready(vm, kit.keys, 60)
        run_init = float(RUN_INIT.search(guest.run("dmesg").stdout).group(1))
        again = time.monotonic()
        connect(vm, kit.keys, rundir / "relogin.log")
        relogin = time.monotonic() - again
    return {"qemu_to_clock": clock_zero, "kernel": run_init, "init": marker - clock_zero - run_init,
            "login": ready - marker, "ssh_ready": ready, "relogin": relogin}


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: tools/bench-boot-phases.py BOOTS", file=sys.stderr)
        return 2
    kit = prepare_boot(STOCK)
    accel = choose_accel().accel
    rows = []
    with tempfile.TemporaryDirectory(prefix="boot-phases-") as tmp:
        for n in range(int(argv[0])):
            try:
                row = boot(kit, accel, Path(tmp))
            except Exception as exc:  # a boot that died (TCG's int3 race) is reported and left out
                print(f"boot {n + 1}: failed: {str(exc)[:120]}", flush=True)
                continue
            rows.append(row)
            print(f"boot {n + 1}: " + " ".join(f"{k} {v:.3f}" for k, v in row.items()), flush=True)
    if not rows:
        return 1
    print(f"\n{time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime())}, accel {accel}, {len(rows)} boots, medians (s), "
          f"load average {Path('/proc/loadavg').read_text().split()[0]} at the end:")
    print("| " + " | ".join(PHASES) + " |")
    print("| " + " | ".join(["---:"] * len(PHASES)) + " |")
    print("| " + " | ".join(f"{statistics.median(r[k] for r in rows):.3f}" for k in PHASES) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
