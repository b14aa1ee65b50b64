"""Benchmarks that print figures and assert nothing.

* `harness bench boot`: how fast a guest boots to SSH-ready here (wall time, and QEMU's CPU time, which the
  host's load moves far less: compare changes on a shared host by both), and the kernel's own part of it by
  the guest's clock (under icount an instruction count: the figure for a patch that changes boot).
* `harness bench noise`: an A/A run (one kernel against itself) in each timing mode, and the
  coefficient of variation of every timing metric: how small a change a comparison can see.
"""

from __future__ import annotations

import math
import os
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from harness.guest.launch import (
    BootKit,
    choose_accel,
    make_vm,
    prepare_boot,
    wait_ready,
)
from harness.kernels.spec import parse_kernel_spec
from harness.machine import accel
from harness.machine.config import TIMING_MODES, MachineConfig
from harness.machine.qemu_argv import effective_timing
from harness.machine.vm import GuestDied
from harness.paths import REPO_ROOT
from harness.results.stats import summarize
from harness.scenario.steps import retry_boot_after

RUN_INIT = re.compile(r"^\[\s*(\d+\.\d+)\] Run /init as init process", re.M)
FIGURES = ("kernel_to_init_s", "init_ready_s", "ssh_ready_s", "qemu_cpu_s", "shutdown_s")


def guest_clock_at_init(dmesg: str) -> float:
    """When the kernel started /init, by the guest's printk clock (NaN if its log does not say)."""
    found = RUN_INIT.search(dmesg)
    return float(found.group(1)) if found else float("nan")


def boot_once(kit: BootKit, accel_name: str, config: MachineConfig) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-boot-") as tmp:
        with make_vm(kit, config, accel_name, Path(tmp)) as vm:
            marker = vm.wait_for_marker(BOOT_TIMEOUT_S)
            guest, ready = wait_ready(vm, kit.keys, BOOT_TIMEOUT_S)
            cpu = vm.cpu_seconds()
            kernel = guest_clock_at_init(guest.run("dmesg").stdout)
            t0 = time.monotonic()
        return {"kernel_to_init_s": kernel, "init_ready_s": marker, "ssh_ready_s": ready, "qemu_cpu_s": cpu,
                "shutdown_s": time.monotonic() - t0}


BOOT_TIMEOUT_S = 300
RACE_BOOTS_MAX = 3  # boots TCG's patching race may kill before the benchmark gives up (it hits 1 in 30-60)


def timed_boots(n: int, boot: Callable[[], dict], accel_name: str, config: MachineConfig,
                say: Callable[[str], None]) -> tuple[list[dict], int]:
    """`n` boots' figures, and how many boots TCG's patching race killed: those are booted again, said, and
    counted, never timed; any other failure ends the benchmark."""
    runs: list[dict] = []
    raced = 0
    while len(runs) < n:
        try:
            runs.append(boot())
        except GuestDied as exc:
            race = retry_boot_after(str(exc), accel_name, config, booted=False, aborted=False)
            if raced == RACE_BOOTS_MAX or not race:
                raise
            raced += 1
            say(f"boot {len(runs) + 1}/{n}: {exc}: TCG's patching race, not a boot time; booting again")
            continue
        say(f"boot {len(runs)}/{n}: /init started {runs[-1]['kernel_to_init_s']:.3f} s by the guest's clock, guest "
            f"init ready {runs[-1]['init_ready_s']:.2f} s, SSH ready {runs[-1]['ssh_ready_s']:.2f} s, QEMU CPU "
            f"{runs[-1]['qemu_cpu_s']:.2f} s")
    return runs, raced


def cmd_bench_boot(args) -> int:
    console = Console()
    choice = choose_accel()
    console.print(accel.describe(choice))
    timing, note = effective_timing(args.timing, choice.accel)
    if note:
        console.print(note)
    kit = prepare_boot(args.kernel)
    config = MachineConfig(memory_mib=2048, cpus=2, timing=timing)
    runs, raced = timed_boots(args.n, lambda: boot_once(kit, choice.accel, config), choice.accel, config,
                              lambda line: console.print(line, markup=False))
    load = os.getloadavg()[0]
    left_out = f", {raced} killed by TCG's patching race left out" if raced else ""
    table = Table(title=f"boot to SSH-ready: {args.kernel.text} under {choice.accel}, timing {timing}, {args.n} boots"
                        f"{left_out}, 2 GiB, 2 vCPUs (host load average {load:.1f} on {os.cpu_count()} cores at the end)")
    for col in ("figure", "min", "median", "max"):
        table.add_column(col, justify="right")
    for key in FIGURES:
        vals = [r[key] for r in runs if not math.isnan(r[key])]  # NaN: a kernel log without the line
        digits = 3 if key == "kernel_to_init_s" else 2
        cells = [f"{v:.{digits}f}" for v in (min(vals), statistics.median(vals), max(vals))] if vals else ["-"] * 3
        table.add_row(key, *cells)
    console.print(table)
    return 0


NOISE_TIMINGS = ("boot_to_ssh_s", "fault_in_ms", "sys_ms", "cpu_ms", "dirty_ms")


def noise_scenario(size: str, cpus: int, reps: int) -> dict:
    return {
        "name": "aa-noise",
        "description": "A/A noise: the same kernel, memtouch then memdirty, every repetition a fresh boot",
        "guest": {"memory": "1G", "cpus": cpus},
        "qemu": {"balloon": {"free_page_reporting": False}},
        "repetitions": reps,
        "steps": [{"memtouch": size, "phase": "touch"}, {"memdirty": size, "phase": "dirty"}],
        "expect": {"nonzero_pages": 0},
    }


def cv_pct(values: list[float]) -> float | None:
    """The coefficient of variation in percent (stats.summarize's), None below 2 samples or for a zero mean."""
    cv = summarize(values).cv if len(values) >= 2 else None
    return None if cv is None else cv * 100


def cmd_bench_noise(args) -> int:
    from harness.results.bundle import load_bundle

    console = Console()
    if args.bundles:
        runs = [(load_bundle(Path(p)), None) for p in args.bundles]
    else:
        runs = _run_noise(args, console)
        if runs is None:
            return 1
    rows = noise_rows(runs)
    first = runs[0][0]
    title = (f"A/A noise: {first.kernels[0]}, {first.accel}, {first.started[:10]}, "
             f"{first.manifest.reps} repetitions per mode, CV = stddev / mean")
    if args.md:
        print(f"{title}\n")
        print("| metric | phase | " + " | ".join(f"{b.timing} median | {b.timing} CV" for b, _ in runs) + " |")
        print("|---|---|" + "---:|---:|" * len(runs))
        for row in rows:
            print("| " + " | ".join(row) + " |")
        return 0
    table = Table(title=title)
    for col in ["metric", "phase"] + [c for b, _ in runs for c in (f"{b.timing} median", f"{b.timing} CV")]:
        table.add_column(col, justify="left" if col in ("metric", "phase") else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    for b, _ in runs:
        console.print(f"{b.timing}: {b.path}")
    return 0


def _run_noise(args, console: Console):
    import yaml

    from harness.results.bundle import load_bundle
    from harness.results.scenario_run import run_scenario

    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-noise-") as tmp:
        scenario = Path(tmp) / "aa-noise.yaml"
        scenario.write_text(yaml.safe_dump(noise_scenario(args.size, args.cpus, args.reps)))
        for mode in args.modes:
            t0 = time.monotonic()
            outcome = run_scenario(scenario, kernels=[args.kernel], results_dir=Path(args.results), timing=mode)
            if not outcome.ok:
                console.print(f"[red]{mode} run failed:[/] {outcome.error}")
                return None
            runs.append((load_bundle(outcome.bundle), time.monotonic() - t0))
    return runs


def noise_rows(runs) -> list[list[str]]:
    """metric, phase, then median and CV per run; the last row is each run's wall time when known."""
    rows = []
    first = runs[0][0]
    keys = [k for k in first.samples(first.kernels[0]) if k[0] in NOISE_TIMINGS]
    for name, phase in sorted(keys, key=lambda k: NOISE_TIMINGS.index(k[0])):
        cells = [name, phase]
        for bundle, _ in runs:
            values = bundle.samples(bundle.kernels[0]).get((name, phase), [])
            cv = cv_pct(values)
            cells += [f"{statistics.median(values):.2f}" if values else "-", "-" if cv is None else f"{cv:.2f} %"]
        rows.append(cells)
    if all(secs is not None for _, secs in runs):
        rows.append(["scenario wall time", ""] + [c for _, secs in runs for c in (f"{secs:.0f} s", "")])
    return rows


def register(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks that print figures")
    bench = p.add_subparsers(dest="bench", required=True)
    b = bench.add_parser("boot", help="boot a guest to SSH-ready several times and print the times")
    b.add_argument("--kernel", default="stock", type=parse_kernel_spec, help="kernel spec (default stock)")
    b.add_argument("-n", type=int, default=5, help="number of boots (default 5)")
    b.add_argument("--timing", choices=TIMING_MODES, default="realtime", help="guest time (default realtime)")
    b.set_defaults(func=cmd_bench_boot)
    n = bench.add_parser("noise", help="A/A run in each timing mode; print each timing metric's CV")
    n.add_argument("--kernel", default="base", type=parse_kernel_spec, help="kernel spec (default base)")
    n.add_argument("--reps", type=int, default=8, help="repetitions per mode (default 8)")
    n.add_argument("--size", default="256M", help="memtouch/memdirty size (default 256M)")
    n.add_argument("--cpus", type=int, default=1, help="guest vCPUs (default 1)")
    n.add_argument("--modes", nargs="+", choices=TIMING_MODES, default=list(TIMING_MODES),
                   help="timing modes to measure (default both)")
    n.add_argument("--results", default=str(REPO_ROOT / "results"), help="where the bundles go")
    n.add_argument("--bundles", nargs="+", metavar="BUNDLE", help="print the figures of earlier noise runs instead")
    n.add_argument("--md", action="store_true", help="print Markdown (for README)")
    n.set_defaults(func=cmd_bench_noise)
