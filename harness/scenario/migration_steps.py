"""The `migrate` and `background_snapshot` steps: the windows in which QEMU acknowledges free page reports
without discarding the pages (virtio_balloon_inhibited()), measured as metrics of the step's phase."""

from __future__ import annotations

from harness.guest import probes
from harness.guest.launch import reconnect
from harness.guest.ssh import Guest
from harness.machine import balloon
from harness.machine.migration import MigrationStats
from harness.scenario.migration_params import BackgroundSnapshotParams, MigrateParams
from harness.scenario.schema import Step
from harness.scenario.step_runner import StepRecord, StepRunner

# The metrics of a window are named PREFIX_FIGURE (migration_wall_s, snapshot_reported_pages).
MIGRATION, SNAPSHOT = "migration", "snapshot"
FIGURES = ("total_ms", "downtime_ms", "wall_s", "transferred_mib", "postcopy_requests", "reported_pages")





def reported_pages(guest: Guest) -> int | None:
    """page_reporting_pages of the guest's vmstat (None on kernels without the counter)."""
    return probes.vmstat(guest).get("page_reporting_pages")


def _record(runner: StepRunner, phase: str, record: StepRecord, stats: MigrationStats,
            before: int | None, after: int | None) -> None:
    reported = None if before is None or after is None else after - before
    record.data.update(migration=stats.to_json(), page_reporting_pages=reported)
    prefix = SNAPSHOT if stats.mode == "background-snapshot" else MIGRATION
    figures = {"total_ms": stats.total_ms, "downtime_ms": stats.downtime_ms, "wall_s": stats.wall_s,
               "transferred_mib": stats.transferred_mib, "postcopy_requests": stats.postcopy_requests,
               "reported_pages": reported}
    assert tuple(figures) == FIGURES
    for name, value in figures.items():
        if value is not None:
            runner.metric(f"{prefix}_{name}", value, phase)
    what = stats.mode if stats.postcopy_after_s is not None or stats.mode != "postcopy" else \
        "postcopy (the precopy pass completed before postcopy was switched on)"
    runner.console.print(
        f"  {phase}: {what} in {stats.wall_s:.2f} s (QEMU: total {stats.total_ms} ms, downtime "
        f"{stats.downtime_ms} ms, {stats.transferred_mib:.0f} MiB sent"
        + (f", {stats.postcopy_requests} postcopy page requests" if stats.postcopy_requests else "")
        + f"); {'?' if reported is None else reported} pages reported meanwhile")


def _window_balloon(p: MigrateParams | BackgroundSnapshotParams) -> balloon.WindowTarget | None:
    return balloon.WindowTarget(p.balloon.target_mib, p.balloon.at_s) if p.balloon else None


def _record_window_balloon(runner: StepRunner, phase: str, record: StepRecord, target: balloon.WindowTarget | None,
                           what: str) -> None:
    """The balloon as the window closed: how far the guest got towards the target set inside it."""
    if target is None:
        return
    target.check_sent(what)
    actual = round(balloon.actual_mib(runner.qmp), 2)
    record.data["window_balloon"] = {"target_mib": target.target_mib, "sent_s": target.sent_s, "actual_mib": actual}
    runner.metric("window_balloon_sent_s", target.sent_s or 0.0, phase)
    runner.metric("window_balloon_actual_mib", actual, phase)
    runner.console.print(f"  {phase}: balloon target {target.target_mib} MiB set {target.sent_s:.1f} s into the "
                         f"{what}; {actual:.0f} MiB when it ended")


def run_migrate(runner: StepRunner, step: Step, record: StepRecord) -> None:
    p: MigrateParams = step.params
    before = reported_pages(runner.ssh)
    target = _window_balloon(p)
    stats = runner.vm.migrate(p.mode, p.precopy_pass_s, p.timeout_s, p.bandwidth_mib_s, window_balloon=target)
    runner.follow_migration(reconnect(runner.vm, runner.kit.keys, runner.ssh))
    if runner.machine.stats_interval_s:
        balloon.enable_stats(runner.qmp, runner.machine.stats_interval_s)
    record.data.update(ssh_port=runner.vm.ssh_port, bandwidth_mib_s=p.bandwidth_mib_s)
    _record(runner, step.phase, record, stats, before, reported_pages(runner.ssh))
    _record_window_balloon(runner, step.phase, record, target, f"{p.mode} migration")


def run_background_snapshot(runner: StepRunner, step: Step, record: StepRecord) -> None:
    p: BackgroundSnapshotParams = step.params
    before = reported_pages(runner.ssh)
    target = _window_balloon(p)
    stats = runner.vm.background_snapshot(p.timeout_s, p.bandwidth_mib_s, window_balloon=target)
    record.data["bandwidth_mib_s"] = p.bandwidth_mib_s
    _record(runner, step.phase, record, stats, before, reported_pages(runner.ssh))
    _record_window_balloon(runner, step.phase, record, target, "background snapshot")
