"""A scenario on several kernels and repetitions: pick the accelerator, prepare every kernel, run each
repetition in a fresh guest, check the expectations.  What it measures goes to a RunSink (the bundle)."""

from __future__ import annotations

from dataclasses import replace

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from harness.constants import QEMU_BINARY
from harness.guest.launch import BootKit, choose_accel, prepare_boot
from harness.kernels.spec import KernelSpec
from harness.machine import accel as accel_mod
from harness.machine.qemu_argv import effective_timing
from harness.scenario import expectations
from harness.scenario.schema import Scenario
from harness.scenario.sink import RunSink
from harness.scenario.steps import RepResult, RepRunner


def make_progress(console: Console) -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                    TimeElapsedColumn(), console=console, transient=True)


def execute(scenario: Scenario, specs: list[KernelSpec], reps: int, sink: RunSink,
            console: Console) -> list[RepResult]:
    """Run every repetition on every kernel; returns the repetitions' results (expectations are in the sink)."""
    choice = choose_accel()
    console.print(accel_mod.describe(choice))
    timing, note = effective_timing(scenario.qemu.timing, choice.accel)
    if note:
        console.print(note)
    elif timing == "icount":
        console.print("timing icount: guest time is the instruction count (1 instruction = 1 ns): "
                      "repeatable work, not cycles")
    scenario = replace(scenario, qemu=scenario.qemu.model_copy(update={"timing": timing}))
    machine = scenario.machine()
    sink.set_environment(accel=choice.accel, timing=timing, qemu_version=accel_mod.qemu_version(),
                         qemu_binary=QEMU_BINARY)
    with make_progress(console) as progress:
        kits: list[BootKit] = []
        for spec in specs:
            kit = prepare_boot(spec, progress)
            kits.append(kit)
            sink.add_kernel(dict(kit.kernel.record, zeroing_counters=None, guest_release=None, clocksource=None))
        results = []
        # Repetition-major order, reversed every other repetition (A B, B A, ...), so slow drift on the host
        # and a kernel's position after another affect every kernel alike.
        for rep in range(1, reps + 1):
            order = list(enumerate(kits))
            for i, kit in order if rep % 2 else reversed(order):
                console.print(f"[bold]{scenario.name}[/] rep {rep}/{reps} on [cyan]{kit.kernel.spec.text}[/]")
                runner = RepRunner(scenario=scenario, machine=machine, kit=kit, accel=choice.accel, sink=sink,
                                   rep=rep, progress=progress, console=console)
                try:
                    results.append(runner.run())
                finally:
                    sink.update_kernel(i, zeroing_counters=runner.result.zeroing,
                                       guest_release=runner.result.guest_release, qemu_argv=runner.result.qemu_argv,
                                       clocksource=runner.result.clocksource,
                                       zeroing=runner.result.zeroing_record)
    sink.set_expectations(expectations.evaluate(scenario, sink, results, [k.kernel.spec.text for k in kits]))
    return results
