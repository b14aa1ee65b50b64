"""Kernel selftests in the guest: run one test binary, parse its TAP (kselftest) output into test cases.

A kselftest prints ``ok N description``, ``not ok N description``, with ``# SKIP reason`` (or ``# XFAIL``,
``# TODO``) directives, and ``# ...`` diagnostic lines.  A test that prints no result line is one case,
judged by its exit status (0 pass, 4 = KSFT_SKIP skip, anything else fail); a test that dies before its
plan is complete (or exits non-zero after passing everything) gets a failing case saying so.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import asdict, dataclass

from harness.guest.ssh import Guest

PASS, FAIL, SKIP = "pass", "fail", "skip"
KSFT_SKIP = 4
EXIT_CASE = "(exit status)"
CASE_LOG_CHARS = 4000
TIMEOUT_RC = 137  # busybox timeout -s KILL: 128 + SIGKILL

RESULT = re.compile(r"^\s*(?P<not>not )?ok\b\s*(?P<num>\d+)?\s*(?:-\s*)?(?P<desc>[^#]*?)\s*(?:#\s*(?P<dir>.*))?$")
PLAN = re.compile(r"^\s*1\.\.(?P<n>\d+)\s*(?:#\s*(?P<dir>.*))?$")


@dataclass
class Case:
    test: str
    case: str
    result: str  # pass, fail or skip
    reason: str = ""  # a skip's reason, or what failed
    log: str = ""  # the output leading up to this result

    def to_json(self) -> dict:
        return asdict(self)


def _directive(text: str | None) -> tuple[str, str]:
    """('SKIP'|'XFAIL'|'TODO'|'', reason) from what follows '#' on a result line."""
    if not text:
        return "", ""
    word, _, rest = text.strip().partition(" ")
    kind = word.upper().rstrip(":")
    if kind in ("SKIP", "XFAIL", "TODO"):
        return kind, rest.strip()
    return "", text.strip()


def parse_tap(test: str, output: str, rc: int | None) -> list[Case]:
    """The cases of one test binary's run: its TAP output and exit status (None: it timed out)."""
    cases: list[Case] = []
    pending: list[str] = []
    seen: dict[str, int] = {}
    plan: int | None = None
    plan_skip = ""
    for line in output.splitlines():
        if plan is None and (m := PLAN.match(line)):
            plan = int(m["n"])
            kind, reason = _directive(m["dir"])
            plan_skip = reason if kind == "SKIP" else ""
            continue
        m = RESULT.match(line)
        if not m:
            pending.append(line)
            continue
        kind, reason = _directive(m["dir"])
        name = m["desc"] or (f"case {m['num']}" if m["num"] else f"case {len(cases) + 1}")
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:  # a description printed twice: keep both, told apart
            name = f"{name} [{seen[name]}]"
        if kind in ("SKIP", "TODO"):
            result = SKIP
        elif kind == "XFAIL" or not m["not"]:
            result = PASS
        else:
            result = FAIL
        log = "\n".join(pending)[-CASE_LOG_CHARS:]
        if result == FAIL and not reason:
            reason = _last_diagnostic(pending)
        cases.append(Case(test, name, result, reason if result != PASS else "", log))
        pending = []
    tail = "\n".join(pending)[-CASE_LOG_CHARS:]
    if rc is None:
        cases.append(Case(test, EXIT_CASE, FAIL, "timed out (killed)", tail))
    elif not cases:
        if rc == KSFT_SKIP or (plan_skip and rc == 0):
            cases.append(Case(test, test, SKIP, plan_skip or _last_diagnostic(pending) or "skipped (exit 4)", tail))
        elif rc == 0:
            cases.append(Case(test, test, PASS, "", tail))
        else:
            cases.append(Case(test, test, FAIL, f"exit status {rc}: {_last_diagnostic(pending)}".rstrip(": "),
                              tail))
    elif plan is not None and len(cases) < plan and rc == KSFT_SKIP and not any(c.result == FAIL for c in cases):
        # ksft_exit_skip() part-way: the test found it cannot run here (no KSM, say) and said why
        cases.append(Case(test, EXIT_CASE, SKIP, _last_skip_reason(cases) or f"skipped after {len(cases)} of {plan}",
                          tail))
    elif plan is not None and len(cases) < plan:
        bail = next((line.strip() for line in pending if line.strip().startswith("Bail out!")), "")
        cases.append(Case(test, EXIT_CASE, FAIL, f"exit status {rc} after {len(cases)} of {plan} planned cases"
                          + (f": {bail}" if bail else ""), tail))
    elif rc not in (0, KSFT_SKIP) and not any(c.result == FAIL for c in cases):
        cases.append(Case(test, EXIT_CASE, FAIL, f"exit status {rc} although no case failed", tail))
    return cases


def _last_skip_reason(cases: list[Case]) -> str:
    return next((c.reason for c in reversed(cases) if c.result == SKIP and c.reason), "")


def _last_diagnostic(lines: list[str]) -> str:
    for line in reversed(lines):
        text = line.strip().lstrip("#").strip()
        if text and not text.startswith(("Totals:", "Planned tests")):
            return text[:200]
    return ""


@dataclass
class TestRun:
    test: str
    rc: int | None  # None: killed at the timeout
    seconds: float
    output: str
    cases: list[Case]


def run_selftest(guest: Guest, directory: str, test: str, args: str, timeout_s: float) -> TestRun:
    """Run one selftest binary in the guest (in its directory, killed after `timeout_s`) and parse it."""
    command = (f"cd {shlex.quote(directory)} && timeout -s KILL {int(timeout_s)} ./{shlex.quote(test)} {args} 2>&1; "
               f"echo \"ksft-exit-status=$?\"")
    res = guest.run(command, timeout=timeout_s + 30, check=False)
    output, _, status = res.stdout.rpartition("ksft-exit-status=")
    rc: int | None = int(status.strip()) if status.strip().isdigit() else -1
    if rc == TIMEOUT_RC and res.seconds >= timeout_s - 1:
        rc = None
    return TestRun(test, rc, round(res.seconds, 3), output, parse_tap(test, output, rc))
