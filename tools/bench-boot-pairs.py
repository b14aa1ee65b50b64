#!/usr/bin/env python3
"""Boot settings against each other, one boot of each per round, the order alternating by round: for boot
changes too small for tools/bench-boot-ab.sh's blocks of boots.  Stock kernel, realtime TCG, 2 GiB, 2 vCPUs.
Run it on an idle machine.  Prints every boot, then the medians per setting.

    .venv/bin/python tools/bench-boot-pairs.py ROUNDS SETTING SETTING...

A SETTING is `default`, `no-lpj` (without harness/guest/delay_loop.py's preset), `cmdline:PARAMS` (added to the
guest's command line) or `qemu:ARGS` (added to QEMU's arguments, split on spaces).
"""

from __future__ import annotations

import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import harness.guest.delay_loop as delay_loop
import harness.machine.vm as vm_module
from harness.guest.launch import choose_accel, make_vm, prepare_boot, wait_ready
from harness.kernels.spec import parse_kernel_spec
from harness.machine.config import MachineConfig

GUEST_CLOCK = {"cpus_up": r"smp: Brought up", "run_init": r"Run /init as init process"}


def boot(kit, accel: str, setting: str, rundir: Path) -> dict[str, float]:
    cmdline = setting.removeprefix("cmdline:") if setting.startswith("cmdline:") else ""
    extra = setting.removeprefix("qemu:").split() if setting.startswith("qemu:") else []
    real_argv, real_preset = vm_module.qemu_argv, delay_loop.wants_preset
    vm_module.qemu_argv = lambda **kw: real_argv(**kw) + extra
    if setting == "no-lpj":
        delay_loop.wants_preset = lambda *a, **k: False
    try:
        with make_vm(kit, MachineConfig(cmdline=cmdline), accel, rundir) as vm:
            guest, ready = wait_ready(vm, kit.keys, 60)
            dmesg = guest.run("dmesg").stdout
    finally:
        vm_module.qemu_argv, delay_loop.wants_preset = real_argv, real_preset
    row = {"ssh_ready": ready}
    for name, pattern in GUEST_CLOCK.items():
        row[name] = float(re.search(rf"\[\s*([\d.]+)\] {pattern}", dmesg).group(1))
    return row


def main(argv: list[str]) -> int:
    if len(argv) < 3 or not argv[0].isdigit():
        print("usage: tools/bench-boot-pairs.py ROUNDS SETTING SETTING... (see the top of this file)", file=sys.stderr)
        return 2
    rounds, settings = int(argv[0]), argv[1:]
    kit = prepare_boot(parse_kernel_spec("stock"))
    accel = choose_accel().accel
    rows: dict[str, list[dict[str, float]]] = {s: [] for s in settings}
    with tempfile.TemporaryDirectory(prefix="boot-pairs-") as tmp:
        for r in range(rounds):
            for setting in settings if r % 2 == 0 else settings[::-1]:
                try:
                    row = boot(kit, accel, setting, Path(tmp))
                except Exception as exc:  # a boot that died (TCG's int3 race) is reported and left out
                    print(f"round {r + 1} {setting}: failed: {str(exc)[:120]}", flush=True)
                    continue
                rows[setting].append(row)
                print(f"round {r + 1} {setting}: " + " ".join(f"{k} {v:.3f}" for k, v in row.items()), flush=True)
    print(f"\n{time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime())}, accel {accel}, {rounds} rounds, medians (s):")
    print("| setting | boots | " + " | ".join(["ssh_ready", *GUEST_CLOCK]) + " |")
    print("| --- | ---: | " + " | ".join(["---:"] * (1 + len(GUEST_CLOCK))) + " |")
    for setting, got in rows.items():
        cells = [f"{statistics.median(x[k] for x in got):.3f}" if got else "-" for k in ["ssh_ready", *GUEST_CLOCK]]
        print(f"| {setting} | {len(got)} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
