"""`harness nightly MATRIX_YAML`: run a matrix of scenarios and kernels, then build the report.

The matrix file is a YAML list of entries::

    - scenario: smoke.yaml        # path; relative paths are tried against the matrix file's
      kernels: [stock]            #   directory first, then the current directory
      reps: 3                     # optional, default: the scenario's own
                                  # kernels optional, default: the scenario's own

Every entry runs even when others fail.  An entry whose scenario file is missing, or whose run
raises, is reported as a failed run without a bundle.  Exit status 1 when any run failed, 2 when the
matrix file is invalid.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import Field, ValidationError

from harness.errors import HarnessError, InputError
from harness.machine.config import TIMING_MODES
from harness.paths import REPO_ROOT
from harness.results.report import Entry, build_report
from harness.validation import Strict, first_problem
from harness.yamlfile import describe_error, parse_yaml


@dataclass
class MatrixEntry:
    index: int
    scenario: str  # as written
    path: Path  # resolved (may not exist)
    kernels: list[str] | None
    reps: int | None

    @property
    def label(self) -> str:
        kernels = ",".join(self.kernels) if self.kernels else "scenario default"
        return f"entry {self.index} ({self.scenario}, kernels {kernels})"


def _resolve(scenario: str, matrix: Path) -> Path:
    p = Path(scenario).expanduser()
    if p.is_absolute():
        return p
    for base in (matrix.parent, Path.cwd()):
        if (base / p).is_file():
            return base / p
    return matrix.parent / p


class MatrixItem(Strict):
    """One entry of a matrix file as written."""

    scenario: Annotated[str, Field(min_length=1)]
    kernels: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)] | None = None
    reps: Annotated[int, Field(ge=1)] | None = None


def _entry_problem(exc: ValidationError) -> str:
    loc, message, unknown = first_problem(exc)
    if unknown:
        return f"unknown key(s) {loc[0]} {message.removeprefix('unknown key ')}"
    return f"key '{loc[0]}': {message}" if loc else message


def load_matrix(path: Path) -> list[MatrixEntry]:
    """Parse and validate a matrix file; InputError naming the file, the entry and the key."""
    try:
        data = parse_yaml(path.read_text())
    except OSError as exc:
        raise InputError(f"{path}: cannot read matrix file: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML: {describe_error(exc)}") from None
    if not isinstance(data, list) or not data:
        raise InputError(f"{path}: expected a non-empty YAML list of {{{', '.join(MatrixItem.keys())}}} entries")
    entries = []
    for i, raw in enumerate(data):
        try:
            item = MatrixItem.model_validate(raw)
        except ValidationError as exc:
            raise InputError(f"{path}: entry {i}: {_entry_problem(exc)}") from None
        entries.append(MatrixEntry(i, item.scenario, _resolve(item.scenario, path), item.kernels, item.reps))
    return entries


@dataclass
class EntryResult:
    entry: MatrixEntry
    ok: bool
    bundle: Path | None  # None when the run produced no bundle
    reason: str = ""  # why there is no bundle

    def as_report_entry(self) -> Entry:
        return Entry(self.entry.label, None, problem=self.reason)


def run_matrix(entries: list[MatrixEntry], results_dir: Path, timing: str | None = None) -> list[EntryResult]:
    """Run every entry, whatever the others did, printing one line each."""
    try:
        from harness.commands.run import (
            run_scenario,  # lazily: the run stage is heavy and optional here
        )
    except ImportError as exc:
        raise HarnessError(f"nightly: cannot import harness.commands.run: {exc}") from exc
    results = []
    for e in entries:
        if not e.path.is_file():
            results.append(EntryResult(e, False, None, f"scenario file not found: {e.path}"))
        else:
            try:
                outcome = run_scenario(e.path, kernels=e.kernels, reps=e.reps, results_dir=results_dir, junit=None,
                                       timing=timing)
                results.append(EntryResult(e, bool(outcome.ok), Path(outcome.bundle)))
            except Exception as exc:  # noqa: BLE001 -- one broken entry must not stop the night
                results.append(EntryResult(e, False, None, f"{type(exc).__name__}: {exc}"))
        r = results[-1]
        what = r.bundle if r.bundle else r.reason
        print(f"nightly: {'ok' if r.ok else 'FAILED'} {e.label}: {what}", file=sys.stdout if r.ok else sys.stderr)
    return results


def cmd_nightly(args) -> int:
    matrix = Path(args.matrix)
    entries = load_matrix(matrix)
    history = Path(args.history) if args.history else None
    if history is not None and not history.is_dir():
        raise InputError(f"--history {history}: no such directory")
    results_dir = Path(args.results) if args.results else REPO_ROOT / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    out = Path(args.out) if args.out else results_dir / "report"
    results = run_matrix(entries, results_dir, timing=args.timing)
    no_bundle = [r.as_report_entry() for r in results if r.bundle is None]
    if args.junit:
        from harness.results.junit import write_junit

        write_junit(Path(args.junit), [r.bundle for r in results if r.bundle],
                    extra_failures=[(e.name, e.problem) for e in no_bundle])
    index = build_report(results_dir, out, extra=no_bundle, history_dir=history)
    n_ok = sum(r.ok for r in results)
    print(f"nightly: {n_ok}/{len(results)} run(s) ok; report: {index}")
    return 0 if n_ok == len(results) else 1


def register(subparsers) -> None:
    p = subparsers.add_parser("nightly", help="run a matrix of scenarios and kernels, then build the report",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("matrix", metavar="MATRIX_YAML", help="matrix file, e.g. scenarios/nightly.yaml")
    p.add_argument("--results", metavar="DIR", help="results directory (default: the repository's results/)")
    p.add_argument("--out", metavar="DIR", help="report directory (default RESULTS/report)")
    p.add_argument("--junit", metavar="FILE", help="also write JUnit XML of every run")
    p.add_argument("--timing", choices=TIMING_MODES,
                   help="guest time for every run: realtime, or icount (TCG only); default: each scenario's own")
    p.add_argument("--history", metavar="DIR",
                   help="earlier nights' results, one directory each (e.g. restored from the last run's artifact): "
                        "trends in the report, and tonight judged against the last night")
    p.set_defaults(func=cmd_nightly)
