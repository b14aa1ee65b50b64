"""The step kinds that run one probe or one action and record what it measured: balloon, memdirty,
memtouch, fault_scale, contig_bench, kernel_zero_scan, shell, upload, sleep and snapshot.  Each is a function of
the repetition's runner (harness.scenario.steps.RepRunner); a probe's timings count only when it faulted in
what it claims (judge_probe)."""

from __future__ import annotations

import time
from pathlib import Path

from rich.markup import escape

from harness.errors import HarnessError
from harness.guest import probes
from harness.guest.probe_check import check_fault_scale, check_faults
from harness.machine import balloon
from harness.process import poll_until
from harness.scenario.schema import Step
from harness.scenario.step_params import (
    BalloonParams,
    ContigBenchParams,
    FaultScaleParams,
    KernelZeroScanParams,
    MemdirtyParams,
    MemtouchParams,
    ShellParams,
    SleepParams,
    UploadParams,
)
from harness.scenario.step_runner import StepRecord, StepRunner

ALIVE_CHECK_S = 0.25  # how often a sleep step checks QEMU is still running
IN_KERNEL_TIMEOUT_S = 1800  # contig_bench and kernel_zero_scan: one module load that works through memory


def run_balloon(runner: StepRunner, step: Step, record: StepRecord) -> None:
    p: BalloonParams = step.params
    res = balloon.set_target(runner.qmp, p.target_mib, p.timeout_s, runner.progress, alive=runner.vm.check_alive)
    inflate = res.target_mib < res.start_mib
    runner.metric("balloon_inflate_s" if inflate else "balloon_deflate_s", round(res.seconds, 3), step.phase)
    runner.metric("balloon_actual_mib", round(res.actual_mib, 2), step.phase)
    record.data.update(start_mib=res.start_mib, target_mib=res.target_mib, actual_mib=res.actual_mib,
                       events=res.events, inflate=inflate)
    runner.console.print(f"  {step.phase}: balloon {res.start_mib:.0f} -> {res.actual_mib:.0f} MiB "
                         f"in {res.seconds:.1f} s ({res.events} BALLOON_CHANGE events)")


def run_memdirty(runner: StepRunner, step: Step, record: StepRecord) -> None:
    p: MemdirtyParams = step.params
    out = probes.memdirty(runner.ssh, p.size_mib, p.thp, timeout=probe_timeout(p.size_mib))
    record.data.update(out)


def run_memtouch(runner: StepRunner, step: Step, record: StepRecord) -> None:
    p: MemtouchParams = step.params
    out = probes.memtouch(runner.ssh, p.size_mib, p.thp, p.fault, timeout=probe_timeout(p.size_mib))
    # A page handed out non-zero is a finding whatever path faulted it in: recorded before the fault check.
    runner.metric("nonzero_pages", out["nonzero_pages"], step.phase)
    runner.metric("stale_pattern_pages", out["pattern_pages"], step.phase, unit="pages")
    record.data.update(out)
    runner.console.print(f"  {step.phase}: memtouch {out['mib']} MiB{' THP' if out['thp'] else ''} "
                         f"({out['mode']}): {out['wall_ms']:.0f} ms wall, {out['sys_ms']:.0f} ms sys, "
                         f"{out['nonzero_pages']} non-zero pages")


def run_fault_scale(runner: StepRunner, step: Step, record: StepRecord) -> None:
    p: FaultScaleParams = step.params
    out = probes.faultscale(runner.ssh, p.mapping, p.workers, p.seconds, p.region_mib, p.tasks == "threads",
                            timeout=fault_scale_timeout(p.seconds))
    record.data.update(out)
    runner.console.print(f"  {step.phase}: faultscale {out['mode']} x{out['workers']} {out['tasks']}: "
                         f"{out['ops']} pages in {out['elapsed_ms'] / 1e3:.2f} s, {out['ops_per_s']:.0f} ops/s")


def run_sleep(runner: StepRunner, step: Step, record: StepRecord) -> None:
    p: SleepParams = step.params
    end = time.monotonic() + p.seconds
    poll_until(lambda: time.monotonic() >= end, timeout=p.seconds, interval=ALIVE_CHECK_S,
               alive=runner.vm.check_alive)


def run_snapshot(runner: StepRunner, step: Step, record: StepRecord) -> None:
    runner.snapshot(step.phase)


def run_contig_bench(runner: StepRunner, step: Step, record: StepRecord) -> None:
    p: ContigBenchParams = step.params
    out = probes.contig_bench(runner.ssh, p.iterations, p.order, timeout=IN_KERNEL_TIMEOUT_S)
    runner.metric("contig_bench_us", out["elapsed_us"], step.phase)
    record.data.update(out)
    runner.console.print(f"  {step.phase}: contig_bench {out['iterations']} x order-{out['order']}: "
                         f"{out['elapsed_us']} us")


def run_kernel_zero_scan(runner: StepRunner, step: Step, record: StepRecord) -> None:
    p: KernelZeroScanParams = step.params
    out = probes.zero_scan(runner.ssh, p.reserve_mib, timeout=IN_KERNEL_TIMEOUT_S)
    record.data.update(out)
    runner.metric("nonzero_pages", out["nonzero_pages"], step.phase)
    runner.metric("stale_pattern_pages", out["pattern_pages"], step.phase)
    runner.metric("kernel_scanned_pages", out["pages"], step.phase)
    runner.console.print(f"  {step.phase}: kernel __GFP_ZERO scan: {out['pages']} pages, "
                         f"{out['nonzero_pages']} not zero ({out['pattern_pages']} with memdirty's pattern)")


def run_shell(runner: StepRunner, step: Step, record: StepRecord) -> None:
    p: ShellParams = step.params
    res = runner.ssh.run(p.command, timeout=p.timeout_s, check=False)
    out = runner.dir / f"shell-{step.phase}.txt"  # the whole output; steps.json keeps its tail
    out.write_text(res.stdout + (f"# stderr:\n{res.stderr}" if res.stderr else ""))
    record.data.update(stdout=res.stdout[-4000:], rc=res.rc, output_file=out.name)
    if res.rc != 0:
        raise HarnessError(f"{step.phase}: shell command failed with exit code {res.rc}: {p.command}: "
                           f"{(res.stderr.strip() or res.stdout.strip())[-300:]}")


def run_upload(runner: StepRunner, step: Step, record: StepRecord) -> None:
    p: UploadParams = step.params
    src = Path(p.src)
    t0 = time.monotonic()
    digest = runner.ssh.upload(src, p.dest, int(p.mode, 8))
    seconds = time.monotonic() - t0
    record.data.update(src=str(src), dest=p.dest, bytes=src.stat().st_size, sha256=digest, seconds=seconds)
    runner.console.print(f"  {step.phase}: uploaded {src.name} to {p.dest} ({src.stat().st_size} bytes, "
                         f"sha256 checked) in {seconds:.1f} s")


# Timing metrics of the probes, recorded only for a step whose fault check passed.
PROBE_METRICS = {
    "memdirty": lambda out: {"dirty_ms": out["wall_ms"]},
    "memtouch": lambda out: {"fault_in_ms": out["wall_ms"], "cpu_ms": round(out["user_ms"] + out["sys_ms"], 3),
                             "sys_ms": out["sys_ms"]},
    "fault_scale": lambda out: {"fault_ops_per_s": out["ops_per_s"]},
}
PROBE_CHECKS = {"memdirty": check_faults, "memtouch": check_faults, "fault_scale": check_fault_scale}


def judge_probe(runner: StepRunner, step: Step, record: StepRecord) -> None:
    """Timings of a probe count only when it faulted in what it claims (see probe_check)."""
    if step.kind not in PROBE_CHECKS:
        return
    check = PROBE_CHECKS[step.kind](record.data, record.data["vmstat_delta"])
    record.data["fault_check"] = check.invalid or check.note
    if record.data.get("faults") is not None:
        runner.metric("probe_faults", record.data["faults"], step.phase)
    if check.invalid:
        record.invalid = check.invalid
        runner.console.print(f"  [bold red]{step.phase}: {step.kind} is INVALID:[/] {escape(check.invalid)}")
        return
    if check.thp_fallbacks:
        runner.console.print(f"  {step.phase}: {check.note}")
    for name, value in PROBE_METRICS[step.kind](record.data).items():
        runner.metric(name, value, step.phase)


def probe_timeout(size_mib: int) -> float:
    """Generous for TCG (about 15 s per GiB here), yet a hung probe fails the run in minutes."""
    return 120 + size_mib / 5


def fault_scale_timeout(seconds: float) -> float:
    """A guest second under icount is 5-10 host seconds on an idle core, and passed 180 s (with the tmpfs file
    filled first) on this 2-core host while a dozen other guests and a kernel build shared it (2026-11-30)."""
    return 300 + 600 * seconds
