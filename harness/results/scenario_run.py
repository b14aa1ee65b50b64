"""A scenario run into a result bundle (`harness run`, and every command that runs scenarios: ablate, bisect,
bench, run-shard): validate the input before anything boots, run every repetition, write the bundle and the
JUnit file, and say what failed."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.errors import HarnessError, InputError
from harness.guest import zeroing_paths
from harness.kernels.resolve import check_available
from harness.kernels.selftests import check_selftest_source
from harness.kernels.spec import KernelSpec, series_ref
from harness.numbers import fmt_num
from harness.paths import REPO_ROOT
from harness.results.metrics import check_expectation_metrics
from harness.results.model import ScenarioRecord
from harness.results.required_accel import check_required_accel, required_accel_rows
from harness.results.writer import BundleWriter
from harness.scenario.expectations import EXPECTED_LEAK, LEAK, check_kernel_names
from harness.scenario.runner import execute
from harness.scenario.schema import Scenario, ScenarioOverrides, load_scenario
from harness.validation import validate


def check_jobs(jobs: int | None) -> None:
    if jobs is not None and jobs < 1:
        raise InputError(f"--jobs must be at least 1, got {jobs}")


DEFAULT_RESULTS = REPO_ROOT / "results"


def _check_zeroing_paths_kernels(scenario: Scenario, specs) -> None:
    """A zeroing_paths step reads /proc/zeroing_sources: a built kernel without that series is bad input."""
    if not any(step.kind == "zeroing_paths" for step in scenario.steps):
        return
    # A bzImage or a tree may carry the series: only a spec that names its series can be judged here.
    def has_series(spec) -> bool:
        return any(name == zeroing_paths.SERIES and count != 0 for name, count in map(series_ref, spec.series))

    without = [s.text for s in specs if s.kind == "build" and not has_series(s)]
    if without:
        raise InputError(f"{scenario.path}: zeroing_paths steps need the {zeroing_paths.SERIES} series "
                         f"(right after zeroing-stats), which {', '.join(without)} does not have")


@dataclass
class RunOutcome:
    bundle: Path
    ok: bool
    status: str
    error: str | None


def run_scenario(scenario_path: str | Path, kernels: list[KernelSpec] | None = None, reps: int | None = None,
                 results_dir: Path | None = None, junit: Path | None = None,
                 console: Console | None = None, timing: str | None = None,
                 require_accel: str | None = None, jobs: int | None = None,
                 repetitions_from: str | None = None) -> RunOutcome:
    """Run a scenario end to end; bad input raises InputError before anything starts.

    `timing` ("realtime" or "icount") overrides the scenario's qemu.timing.  `require_accel` ("kvm"): an
    InputError when that accelerator is not usable here instead of falling back, and the run fails unless
    every kernel ran under it with its clock (kvm-clock).  `jobs`: guests at once under icount (None: what
    the host allows; realtime runs always run one at a time).  `repetitions_from` ("boot" or "snapshot")
    overrides the scenario's."""
    console = console or Console(stderr=True)
    overrides = validate(ScenarioOverrides, {"--timing": timing, "--repetitions-from": repetitions_from,
                                             "--reps": reps}, "the command line")
    scenario = load_scenario(scenario_path, overrides)
    specs = kernels or scenario.kernels
    check_jobs(jobs)
    reps = scenario.repetitions
    slugs = [s.slug for s in specs]
    if len(set(slugs)) != len(slugs):
        twice = sorted({s.text for s in specs if slugs.count(s.slug) > 1})
        raise InputError(f"the same kernel is named twice: {', '.join(twice)}")
    for spec in specs:
        check_available(spec)
        if scenario.mm_selftests:
            check_selftest_source(spec)
    _check_zeroing_paths_kernels(scenario, specs)
    check_kernel_names(scenario, specs)
    check_expectation_metrics(scenario)
    check_required_accel(require_accel)
    results_dir = results_dir or DEFAULT_RESULTS
    try:
        bundle = BundleWriter(results_dir, scenario.name, slugs)
    except OSError as exc:
        raise HarnessError(f"results directory {results_dir}: cannot create a bundle there: "
                           f"{exc.strerror or exc}") from None
    bundle.manifest.scenario = ScenarioRecord(name=scenario.name, path=str(scenario.path), content=scenario.content)
    bundle.manifest.reps = reps
    bundle.manifest.repetitions_from = scenario.repetitions_from
    status, error = "failed", None
    try:
        results = execute(scenario, specs, reps, bundle, console, jobs=jobs)
        if require_accel:
            bundle.bundle.expectations += required_accel_rows(bundle.manifest, require_accel)
        _print_summary(scenario, bundle, console)
        failed = [r for r in bundle.bundle.expectations if not r.ok]
        leaks = [r for r in failed if r.name == LEAK]
        failed = [r for r in failed if r.name != LEAK]
        invalid = [f"{r.kernel} {step}" for r in results for step in r.invalid_steps]
        problems = [f"LEAK on {r.kernel}: {r.detail.removeprefix('LEAK: ')}" for r in leaks]
        if invalid:
            status = "invalid"
            problems.append("invalid steps (a probe did not exercise the kernel path it claims): " + "; ".join(invalid))
        if failed:
            problems.append("expectations failed: "
                            + "; ".join(f"{r.name} [{r.kernel}]: {r.detail}" for r in failed))
        if problems:
            error = "; ".join(problems)
        else:
            status = "complete"
    except KeyboardInterrupt:
        error = "interrupted"
        _finish(bundle, status, error, junit, console)
        raise
    except HarnessError as exc:
        error = "; ".join([*_leaks_before_the_failure(bundle, console), str(exc)])
    except OSError as exc:  # the results directory filled up or went away; QEMU is already stopped
        error = f"cannot write the bundle in {results_dir}: {exc.strerror or exc}"
    except Exception as exc:  # a harness bug must still leave a failed bundle behind
        error = f"internal error: {exc!r}"
        console.print_exception()
    path = _finish(bundle, status, error, junit, console)
    return RunOutcome(path, status == "complete", status, error)


def _leaks_before_the_failure(bundle: BundleWriter, console: Console) -> list[str]:
    """A run that failed half-way may already have read non-zero pages: that stays its first finding (a guest
    that hangs or oopses on the stale data it handed out is the usual way such a run ends)."""
    found = [m for m in bundle.bundle.metrics if m.name == "nonzero_pages" and m.value]
    for m in found:
        console.print(f"[bold white on red] LEAK [/] {escape(m.kernel)} handed out pages that were not zero: "
                      f"rep{m.rep} {m.phase}: {m.value:.0f} non-zero pages, before the run failed")
    return [f"LEAK on {m.kernel}: rep{m.rep} {m.phase}: {m.value:.0f} non-zero pages" for m in found]


def _finish(bundle: BundleWriter, status: str, error: str | None, junit: Path | None, console: Console) -> Path:
    try:
        path = bundle.finish(status, error)
    except OSError as exc:
        # Left under its hidden .tmp- name, the bundle never looks whole or complete.
        raise HarnessError(f"run {status}{': ' + error if error else ''}; and the bundle could not be written: "
                           f"{exc.strerror or exc} (what was written is in {bundle.path})") from None
    if junit is not None:
        from harness.results.junit import write_junit

        write_junit(junit, [path])
    if error:
        console.print(f"[bold red]run failed:[/] {escape(error)}")
    return path


def _print_summary(scenario: Scenario, bundle: BundleWriter, console: Console) -> None:
    for r in bundle.bundle.expectations:  # the most important finding there is comes first
        if r.name == LEAK and not r.ok:
            console.print(f"[bold white on red] LEAK [/] {escape(r.kernel or '')} handed userspace pages that were "
                          f"not zero: {escape(r.detail.removeprefix('LEAK: '))}")
        elif r.name == EXPECTED_LEAK:
            console.print(f"[bold]expected leak[/] on {escape(r.kernel or '')}: {escape(r.detail)}")
    kernels = [str(k.spec) for k in bundle.manifest.kernels]
    table = Table(title=f"{scenario.name}: medians over {bundle.manifest.reps} repetition(s)")
    table.add_column("metric")
    table.add_column("phase")
    for k in kernels:
        table.add_column(k, justify="right")
    seen = []
    for m in bundle.bundle.metrics:
        key = (m.name, m.phase or "")
        if key not in seen and not (m.name.startswith("vmstat.") and m.value == 0):
            seen.append(key)
    for name, phase in seen:
        cells = []
        for k in kernels:
            values = bundle.values(name, phase, k)
            cells.append(fmt_num(statistics.median(values)) if values else "-")
        table.add_row(name, phase, *cells)
    console.print(table)
    for record in bundle.manifest.kernels:
        if record.zeroing_summary():
            console.print(f"zeroing on {escape(str(record.spec))} counted by {escape(record.zeroing_summary() or '')}")
    checks = Table(title="expectations")
    for col in ("expectation", "kernel", "result", "detail"):
        checks.add_column(col)
    for r in bundle.bundle.expectations:
        checks.add_row(r.name, r.kernel or "all", "[green]ok[/]" if r.ok else "[red]FAILED[/]", r.detail)
    console.print(checks)
