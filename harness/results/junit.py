"""JUnit XML of result bundles, for CI test reporters.

One ``<testsuite>`` per bundle (named after its directory) holding:

* a testcase ``run`` (classname ``<scenario>``) that fails with ``manifest.error`` unless the bundle's
  status is ``complete`` (or with the reason, when the bundle cannot be read at all);
* one testcase per row of ``expectations.json`` (classname ``<scenario>.<kernel>``, name the
  expectation's name), failing with its ``detail`` when ``ok`` is false;
* one testcase per selftest case and repetition (classname ``<scenario>.<kernel>.<suite>.<test>``, name
  ``<case> (repN)``), failing with its reason and log, or skipped with the reason.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from harness.errors import InputError
from harness.results.bundle import load_bundle
from harness.results.selftests import FAIL, SKIP, kernel_cases


def _case(suite: ET.Element, classname: str, name: str, failure: str | None, skipped: str | None = None) -> None:
    case = ET.SubElement(suite, "testcase", classname=classname, name=name)
    if skipped is not None:
        ET.SubElement(case, "skipped", message=skipped[:200])
    if failure is not None:
        first = failure.splitlines()[0] if failure.strip() else "failed"
        ET.SubElement(case, "failure", message=first[:200]).text = failure


def _suite(root: ET.Element, name: str, timestamp: str | None = None) -> ET.Element:
    suite = ET.SubElement(root, "testsuite", name=name)
    if timestamp:
        suite.set("timestamp", timestamp)
    return suite


def _bundle_suite(root: ET.Element, path: Path) -> None:
    try:
        b = load_bundle(path)
    except (InputError, OSError) as exc:
        _case(_suite(root, Path(path).name), Path(path).name, "run", f"unreadable bundle: {exc}")
        return
    suite = _suite(root, b.path.name, b.started or None)
    failed = None if b.status == "complete" else (b.error or f"status {b.status}, no error recorded")
    _case(suite, b.scenario, "run", failed)
    for row in b.expectations:
        kernel = b.kernel_label(row.kernel) if row.kernel is not None else "all"
        _case(suite, f"{b.scenario}.{kernel}", row.name, None if row.ok else (row.detail or "expectation not met"))
    for kernel in b.kernels:
        for rep, c in kernel_cases(b, kernel):
            failure = f"{c.reason}\n{c.log}".strip() if c.result == FAIL else None
            _case(suite, f"{b.scenario}.{kernel}.{c.suite}.{c.test}", f"{c.case} (rep{rep})", failure,
                  skipped=c.reason or "skipped" if c.result == SKIP else None)


def _count(suite: ET.Element) -> tuple[int, int, int]:
    cases = suite.findall("testcase")
    return len(cases), sum(c.find("failure") is not None for c in cases), sum(c.find("skipped") is not None
                                                                                for c in cases)


def write_junit(path: Path, bundles: list[Path], extra_failures: Sequence[tuple[str, str | None]] = ()) -> None:
    """Write JUnit XML for `bundles`; `extra_failures` are (name, reason) of runs that left no bundle."""
    root = ET.Element("testsuites", name="balloon-testbed")
    for b in bundles:
        _bundle_suite(root, Path(b))
    for name, reason in extra_failures:
        _case(_suite(root, name), name.replace(".", "_"), "run", reason or "run produced no bundle")
    total = failures = 0
    for suite in root.findall("testsuite"):
        n, f, skipped = _count(suite)
        suite.set("tests", str(n))
        suite.set("failures", str(f))
        suite.set("skipped", str(skipped))
        suite.set("errors", "0")
        total, failures = total + n, failures + f
    root.set("tests", str(total))
    root.set("failures", str(failures))
    root.set("errors", "0")
    ET.indent(root)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
