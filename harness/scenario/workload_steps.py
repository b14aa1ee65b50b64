"""The step kinds that drive a workload over time rather than one probe: wait_reporting (until free page
reporting is done), kselftest (the kernel's own mm selftests) and stress (probes in loops while the balloon
moves).  Each is a function of the repetition's runner (harness.scenario.steps.RepRunner)."""

from __future__ import annotations

import json
import shlex
import time

from harness.constants import SELFTEST_FILE
from harness.errors import HarnessError
from harness.guest import kselftest, probes
from harness.guest.launch import SELFTESTS_GUEST_DIR
from harness.machine import balloon
from harness.process import poll_until
from harness.scenario.schema import Step
from harness.scenario.step_params import KselftestParams, StressParams, WaitReportingParams
from harness.scenario.step_runner import StepRecord, StepRunner

REPORTING_POLL_S = 0.25  # guest seconds between two looks at free page reporting
REPORTING_HOST_QUIET_S = 1.0  # host seconds without change, as well as settle_s of guest time


def run_wait_reporting(runner: StepRunner, step: Step, record: StepRecord) -> None:
    """Wait until free page reporting is done: for settle_s of *guest* time, host RSS has not moved
    and (where the kernel counts it) the guest's page_reporting_pages has not grown.

    Guest time, because reporting's own delays (2 s after a free, between batches) run on the guest
    clock, which under icount (sleep=off) runs far ahead of host time when the guest idles; and at
    least a short quiet spell of host time too, since the host discards each batch in host time."""
    p: WaitReportingParams = step.params
    settle, timeout = p.settle_s, p.timeout_s
    host_quiet = min(settle, REPORTING_HOST_QUIET_S)
    t0 = time.monotonic()
    first: float | None = None
    last_change = last_change_host = 0.0
    last: tuple = ()

    def quiet() -> bool:
        nonlocal first, last, last_change, last_change_host
        # The guest paces this: the probe sleeps REPORTING_POLL_S of guest time.
        now, reported = probes.guest_clock_and_reported(runner.ssh, REPORTING_POLL_S)
        kib = runner.rss.current_kib() or 0  # None only once QEMU is gone, which check_alive reports
        if first is None or abs(kib - last[0]) > 4096 or reported != last[1]:
            last, last_change, last_change_host = (kib, reported), now, time.monotonic()
            first = now if first is None else first
        return (now - last_change >= settle and now - first >= settle + 2
                and time.monotonic() - last_change_host >= host_quiet)

    # Past the timeout, not settled: the rss_drop_mib expectation judges.
    settled = bool(poll_until(quiet, timeout=timeout, interval=0, alive=runner.vm.check_alive, started=t0))
    # From the peak of the step before: reporting may have begun before this step did (under icount
    # guest time races ahead while the host works, so it often has finished by then).
    drop = (max(runner.previous_step_peak_kib, runner.rss.peak_kib()) - (runner.rss.current_kib() or 0)) / 1024
    settle_s = (last_change - first) if first is not None else 0.0
    runner.metric("rss_drop_mib", round(drop, 1), step.phase)
    runner.metric("reporting_settle_s", round(settle_s, 2), step.phase)
    record.data.update(rss_drop_mib=drop, settled=settled, settle_guest_s=settle_s,
                       host_s=time.monotonic() - t0)
    runner.console.print(f"  {step.phase}: host RSS fell by {drop:.0f} MiB (settled after {settle_s:.1f} s of "
                       f"guest time, {time.monotonic() - t0:.1f} s of host time)"
                       + ("" if settled else f"; NOT settled within {timeout} s"))


def run_kselftest(runner: StepRunner, step: Step, record: StepRecord) -> None:
    p: KselftestParams = step.params
    logs = runner.dir / "kselftest"
    logs.mkdir(exist_ok=True)
    cases: list[kselftest.Case] = []
    tests: list[dict] = []
    for t in p.tests:
        if t.skip is not None or t.name in runner.kit.selftests_not_built:
            reason = t.skip or runner.kit.selftests_not_built[t.name]
            cases.append(kselftest.Case(t.name, t.name, kselftest.SKIP, reason))
            tests.append({"test": t.name, "rc": None, "seconds": 0, "skipped": reason})
            continue
        runner.vm.check_alive()
        run = kselftest.run_selftest(runner.ssh, SELFTESTS_GUEST_DIR, t.name, t.args, t.timeout_s or p.timeout_s)
        (logs / f"{t.name}.log").write_text(run.output)
        cases += run.cases
        tests.append({"test": t.name, "rc": run.rc, "seconds": run.seconds, "log": f"kselftest/{t.name}.log"})
        counts = {r: sum(c.result == r for c in run.cases) for r in (kselftest.PASS, kselftest.FAIL, kselftest.SKIP)}
        runner.console.print(f"  {step.phase}: {p.suite}/{t.name}: {counts['pass']} pass, {counts['fail']} fail, "
                           f"{counts['skip']} skip in {run.seconds:.1f} s")
    rows = [{"suite": p.suite, "phase": step.phase, **c.to_json()} for c in cases]
    path = runner.dir / SELFTEST_FILE
    previous = json.loads(path.read_text()) if path.exists() else []
    path.write_text(json.dumps(previous + rows, indent=1) + "\n")
    for result in (kselftest.PASS, kselftest.FAIL, kselftest.SKIP):
        runner.metric(f"kselftest_{result}", sum(c.result == result for c in cases), step.phase)
    runner.result.selftest_failures += [f"{c.test}: {c.case}" for c in cases if c.result == kselftest.FAIL]
    record.data.update(suite=p.suite, tests=tests)


def run_stress(runner: StepRunner, step: Step, record: StepRecord) -> None:
    """memdirty and memtouch loop in the guest while the host inflates and deflates the balloon, for a
    fixed time: reporting against allocation, deflate against reporting.  Every memtouch run counts
    the non-zero pages it was handed; the no_leak and nonzero_pages expectations read their sum."""
    p: StressParams = step.params
    thp = " --thp" if p.thp else ""
    loops = {"dirty": f"memdirty {p.memdirty_mib}{thp}", "touch": f"memtouch {p.memtouch_mib}{thp}"}
    runner.ssh.run("rm -rf /tmp/stress && mkdir /tmp/stress")
    for name, command in loops.items():
        # Guest uptime bounds the loop; each probe's JSON line (or its failure) is appended to a file.
        script = (f"end=$(( $(cut -d. -f1 /proc/uptime) + {int(p.seconds)} )); "
                  f"while [ $(cut -d. -f1 /proc/uptime) -lt $end ]; do "
                  f"{command} >> /tmp/stress/{name}.jsonl 2>> /tmp/stress/{name}.err "
                  f"|| echo \"exit $?\" >> /tmp/stress/{name}.failed; done; touch /tmp/stress/{name}.done")
        runner.ssh.run(f"sh -c {shlex.quote(script)} < /dev/null > /dev/null 2>&1 &")
    full = runner.machine.memory_mib
    cycles = timeouts = 0
    end = time.monotonic() + p.seconds
    while time.monotonic() < end:
        for target in (p.balloon_low_mib, full):
            try:
                balloon.set_target(runner.qmp, target, p.balloon_period_s, alive=runner.vm.check_alive)
            except balloon.BalloonTimeout:
                timeouts += 1  # the guest was busy: the next target is set anyway
        cycles += 1
    balloon.set_target(runner.qmp, full, 120, alive=runner.vm.check_alive)
    poll_until(lambda: runner.ssh.run("test -f /tmp/stress/dirty.done -a -f /tmp/stress/touch.done",
                                    check=False).rc == 0,
               timeout=300, interval=1.0, alive=runner.vm.check_alive)
    runs = {}
    for name in loops:
        text = runner.ssh.run(f"cat /tmp/stress/{name}.jsonl /tmp/stress/{name}.failed 2>/dev/null; true").stdout
        (runner.dir / f"stress-{step.phase}-{name}.txt").write_text(text)
        runs[name] = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        runs[f"{name}_failed"] = [line for line in text.splitlines() if line.startswith("exit")]
    touches = runs["touch"]
    nonzero = sum(t["nonzero_pages"] for t in touches)
    first = next((t for t in touches if t["nonzero_pages"]), None)
    record.data.update(
        nonzero_pages=nonzero, pattern_pages=sum(t["pattern_pages"] for t in touches),
        first_nonzero_page=first["first_nonzero_page"] if first else -1, samples=first["samples"] if first else [],
        touch_runs=len(touches), dirty_runs=len(runs["dirty"]), touch_failures=runs["touch_failed"],
        dirty_failures=runs["dirty_failed"], balloon_cycles=cycles, balloon_timeouts=timeouts)
    runner.metric("nonzero_pages", nonzero, step.phase)
    runner.metric("stress_touch_runs", len(touches), step.phase)
    runner.metric("stress_dirty_runs", len(runs["dirty"]), step.phase)
    runner.metric("balloon_cycles", cycles, step.phase)
    runner.console.print(f"  {step.phase}: stress {p.seconds:g} s: {len(runs['dirty'])} memdirty and {len(touches)} "
                       f"memtouch runs ({len(runs['dirty_failed']) + len(runs['touch_failed'])} failed), "
                       f"{cycles} balloon cycles ({timeouts} targets not reached in "
                       f"{p.balloon_period_s:g} s), {nonzero} non-zero pages")
    if not touches or not runs["dirty"]:
        raise HarnessError(f"{step.phase}: stress ran no complete memtouch or memdirty "
                           f"(failures: {runs['touch_failed'] + runs['dirty_failed']})")
