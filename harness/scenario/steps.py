"""One repetition of a scenario on one kernel: boot, run the steps, record metrics and raw files."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import BaseModel
from rich.markup import escape

from harness.errors import HarnessError
from harness.guest import probes, zeroing, zeroing_paths
from harness.guest.launch import BootKit, connect, make_vm, wait_ready
from harness.guest.ssh import Guest
from harness.machine import balloon
from harness.machine.accel import TCG_TEXT_POKE_RACE, guest_vcpus_on_mttcg
from harness.machine.config import MachineConfig
from harness.machine.qmp import QMP
from harness.machine.rss import RssSampler
from harness.machine.vm import VM, GuestDied
from harness.scenario import migration_steps, probe_steps, workload_steps
from harness.scenario.saved_boot import FROM_BOOT, FROM_SNAPSHOT, BootFacts, SavedBoot
from harness.scenario.schema import (
    BOOT_PHASE,
    Scenario,
    Step,
    ZeroingPathsParams,
)
from harness.scenario.sink import MetricSink

BOOT_TIMEOUT_S = 180
# Under icount a boot executes every instruction on one host thread, about 3x the realtime boot; on a host
# whose cores are shared with other guests and kernel builds that passed 180 s (measured 2026-11-30).
ICOUNT_BOOT_TIMEOUT_S = 3 * BOOT_TIMEOUT_S
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
    boot_retried_after: str | None = None  # the failure of a first boot that TCG's patching race killed

    @property
    def invalid_steps(self) -> list[str]:
        return [f"rep{self.rep} {s.phase} ({s.kind}): {s.invalid}" for s in self.steps if s.invalid]


def retry_boot_after(failure: str, accel: str, machine: MachineConfig, booted: bool, aborted: bool) -> bool:
    """Whether a repetition that failed so is booted once more: only a boot that TCG's patching race killed."""
    return (guest_vcpus_on_mttcg(accel, machine) and not booted and not aborted
            and TCG_TEXT_POKE_RACE.search(failure) is not None)


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
        self._booted = False  # the guest answered over SSH (or was loaded from the saved boot)

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
        try:
            return self._run_once()
        except GuestDied as exc:
            if not retry_boot_after(str(exc), self.accel, self.machine, self._booted, self._aborted):
                raise
            failure = str(exc)
        aside = self.dir / "boot-attempt1-serial.log"
        if (self.dir / "serial.log").is_file():
            (self.dir / "serial.log").rename(aside)
        self.console.print(f"  [yellow]the guest died at boot ({escape(failure)}): TCG's race with the kernel's "
                           f"code patching; booting it once more (first boot's console: {aside.name})[/]")
        self.result = RepResult(self.kernel.spec.text, self.rep, boot_retried_after=failure)
        self._vm, self._ssh, self._rss, self.zeroing = None, None, None, None
        return self._run_once()

    def _run_once(self) -> RepResult:
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
                    self.snapshot("final")
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
            self._booted = True
        finally:
            self.progress.remove_task(task)
        self.metric("boot_to_ssh_s", round(seconds, 3), BOOT_PHASE)
        guest = self.ssh
        self.result.guest_release = guest.run("uname -r").stdout.strip()
        self.result.clocksource = probes.clocksource(guest)
        self._guest_ready(zeroing.setup(guest, self.scenario.guest.zeroing))
        assert self.zeroing is not None
        self.console.print(f"  booted {self.kernel.spec.text} ({self.result.guest_release}) in {seconds:.1f} s; "
                           f"zeroing counted by {escape(self.zeroing.describe())}")

    def _guest_ready(self, plan: zeroing.Plan) -> None:
        """What every repetition does once its guest answers, booted or loaded from the saved boot."""
        if self.machine.stats_interval_s:
            balloon.enable_stats(self.qmp, self.machine.stats_interval_s)
        self.zeroing = plan
        self.result.zeroing = plan.summary()
        self.result.zeroing_record = plan.record()
        self.snapshot("boot")

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
        self._booted = True  # not a boot: nothing here for a second boot to redo
        self._ssh = connect(self.vm, self.kit.keys, self.dir / "transcript.log")
        self.metric("restore_s", round(self.vm.restore_s or 0.0, 3), BOOT_PHASE)
        self.result.guest_release, self.result.clocksource = facts.guest_release, facts.clocksource
        self._guest_ready(facts.zeroing)
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
        handler = STEP_FUNCTIONS[step.kind]
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
        probe_steps.judge_probe(self, step, record)
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

    def follow_migration(self, ssh: Guest) -> None:
        """The guest moved to another QEMU: from now on talk to it over `ssh`."""
        self._ssh = ssh

    def _save_kernel_log(self) -> None:
        dmesg = self.ssh.run("dmesg").stdout
        (self.dir / "dmesg.txt").write_text(dmesg)
        self.result.kernel_log = dmesg
        self.result.kernel_problems = kernel_problems(dmesg)

    def snapshot(self, phase: str) -> None:
        guest = self.ssh
        for src in ("vmstat", "meminfo", "buddyinfo"):
            (self.dir / f"{src}-{phase}.txt").write_text(guest.run(f"cat /proc/{src}").stdout)
        if self.machine.stats_interval_s:
            try:
                stats = balloon.guest_stats(self.qmp)
                (self.dir / f"guest-stats-{phase}.json").write_text(json.dumps(stats, indent=1))
            except HarnessError:
                pass  # the guest has not sent statistics yet


# Every step kind but boot (which run() does first) and zeroing_paths (which wraps another step), by its function.
STEP_FUNCTIONS: dict[str, Callable[..., None]] = {
    "balloon": probe_steps.run_balloon, "memdirty": probe_steps.run_memdirty,
    "memtouch": probe_steps.run_memtouch, "fault_scale": probe_steps.run_fault_scale,
    "sleep": probe_steps.run_sleep, "snapshot": probe_steps.run_snapshot,
    "contig_bench": probe_steps.run_contig_bench, "kernel_zero_scan": probe_steps.run_kernel_zero_scan,
    "shell": probe_steps.run_shell, "upload": probe_steps.run_upload,
    "migrate": migration_steps.run_migrate, "background_snapshot": migration_steps.run_background_snapshot,
    "wait_reporting": workload_steps.run_wait_reporting, "kselftest": workload_steps.run_kselftest,
    "stress": workload_steps.run_stress,
}


def kernel_problems(dmesg: str) -> list[str]:
    """Lines of a kernel log that say the kernel itself misbehaved (warnings, BUGs, bad pages)."""
    return [line.strip() for line in dmesg.splitlines() if KERNEL_PROBLEM.search(line)]


def _describe(params: BaseModel) -> str:
    return " ".join(f"{k}={v}" for k, v in params.model_dump().items())
