"""Checking a scenario's expectations against what the run recorded.

Each check yields rows {name, kernel, ok, detail} for expectations.json; a run whose expectations do
not all hold is a failed run.
"""

from __future__ import annotations

import statistics
from dataclasses import replace

from harness.errors import InputError
from harness.kernels.spec import KernelSpec
from harness.kernels.stacks import expand
from harness.numbers import fmt_num
from harness.scenario.expectation_models import Expectations, MetricCheck, RatioCheck
from harness.scenario.schema import Scenario
from harness.scenario.sink import MetricValues
from harness.scenario.steps import RepResult

PAGES_PER_MIB = 256


def _row(name: str, kernel: str, ok: bool, detail: str) -> dict:
    return {"name": name, "kernel": kernel, "ok": bool(ok), "detail": detail}


def _steps(results: list[RepResult], kernel: str, kind: str):
    for r in results:
        if r.kernel == kernel:
            for s in r.steps:
                if s.kind == kind:
                    yield r.rep, s


def _touches(results: list[RepResult], kernel: str) -> list:
    """Every step that handed out pages and counted the non-zero ones: memtouch and stress (to userspace),
    kernel_zero_scan (to the kernel, __GFP_ZERO)."""
    return [s for kind in ("memtouch", "stress", "kernel_zero_scan") for s in _steps(results, kernel, kind)]


def _named_as_run(expect: Expectations, kernels: list[str]) -> Expectations:
    """The expectations with every kernel they name written as it ran: a check on a spec holds for the named
    stack that stands for it (`--kernel seed002` and a check on its `base+...` spec), and the other way round."""
    by_spec = {expand(k)[0]: k for k in kernels}

    def ran(name: str | None) -> str | None:
        return None if name is None else by_spec.get(expand(name)[0], name)

    def rename(checks: list, *keys: str) -> list:
        return [c.model_copy(update={key: ran(getattr(c, key)) for key in keys}) for c in checks]

    return expect.model_copy(update={
        "expected_leaks": rename(expect.expected_leaks, "kernel"), "kernel_log": rename(expect.kernel_log, "kernel"),
        "metrics": rename(expect.metrics, "kernel"), "ratios": rename(expect.ratios, "kernel", "baseline")})


def evaluate(scenario: Scenario, bundle: MetricValues, results: list[RepResult], kernels: list[str]) -> list[dict]:
    """Rows for the kernels that ran; checks that name a kernel which did not run (--kernel overrides
    the scenario's list) are left out."""
    scenario = replace(scenario, expect=_named_as_run(scenario.expect, kernels))
    e = scenario.expect
    rows: list[dict] = []
    for k in kernels:
        if e.balloon_reached:
            misses = [f"rep{rep} {s.phase}: {s.data['actual_mib']:.1f}/{s.data['target_mib']} MiB"
                      for rep, s in _steps(results, k, "balloon")
                      if abs(s.data["actual_mib"] - s.data["target_mib"]) >= 1 / PAGES_PER_MIB]
            n = len(list(_steps(results, k, "balloon")))
            rows.append(_row("balloon_reached", k, n > 0 and not misses,
                             "; ".join(misses) or f"{n} balloon steps reached their targets"))
        if e.balloon_inflate_matches:
            bad, n = [], 0
            for rep, s in _steps(results, k, "balloon"):
                if not s.data["inflate"]:
                    continue
                n += 1
                want = round((s.data["start_mib"] - s.data["actual_mib"]) * PAGES_PER_MIB)
                got = s.data["vmstat_delta"].get("balloon_inflate")
                if got != want:
                    bad.append(f"rep{rep} {s.phase}: vmstat balloon_inflate grew by {got}, ballooned {want} pages")
            rows.append(_row("balloon_inflate_matches", k, n > 0 and not bad,
                             "; ".join(bad) or f"{n} inflations: balloon_inflate delta equals the ballooned pages"))
        if e.rss_fell_after_reporting is not None:
            floor = e.rss_fell_after_reporting.min_mib
            drops = [(rep, s.phase, s.data["rss_drop_mib"]) for rep, s in _steps(results, k, "wait_reporting")]
            low = [f"rep{rep} {ph}: {d:.0f} MiB" for rep, ph, d in drops if d < floor]
            rows.append(_row("rss_fell_after_reporting", k, bool(drops) and not low,
                             (f"host RSS fell by less than {floor:g} MiB: " + "; ".join(low)) if low else
                             f"host RSS fell by {min(d for *_, d in drops):.0f} MiB or more" if drops else
                             "no wait_reporting step ran"))
        touches = _touches(results, k)
        expected_leaks = {x.kernel: x.why for x in e.expected_leaks}
        if touches or k in expected_leaks:
            rows.append(_leak_row(k, touches, expected_leaks))
        if e.nonzero_pages is not None:
            want = e.nonzero_pages
            bad = [f"rep{rep} {s.phase}: {s.data['nonzero_pages']} non-zero pages "
                   f"({s.data['pattern_pages']} with memdirty's pattern)"
                   for rep, s in touches if s.data["nonzero_pages"] != want]
            rows.append(_row("nonzero_pages", k, bool(touches) and not bad,
                             "; ".join(bad) or f"{len(touches)} checks (memtouch, stress, kernel_zero_scan), each with {want} non-zero pages"))
        if e.kernel_log_clean:
            reps = [r for r in results if r.kernel == k]
            bad = [f"rep{r.rep}: {line}" for r in reps for line in r.kernel_problems]
            rows.append(_row("kernel_log_clean", k, bool(reps) and not bad,
                             "; ".join(bad[:5]) + (f" (+{len(bad) - 5} more)" if len(bad) > 5 else "") if bad else
                             f"no kernel warning, BUG or bad page in dmesg of {len(reps)} boot(s)"))
        if e.kselftests_pass and scenario.mm_selftests:
            reps = [r for r in results if r.kernel == k]
            bad = [f"rep{r.rep} {f}" for r in reps for f in r.selftest_failures]
            rows.append(_row("kselftests_pass", k, bool(reps) and not bad,
                             "failed: " + "; ".join(bad[:10]) + (f" (+{len(bad) - 10} more)" if len(bad) > 10 else "")
                             if bad else f"no selftest case failed in {len(reps)} repetition(s)"))
    rows += _kernel_log_checks(scenario, results, kernels)
    rows += _metric_checks(scenario, bundle, kernels)
    rows += _ratio_checks(scenario, bundle, kernels)
    return rows


def _kernel_log_checks(scenario: Scenario, results: list[RepResult], kernels: list[str]) -> list[dict]:
    rows = []
    for c in scenario.expect.kernel_log:
        if c.kernel not in kernels:
            continue
        reps = [r for r in results if r.kernel == c.kernel]
        wrong = [f"rep{r.rep}" for r in reps if (c.contains in r.kernel_log) != c.present]
        verb = "prints" if c.present else "does not print"
        rows.append(_row("kernel_log", c.kernel, bool(reps) and not wrong,
                         f"{', '.join(wrong)}: dmesg {'lacks' if c.present else 'has'} {c.contains!r}" if wrong else
                         f"every boot ({len(reps)}) {verb} {c.contains!r}"))
    return rows


LEAK = "no_leak"
EXPECTED_LEAK = "expected_leak"


def _held(probe: dict) -> str:
    samples = probe.get("samples") or []
    return f": {samples[0]['head']}..." if samples else ""


def _leak_row(kernel: str, touches: list, expected: dict[str, str]) -> dict:
    """Every kernel: a page handed to userspace non-zero is a LEAK (a failed no_leak row), unless the scenario
    declares this kernel leaks here; then the row is expected_leak, and it fails when nothing leaked."""
    leaks = [f"rep{rep} {s.phase}: {s.data['nonzero_pages']} non-zero pages ({s.data['pattern_pages']} holding "
             f"memdirty's pattern, first at page {s.data['first_nonzero_page']}{_held(s.data)})"
             for rep, s in touches if s.data["nonzero_pages"]]
    if kernel in expected:
        return _row(EXPECTED_LEAK, kernel, bool(leaks),
                    f"leaks as declared ({expected[kernel]}): " + "; ".join(leaks) if leaks else
                    f"declared to leak ({expected[kernel]}), but {len(touches)} checks (memtouch, stress, kernel_zero_scan) found only zero pages")
    return _row(LEAK, kernel, not leaks, "LEAK: " + "; ".join(leaks) if leaks else
                f"{len(touches)} checks (memtouch, stress, kernel_zero_scan): every page handed out was zero")


def _median(bundle: MetricValues, name: str, phase: str | None, kernel: str) -> float | None:
    values = bundle.values(name, phase, kernel)
    return statistics.median(values) if values else None


def _metric_checks(scenario: Scenario, bundle: MetricValues, ran: list[str]) -> list[dict]:
    rows = []
    for c in scenario.expect.metrics:
        kernels = [c.kernel] if c.kernel is not None else ran
        kernels = [k for k in kernels if k in ran]
        label = c.name + (f"@{c.phase}" if c.phase is not None else "")
        for k in kernels:
            v = _median(bundle, c.name, c.phase, k)
            if v is None:
                rows.append(_row(label, k, False, "metric was not recorded"))
                continue
            ok = ((c.min is None or v >= c.min) and (c.max is None or v <= c.max)
                  and (c.equals is None or v == c.equals))
            bounds = _bounds(c, ("min", "max", "equals"))
            rows.append(_row(label, k, ok, f"median {fmt_num(v)} ({bounds})"))
    return rows


def _ratio_checks(scenario: Scenario, bundle: MetricValues, ran: list[str]) -> list[dict]:
    rows = []
    for c in scenario.expect.ratios:
        if c.kernel not in ran or c.baseline not in ran:
            continue
        label = c.name + (f"@{c.phase}" if c.phase is not None else "") + f" vs {c.baseline}"
        v = _median(bundle, c.name, c.phase, c.kernel)
        base = _median(bundle, c.name, c.phase, c.baseline)
        if v is None or not base:
            rows.append(_row(label, c.kernel, False, f"metric missing or zero on a kernel ({v}, {base})"))
            continue
        ratio = v / base
        ok = (c.max_ratio is None or ratio <= c.max_ratio) and (c.min_ratio is None or ratio >= c.min_ratio)
        bounds = _bounds(c, ("min_ratio", "max_ratio"))
        rows.append(_row(label, c.kernel, ok, f"ratio {ratio:.3f} = {fmt_num(v)} / {fmt_num(base)} ({bounds})"))
    return rows


def _bounds(check: MetricCheck | RatioCheck, names: tuple[str, ...]) -> str:
    return ", ".join(f"{b} {getattr(check, b)}" for b in names if getattr(check, b) is not None)


def check_kernel_names(scenario: Scenario, run_kernels: list[KernelSpec]) -> None:
    """InputError for a metric or ratio check naming a kernel that is neither in the scenario's kernels nor
    run (--kernel): a typo would silently drop the check.  Checks on scenario kernels that a --kernel
    override leaves out are skipped by evaluate(), as before."""
    known = [k.text for k in scenario.kernels] + [k.text for k in run_kernels if k not in scenario.kernels]
    specs = {expand(k)[0] for k in known}  # a named stack and its spec are one kernel
    for group in ("metrics", "ratios", "expected_leaks", "kernel_log"):
        for i, check in enumerate(getattr(scenario.expect, group)):
            for key in ("kernel", "baseline"):
                name = getattr(check, key, None)
                if name is not None and expand(name)[0] not in specs:
                    raise InputError(f"{scenario.path}: expect.{group}[{i}].{key}: {name!r} is not a kernel this "
                                     f"run knows (scenario kernels and --kernel: {', '.join(known)})")
