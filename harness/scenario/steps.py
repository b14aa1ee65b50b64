"""One repetition of a scenario on one kernel: boot, run the steps, record metrics and raw files."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel
from rich.markup import escape

from harness.errors import HarnessError
from harness.guest import probes, zeroing, zeroing_paths
from harness.guest.launch import BootKit, connect, make_vm, wait_ready
from harness.guest.probe_check import check_fault_scale, check_faults
from harness.guest.ssh import Guest
from harness.machine import balloon
from harness.machine.config import MachineConfig
from harness.machine.qmp import QMP
from harness.machine.rss import RssSampler
from harness.machine.vm import VM
from harness.process import poll_until
from harness.scenario import migration_steps, workload_steps
from harness.scenario.saved_boot import FROM_BOOT, FROM_SNAPSHOT, BootFacts, SavedBoot
from harness.scenario.schema import (
    BOOT_PHASE,
    Scenario,
    Step,
    ZeroingPathsParams,
)
from harness.scenario.sink import MetricSink
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

BOOT_TIMEOUT_S = 180
# Under icount a boot executes every instruction on one host thread, about 3x the realtime boot; on a host
# whose cores are shared with other guests and kernel builds that passed 180 s (measured 2026-11-30).
ICOUNT_BOOT_TIMEOUT_S = 3 * BOOT_TIMEOUT_S
ALIVE_CHECK_S = 0.25  # how often a sleep step checks QEMU is still running
# What a kernel prints when it caught itself misbehaving: a run that hits one of these is not a clean
# result, whatever the counters say.
KERNEL_PROBLEM = re.compile(r"WARNING: CPU: \d+ PID:|BUG:|Bad page (state|map)|Oops|general protection fault|"
                            r"list_(add|del) corruption|page dumped because")


@dataclass
class StepRecord:
    """What expectations need to know about a step beyond its metrics."""

    kind: str
    phase: str
    data: dict = field(default_factory=dict)
    invalid: str | None = None  # why the step did not measure what it claims (then it is not a result)


@dataclass
class RepResult:
    kernel: str
    rep: int
    steps: list[StepRecord] = field(default_factory=list)
    zeroing: str = "unknown"  # "vmstat", "trace", "vmstat+trace" or "unavailable" (Plan.summary)
    zeroing_record: dict | None = None  # which method counted each zeroing metric, or why none could
    guest_release: str | None = None
    clocksource: str | None = None  # the guest's current clocksource: kvm-clock on KVM, tsc/hpet/... under TCG
    qemu_argv: list[str] = field(default_factory=list)
    kernel_problems: list[str] = field(default_factory=list)  # WARNING/BUG/bad page lines from dmesg
    kernel_log: str = ""  # the guest's dmesg at the end of the repetition
    selftest_failures: list[str] = field(default_factory=list)  # "test: case" of every failed selftest case
    started_from: str = FROM_BOOT  # or FROM_SNAPSHOT: loaded from the kernel's saved boot

    @property
    def invalid_steps(self) -> list[str]:
        return [f"rep{self.rep} {s.phase} ({s.kind}): {s.invalid}" for s in self.steps if s.invalid]


class RepRunner:
    def __init__(self, *, scenario: Scenario, machine: MachineConfig, kit: BootKit, accel: str, sink: MetricSink,
                 rep: int, progress, console, saved_boot: SavedBoot | None = None):
        self.saved_boot = saved_boot  # repetitions_from: snapshot: the booted guest this kernel's reps share
        self.scenario = scenario
        self.machine = machine
        self.kit = kit
        self.kernel = kit.kernel
        self.accel = accel
        self.sink = sink
        self.rep = rep
        self.progress = progress
        self.console = console
        self.dir = sink.rep_dir(self.kernel.spec.slug, rep)
        self.result = RepResult(self.kernel.spec.text, rep)
        self._vm: VM | None = None
        self._ssh: Guest | None = None
        self._rss: RssSampler | None = None
        self.previous_step_peak_kib = 0  # highest host RSS during the step before the current one
        self.zeroing: zeroing.Plan | None = None
        self._aborted = False

    def metric(self, name: str, value: float, phase: str, unit: str | None = None) -> None:
        self.sink.add_metric(name, value, phase=phase, rep=self.rep, kernel=self.kernel.spec.text, unit=unit)

    # The VM, its SSH connection and the RSS sampler exist while run() runs.
    @property
    def vm(self) -> VM:
        assert self._vm is not None
        return self._vm

    @property
    def ssh(self) -> Guest:
        assert self._ssh is not None
        return self._ssh

    @property
    def qmp(self) -> QMP:
        assert self.vm.qmp is not None
        return self.vm.qmp

    @property
    def rss(self) -> RssSampler:
        assert self._rss is not None
        return self._rss

    def abort(self) -> None:
        """From another thread: stop this repetition's guest (QEMU is killed; run() then fails and cleans up)."""
        self._aborted = True
        if self._vm is not None:
            self._vm.kill()

    def run(self) -> RepResult:
        saves = self.saved_boot is not None and self.saved_boot.claim()
        facts = self.saved_boot.wait() if self.saved_boot is not None and not saves else None
        vm = make_vm(self.kit, self.machine, self.accel, self.dir,
                     restore_from=self.saved_boot.path if facts is not None and self.saved_boot else None)
        self._vm = vm
        if self._aborted:  # abort() came before the VM existed
            vm.kill()
        try:
            with vm:
                self.result.qemu_argv = vm.argv
                # A callable: after a migrate step the samples are the destination QEMU's.
                self._rss = RssSampler(lambda: vm.pid, self.dir / "rss.csv", vm.started_at).start()
                try:
                    if facts is not None:
                        self._resume(facts)
                    else:
                        self._boot()
                        if saves:
                            self._save_boot()
                    for step in self.scenario.steps:
                        if step.kind != "boot":
                            self._run_step(step)
                    self._snapshot("final")
                    self._save_kernel_log()
                except HarnessError:
                    vm.explain_failure()
                    raise
        finally:
            if saves and self.saved_boot is not None and self.saved_boot.facts is None:
                self.saved_boot.failed()  # the others boot
            if self._rss is not None:
                self._rss.stop()
            self._save_steps()
        return self.result

    def _save_steps(self) -> None:
        """steps.json: what each step did, its vmstat deltas, and whether its probe did what it claims."""
        rows = [{"kind": s.kind, "phase": s.phase, "invalid": s.invalid, **s.data} for s in self.result.steps]
        (self.dir / "steps.json").write_text(json.dumps(rows, indent=1, default=str) + "\n")

    # -- boot --------------------------------------------------------------------------------
    def _boot(self) -> None:
        task = self.progress.add_task(f"boot {self.kernel.spec.text} (rep {self.rep})", total=None)
        try:
            timeout = ICOUNT_BOOT_TIMEOUT_S if self.machine.timing == "icount" else BOOT_TIMEOUT_S
            self._ssh, seconds = wait_ready(self.vm, self.kit.keys, timeout, self.dir / "transcript.log")
        finally:
            self.progress.remove_task(task)
        self.metric("boot_to_ssh_s", round(seconds, 3), BOOT_PHASE)
        guest = self.ssh
        self.result.guest_release = guest.run("uname -r").stdout.strip()
        self.result.clocksource = probes.clocksource(guest)
        if self.machine.stats_interval_s:
            balloon.enable_stats(self.qmp, self.machine.stats_interval_s)
        self.zeroing = zeroing.setup(guest, self.scenario.guest.zeroing)
        self.result.zeroing = self.zeroing.summary()
        self.result.zeroing_record = self.zeroing.record()
        self._snapshot("boot")
        self.console.print(f"  booted {self.kernel.spec.text} ({self.result.guest_release}) in {seconds:.1f} s; "
                           f"zeroing counted by {escape(self.zeroing.describe())}")

    def _save_boot(self) -> None:
        """Save the booted guest for this kernel's other repetitions (repetitions_from: snapshot)."""
        assert self.saved_boot is not None and self.zeroing is not None
        stats = self.vm.save_state(self.saved_boot.path)
        self.metric("save_state_s", round(stats.wall_s, 3), BOOT_PHASE)
        self.saved_boot.saved(BootFacts(self.result.guest_release, self.result.clocksource, self.zeroing))
        self.console.print(f"  saved the booted guest for the next repetitions ({stats.file_mib:.0f} MiB in "
                           f"{stats.wall_s:.1f} s)")

    def _resume(self, facts: BootFacts) -> None:
        """Instead of a boot: the guest the first repetition saved, loaded into this fresh QEMU."""
        assert isinstance(facts.zeroing, zeroing.Plan)
        self.result.started_from = FROM_SNAPSHOT
        self._ssh = connect(self.vm, self.kit.keys, self.dir / "transcript.log")
        self.metric("restore_s", round(self.vm.restore_s or 0.0, 3), BOOT_PHASE)
        self.result.guest_release, self.result.clocksource = facts.guest_release, facts.clocksource
        if self.machine.stats_interval_s:
            balloon.enable_stats(self.qmp, self.machine.stats_interval_s)
        self.zeroing = facts.zeroing
        self.result.zeroing = self.zeroing.summary()
        self.result.zeroing_record = self.zeroing.record()
        self._snapshot("boot")
        self.console.print(f"  started {self.kernel.spec.text} from the saved boot in {self.vm.restore_s or 0:.1f} s")

    # -- steps -------------------------------------------------------------------------------
    def _counters(self) -> tuple[dict, dict]:
        assert self.zeroing is not None
        return zeroing.read_counters(self.ssh, self.zeroing)

    def _run_step(self, step: Step) -> None:
        self.vm.check_alive()
        self.previous_step_peak_kib = self.rss.peak_kib()
        self.rss.mark()
        wrapped = isinstance(step.params, ZeroingPathsParams)
        if wrapped:  # the wrapped step runs as itself, with this phase
            inner = step.params.step
            step = Step(inner.kind, step.phase, inner.params)
        before, traced_before = self._counters()
        paths_before = zeroing_paths.read(self.ssh) if wrapped else None
        if paths_before is not None:
            before = paths_before.vmstat  # read with the zeroing sources, so both cover the same window
        record = StepRecord(step.kind, step.phase)
        record.data["t_start_s"] = self._rss_clock()
        # a step kind of its own module, else this class's _step_KIND method: either takes (runner, step, record)
        handler = STEP_FUNCTIONS.get(step.kind) or getattr(type(self), f"_step_{step.kind}")
        task = self.progress.add_task(f"{step.phase}: {step.kind} {_describe(step.params)}", total=None)
        try:
            handler(self, step, record)
        finally:
            self.progress.remove_task(task)
        record.data["t_end_s"] = self._rss_clock()
        paths_after = zeroing_paths.read(self.ssh) if wrapped else None
        after, traced_after = self._counters()
        if paths_before is not None and paths_after is not None:
            after = paths_after.vmstat
            self._record_zeroing_paths(step.phase, record, paths_before, paths_after)
        record.data["vmstat_delta"] = probes.tracked_deltas(before, after)
        for name, delta in record.data["vmstat_delta"].items():
            self.metric(f"vmstat.{name}", delta, step.phase)
        if step.kind in PROBE_METRICS:
            self._judge_probe(step, record)
        self._record_zeroing(step, record, traced_before, traced_after, before, after)
        rss = self.rss.current_kib()
        if rss is not None:
            self.metric("rss_mib", round(rss / 1024, 1), step.phase)
        self.result.steps.append(record)

    def _record_zeroing(self, step: Step, record: StepRecord, traced_before: dict, traced_after: dict,
                        before: dict, after: dict) -> None:
        assert self.zeroing is not None
        values, problems = zeroing.step_values(self.zeroing, traced_before, traced_after,
                                               {k: after[k] - before.get(k, 0) for k in after})
        for name, pages in values.items():
            self.metric(name, pages, step.phase)
        if problems:
            record.data["zeroing_problems"] = problems
            self.console.print(f"  [yellow]{step.phase}: zeroing counts left out:[/] {escape('; '.join(problems))}")

    def _rss_clock(self) -> float:
        """Now, on rss.csv's clock (seconds since QEMU started): the report draws each phase as a band."""
        return round(time.monotonic() - self.vm.started_at, 3)

    def _record_zeroing_paths(self, phase: str, record: StepRecord, before: zeroing_paths.Snapshot,
                              after: zeroing_paths.Snapshot) -> None:
        counts = zeroing_paths.delta(before, after)
        parts = zeroing_paths.breakdown(counts, after.reporting_order)
        # What the free memory looked like when the step began: where the unskippable pages could come from.
        parts[f"{zeroing_paths.PREFIX}.start.pcp_pages"] = before.pcp_pages
        parts[f"{zeroing_paths.PREFIX}.start.free_below_reporting_order"] = zeroing_paths.free_pages_below(
            before, before.reporting_order)
        for name, pages in parts.items():
            self.metric(name, pages, phase, unit="pages")
        record.data["zeroing_paths"] = {"reporting_order": after.reporting_order,
                                        "counters": zeroing_paths.rows(counts)}
        prefix = zeroing_paths.PREFIX
        top = ", ".join(f"{name.removeprefix(f'{prefix}.zeroed.')} {pages}" for name, pages in parts.items()
                        if name.startswith(f"{prefix}.zeroed.") and "via_" not in name and pages)
        self.console.print(f"  {phase}: zeroed {parts[f'{prefix}.zeroed']} pages ({top or 'none'}), "
                           f"skipped {parts[f'{prefix}.skipped']}")

    def _step_balloon(self, step: Step, record: StepRecord) -> None:
        p: BalloonParams = step.params
        res = balloon.set_target(self.qmp, p.target_mib, p.timeout_s, self.progress, alive=self.vm.check_alive)
        inflate = res.target_mib < res.start_mib
        self.metric("balloon_inflate_s" if inflate else "balloon_deflate_s", round(res.seconds, 3), step.phase)
        self.metric("balloon_actual_mib", round(res.actual_mib, 2), step.phase)
        record.data.update(start_mib=res.start_mib, target_mib=res.target_mib, actual_mib=res.actual_mib,
                           events=res.events, inflate=inflate)
        self.console.print(f"  {step.phase}: balloon {res.start_mib:.0f} -> {res.actual_mib:.0f} MiB "
                           f"in {res.seconds:.1f} s ({res.events} BALLOON_CHANGE events)")

    def follow_migration(self, ssh: Guest) -> None:
        """The guest moved to another QEMU: from now on talk to it over `ssh`."""
        self._ssh = ssh

    def _step_memdirty(self, step: Step, record: StepRecord) -> None:
        p: MemdirtyParams = step.params
        out = probes.memdirty(self.ssh, p.size_mib, p.thp, timeout=_probe_timeout(p.size_mib))
        record.data.update(out)

    def _step_memtouch(self, step: Step, record: StepRecord) -> None:
        p: MemtouchParams = step.params
        out = probes.memtouch(self.ssh, p.size_mib, p.thp, p.fault, timeout=_probe_timeout(p.size_mib))
        # A page handed out non-zero is a finding whatever path faulted it in: recorded before the fault check.
        self.metric("nonzero_pages", out["nonzero_pages"], step.phase)
        self.metric("stale_pattern_pages", out["pattern_pages"], step.phase, unit="pages")
        record.data.update(out)
        self.console.print(f"  {step.phase}: memtouch {out['mib']} MiB{' THP' if out['thp'] else ''} "
                           f"({out['mode']}): {out['wall_ms']:.0f} ms wall, {out['sys_ms']:.0f} ms sys, "
                           f"{out['nonzero_pages']} non-zero pages")

    def _step_fault_scale(self, step: Step, record: StepRecord) -> None:
        p: FaultScaleParams = step.params
        out = probes.faultscale(self.ssh, p.mapping, p.workers, p.seconds, p.region_mib, p.tasks == "threads",
                                timeout=_fault_scale_timeout(p.seconds))
        record.data.update(out)
        self.console.print(f"  {step.phase}: faultscale {out['mode']} x{out['workers']} {out['tasks']}: "
                           f"{out['ops']} pages in {out['elapsed_ms'] / 1e3:.2f} s, {out['ops_per_s']:.0f} ops/s")

    def _judge_probe(self, step: Step, record: StepRecord) -> None:
        """Timings of a probe count only when it faulted in what it claims (see probe_check)."""
        check = PROBE_CHECKS[step.kind](record.data, record.data["vmstat_delta"])
        record.data["fault_check"] = check.invalid or check.note
        if record.data.get("faults") is not None:
            self.metric("probe_faults", record.data["faults"], step.phase)
        if check.invalid:
            record.invalid = check.invalid
            self.console.print(f"  [bold red]{step.phase}: {step.kind} is INVALID:[/] {escape(check.invalid)}")
            return
        if check.thp_fallbacks:
            self.console.print(f"  {step.phase}: {check.note}")
        for name, value in PROBE_METRICS[step.kind](record.data).items():
            self.metric(name, value, step.phase)

    def _step_sleep(self, step: Step, record: StepRecord) -> None:
        p: SleepParams = step.params
        end = time.monotonic() + p.seconds
        poll_until(lambda: time.monotonic() >= end, timeout=p.seconds, interval=ALIVE_CHECK_S,
                   alive=self.vm.check_alive)

    def _step_snapshot(self, step: Step, record: StepRecord) -> None:
        self._snapshot(step.phase)

    def _step_contig_bench(self, step: Step, record: StepRecord) -> None:
        p: ContigBenchParams = step.params
        out = probes.contig_bench(self.ssh, p.iterations, p.order, timeout=1800)
        self.metric("contig_bench_us", out["elapsed_us"], step.phase)
        record.data.update(out)
        self.console.print(f"  {step.phase}: contig_bench {out['iterations']} x order-{out['order']}: "
                           f"{out['elapsed_us']} us")

    def _step_kernel_zero_scan(self, step: Step, record: StepRecord) -> None:
        p: KernelZeroScanParams = step.params
        out = probes.zero_scan(self.ssh, p.reserve_mib, timeout=1800)
        record.data.update(out)
        self.metric("nonzero_pages", out["nonzero_pages"], step.phase)
        self.metric("stale_pattern_pages", out["pattern_pages"], step.phase)
        self.metric("kernel_scanned_pages", out["pages"], step.phase)
        self.console.print(f"  {step.phase}: kernel __GFP_ZERO scan: {out['pages']} pages, "
                           f"{out['nonzero_pages']} not zero ({out['pattern_pages']} with memdirty's pattern)")

    def _step_shell(self, step: Step, record: StepRecord) -> None:
        p: ShellParams = step.params
        res = self.ssh.run(p.command, timeout=p.timeout_s, check=False)
        out = self.dir / f"shell-{step.phase}.txt"  # the whole output; steps.json keeps its tail
        out.write_text(res.stdout + (f"# stderr:\n{res.stderr}" if res.stderr else ""))
        record.data.update(stdout=res.stdout[-4000:], rc=res.rc, output_file=out.name)
        if res.rc != 0:
            raise HarnessError(f"{step.phase}: shell command failed with exit code {res.rc}: {p.command}: "
                               f"{(res.stderr.strip() or res.stdout.strip())[-300:]}")

    def _step_upload(self, step: Step, record: StepRecord) -> None:
        p: UploadParams = step.params
        src = Path(p.src)
        t0 = time.monotonic()
        digest = self.ssh.upload(src, p.dest, int(p.mode, 8))
        seconds = time.monotonic() - t0
        record.data.update(src=str(src), dest=p.dest, bytes=src.stat().st_size, sha256=digest, seconds=seconds)
        self.console.print(f"  {step.phase}: uploaded {src.name} to {p.dest} ({src.stat().st_size} bytes, "
                           f"sha256 checked) in {seconds:.1f} s")

    def _save_kernel_log(self) -> None:
        dmesg = self.ssh.run("dmesg").stdout
        (self.dir / "dmesg.txt").write_text(dmesg)
        self.result.kernel_log = dmesg
        self.result.kernel_problems = kernel_problems(dmesg)

    def _snapshot(self, phase: str) -> None:
        guest = self.ssh
        for src in ("vmstat", "meminfo", "buddyinfo"):
            (self.dir / f"{src}-{phase}.txt").write_text(guest.run(f"cat /proc/{src}").stdout)
        if self.machine.stats_interval_s:
            try:
                stats = balloon.guest_stats(self.qmp)
                (self.dir / f"guest-stats-{phase}.json").write_text(json.dumps(stats, indent=1))
            except HarnessError:
                pass  # the guest has not sent statistics yet


# Timing metrics of the probes, recorded only for a step whose fault check passed.
PROBE_METRICS = {
    "memdirty": lambda out: {"dirty_ms": out["wall_ms"]},
    "memtouch": lambda out: {"fault_in_ms": out["wall_ms"], "cpu_ms": round(out["user_ms"] + out["sys_ms"], 3),
                             "sys_ms": out["sys_ms"]},
    "fault_scale": lambda out: {"fault_ops_per_s": out["ops_per_s"]},
}
PROBE_CHECKS = {"memdirty": check_faults, "memtouch": check_faults, "fault_scale": check_fault_scale}


STEP_FUNCTIONS: dict[str, Callable[..., None]] = {
    "migrate": migration_steps.run_migrate, "background_snapshot": migration_steps.run_background_snapshot,
    "wait_reporting": workload_steps.run_wait_reporting, "kselftest": workload_steps.run_kselftest,
    "stress": workload_steps.run_stress,
}


def kernel_problems(dmesg: str) -> list[str]:
    """Lines of a kernel log that say the kernel itself misbehaved (warnings, BUGs, bad pages)."""
    return [line.strip() for line in dmesg.splitlines() if KERNEL_PROBLEM.search(line)]


def _probe_timeout(size_mib: int) -> float:
    """Generous for TCG (about 15 s per GiB here), yet a hung probe fails the run in minutes."""
    return 120 + size_mib / 5


def _fault_scale_timeout(seconds: float) -> float:
    """A guest second under icount is 5-10 host seconds on an idle core, and passed 180 s (with the tmpfs file
    filled first) on this 2-core host while a dozen other guests and a kernel build shared it (2026-11-30)."""
    return 300 + 600 * seconds


def _describe(params: BaseModel) -> str:
    return " ".join(f"{k}={v}" for k, v in params.model_dump().items())
