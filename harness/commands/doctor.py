"""`harness doctor`: is this machine ready to run guests, and with which accelerator?"""

from __future__ import annotations

import shutil

from rich.console import Console
from rich.table import Table

from harness.constants import QEMU_BINARY
from harness.errors import HarnessError
from harness.guest.launch import choose_accel
from harness.machine import accel

TOOLS = {
    QEMU_BINARY: "qemu-system-x86",
    "busybox": "busybox-static",
    "dropbear": "dropbear-bin",
    "dropbearkey": "dropbear-bin",
    "gcc": "build-essential",
    "cpio": "cpio",
    "modinfo": "kmod",
    "xz": "xz-utils",
    "ccache": "ccache",
}


def cmd_doctor(args) -> int:
    console = Console()
    table = Table(title="balloon testbed: host check")
    table.add_column("check")
    table.add_column("result")
    missing = []
    for tool, package in TOOLS.items():
        path = shutil.which(tool) or (f"/usr/sbin/{tool}" if shutil.which(f"/usr/sbin/{tool}") else None)
        table.add_row(tool, path or f"[red]missing[/] (apt-get install {package})")
        if not path:
            missing.append(package)
    try:
        table.add_row("QEMU version", accel.qemu_version())
        choice = choose_accel(refresh=args.refresh)
        table.add_row("accelerator", f"{choice.accel} ({'cached probe' if choice.cached else 'probed now'})")
        table.add_row("why", choice.reason)
    except HarnessError as exc:
        table.add_row("accelerator", f"[red]probe failed[/]: {exc}")
        missing.append("accelerator")
    console.print(table)
    if not missing:
        console.print(accel.describe(choice))
    return 1 if missing else 0


def register(sub) -> None:
    p = sub.add_parser("doctor", help="check QEMU, tools and the accelerator (boots a probe guest)")
    p.add_argument("--refresh", action="store_true", help="probe the accelerator again instead of using the cache")
    p.set_defaults(func=cmd_doctor)
