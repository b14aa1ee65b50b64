"""`harness bench boot`: how fast a guest boots to SSH-ready here.  Prints figures; asserts nothing."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from harness import accel
from harness.image import build_image, ssh_keys
from harness.kernel import parse_kernel_spec, resolve_kernel
from harness.scenario import GuestOptions, QemuOptions
from harness.vm import VM


def boot_once(kernel, initrd, choice: str, keys) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-boot-") as tmp:
        with VM(kernel=kernel, initrd=initrd, guest=GuestOptions(memory_mib=2048, cpus=2), qemu=QemuOptions(),
                accel=choice, logdir=Path(tmp), keys=keys) as vm:
            marker = vm.wait_for_marker(120)
            ready = vm.wait_ready(120)
            t0 = time.monotonic()
        return {"init_ready_s": marker, "ssh_ready_s": ready, "shutdown_s": time.monotonic() - t0}


def cmd_bench_boot(args) -> int:
    console = Console()
    choice = accel.choose_accel()
    console.print(accel.describe(choice))
    kernel = resolve_kernel(parse_kernel_spec(args.kernel))
    initrd = build_image(kernel)
    keys = ssh_keys()
    runs = []
    for i in range(args.n):
        runs.append(boot_once(kernel, initrd, choice.accel, keys))
        console.print(f"boot {i + 1}/{args.n}: guest init ready {runs[-1]['init_ready_s']:.2f} s, "
                      f"SSH ready {runs[-1]['ssh_ready_s']:.2f} s")
    table = Table(title=f"boot to SSH-ready: {args.kernel} under {choice.accel}, {args.n} boots")
    for col in ("figure", "min", "median", "max"):
        table.add_column(col, justify="right")
    for key in ("init_ready_s", "ssh_ready_s", "shutdown_s"):
        vals = [r[key] for r in runs]
        table.add_row(key, f"{min(vals):.2f}", f"{statistics.median(vals):.2f}", f"{max(vals):.2f}")
    console.print(table)
    return 0


def register(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks that print figures")
    bench = p.add_subparsers(dest="bench", required=True)
    b = bench.add_parser("boot", help="boot a guest to SSH-ready several times and print the times")
    b.add_argument("--kernel", default="stock", help="kernel spec (default stock)")
    b.add_argument("-n", type=int, default=5, help="number of boots (default 5)")
    b.set_defaults(func=cmd_bench_boot)
