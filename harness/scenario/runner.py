"""A scenario on several kernels and repetitions: pick the accelerator, prepare every kernel, run each
repetition in a fresh guest (booted, or loaded from the kernel's saved boot), check the expectations.  What it measures goes to a RunSink (the bundle)."""

from __future__ import annotations

import contextlib
from dataclasses import asdict, replace

from rich.console import Console
from rich.markup import escape
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
from harness.scenario.parallel import PlannedRep, RepOutcome, Scheduler, Tagged, choose_jobs, plan_order
from harness.scenario.saved_boot import FROM_BOOT, FROM_SNAPSHOT, SavedBoots
from harness.scenario.schema import Scenario
from harness.scenario.sink import BufferedSink, RunSink
from harness.scenario.steps import RepResult, RepRunner


def make_progress(console: Console) -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                    TimeElapsedColumn(), console=console, transient=True)


def execute(scenario: Scenario, specs: list[KernelSpec], reps: int, sink: RunSink,
            console: Console, jobs: int | None = None) -> list[RepResult]:
    """Run every repetition on every kernel; returns the repetitions' results (expectations are in the sink).

    `jobs`: guests at once under icount (default: what the host allows, harness.scenario.parallel); realtime
    runs always run one guest at a time."""
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
                         qemu_binary=QEMU_BINARY, machine=asdict(machine))
    saved_boots = SavedBoots() if scenario.repetitions_from == FROM_SNAPSHOT and reps > 1 else None
    with make_progress(console) as progress, saved_boots or contextlib.nullcontext():
        kits: list[BootKit] = []
        for spec in specs:
            kit = prepare_boot(spec, progress, files=scenario.files, mm_selftests=scenario.mm_selftests)
            kits.append(kit)
            sink.add_kernel(kit.kernel.record.model_copy(update={"zeroing_counters": None, "guest_release": None,
                                                                 "clocksource": None}))
        planned = plan_order([k.kernel.spec.text for k in kits], reps)
        jobs, jobs_note = choose_jobs(jobs, timing, machine.memory_mib, len(planned))
        if jobs_note:
            console.print(jobs_note)
        sink.set_schedule(jobs=jobs, order=[{"kernel": p.kernel, "rep": p.rep} for p in planned])
        if jobs > 1:
            console.print(f"{jobs} guests at once (icount: each guest's timings are its own instruction counts)")
        overall = progress.add_task(f"{scenario.name}: repetitions", total=len(planned)) if jobs > 1 else None

        def start(p: PlannedRep) -> RepRunner:
            tag = f"{p.kernel} rep {p.rep}"
            verb = "starts" if jobs > 1 else "on"
            console.print(f"[bold]{scenario.name}[/] rep {p.rep}/{reps} {verb} [cyan]{escape(p.kernel)}[/]")
            return RepRunner(scenario=scenario, machine=machine, kit=kits[p.index], accel=choice.accel,
                             sink=BufferedSink(sink), rep=p.rep, progress=Tagged(progress, tag) if jobs > 1 else progress,
                             console=Tagged(console, tag) if jobs > 1 else console,
                             saved_boot=saved_boots.for_kernel(p.index) if saved_boots else None)

        def finish(outcome: RepOutcome) -> None:
            runner = outcome.runner
            assert isinstance(runner, RepRunner) and isinstance(runner.sink, BufferedSink)
            runner.sink.flush()
            sink.update_kernel(outcome.planned.index, zeroing_counters=runner.result.zeroing,
                               guest_release=runner.result.guest_release, qemu_argv=runner.result.qemu_argv,
                               clocksource=runner.result.clocksource, zeroing=runner.result.zeroing_record)
            if overall is not None:
                progress.advance(overall)

        scheduler = Scheduler(planned, jobs, start=start, finish=finish)
        results = [r.result for r in scheduler.execute()]
        ran = {(r.kernel, r.rep): r for r in results}
        sink.set_schedule(jobs=jobs, order=[_order_entry(p, ran.get((p.kernel, p.rep))) for p in planned])
    sink.set_expectations(expectations.evaluate(scenario, sink, results, [k.kernel.spec.text for k in kits]))
    return results


def _order_entry(p: PlannedRep, result: RepResult | None) -> dict:
    """A repetition in the manifest's rep_order: where it started from, and a first boot TCG's race killed."""
    entry = {"kernel": p.kernel, "rep": p.rep, "from": result.started_from if result else FROM_BOOT}
    if result is not None and result.boot_retried_after:
        entry["boot_retried_after"] = result.boot_retried_after
    return entry
