"""Nights of results: tonight's directory and a history of earlier ones, as the report reads them.

A *night* is a directory of result bundles: a plain results directory (``harness nightly``'s output), or a
merged one (``harness merge``) that also holds ``merge.json``::

    {"plan": ..., "cells": [{"id", "scenario", "kernels", "shard", "bundle": "<dir relative to the night>",
     "aa": true?}], "runners": {"<shard>": {"cpu", "cores", "accelerator", "qemu_version"}}, "merged_at"}

A *history* is a directory with one night per subdirectory, named so that they sort by date
(``2026-11-30``); the report draws trends over them and judges tonight against the last one.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import InputError
from harness.results import stats
from harness.results.bundle import Bundle, load_bundle

MERGE_FILE = "merge.json"
REPORT_MARKER = ".harness-report"  # a report directory inside a results directory is not a run
_AA_ID = re.compile(r"(^|[-_.])aa($|[-_.])", re.IGNORECASE)


@dataclass
class Night:
    name: str
    path: Path
    bundles: list[Bundle] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)  # directories that are not bundles, and why
    merge: dict | None = None  # merge.json when the night is a merged directory
    aa_bundles: set[Path] = field(default_factory=set)  # bundles merge.json names as A/A cells

    def latest_per_scenario(self) -> dict[str, Bundle]:
        """The runs a report shows: the latest of each scenario, A/A calibration runs left out."""
        return latest_per_scenario([b for b in self.bundles if not self.is_aa(b)])

    def named_aa(self, b: Bundle) -> bool:
        """merge.json names b's cell as A/A, or `harness bench noise` wrote it (scenario aa-*)."""
        return b.path.resolve() in self.aa_bundles or b.scenario.startswith("aa-")

    def is_aa(self, b: Bundle) -> bool:
        """An A/A run: named so, or one whose kernels share a spec (one kernel against itself)."""
        specs = [str(k.spec or k.slug) for k in b.kernel_records()]
        return self.named_aa(b) or len(set(specs)) < len(specs)


def latest_per_scenario(bundles: list[Bundle]) -> dict[str, Bundle]:
    """Scenario name -> its latest bundle that has metrics, failed or not (its status is shown).

    A failed run usually still has its metrics (e.g. an expectation broke); showing an older complete
    run instead would hide tonight's result.
    """
    chosen: dict[str, Bundle] = {}
    for b in bundles:
        if not b.metrics:
            continue
        cur = chosen.get(b.scenario)
        if cur is None or (b.started, b.path.name) >= (cur.started, cur.path.name):
            chosen[b.scenario] = b
    return dict(sorted(chosen.items()))


def run_dirs(directory: Path) -> list[Path]:
    """The run directories of a night, oldest first (bundle names start with a timestamp)."""
    return [d for d in sorted(directory.iterdir())
            if d.is_dir() and not d.name.startswith(".") and not (d / REPORT_MARKER).exists()]


def _aa_cell(cell: dict) -> bool:
    kernels = cell.get("kernels") or []
    return (cell.get("aa") is True or str(cell.get("kind", "")).lower() in ("aa", "a/a")
            or bool(_AA_ID.search(str(cell.get("id", "")))) or len(set(map(str, kernels))) < len(kernels))


def read_merge(directory: Path) -> dict | None:
    path = directory / MERGE_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not readable JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("cells", []), list):
        raise InputError(f"{path}: expected an object with a list of cells")
    return data


def load_night(directory: Path, name: str | None = None) -> Night:
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"{directory}: no such results directory")
    night = Night(name or directory.name, directory, merge=read_merge(directory))
    cells = [c for c in (night.merge or {}).get("cells", []) if isinstance(c, dict) and c.get("bundle")]
    cell_dirs = [(directory / str(c["bundle"])).resolve() for c in cells]
    night.aa_bundles = {d for c, d in zip(cells, cell_dirs) if _aa_cell(c)}
    candidates = [d.resolve() for d in run_dirs(directory)]
    candidates += [d for d in cell_dirs if d not in candidates]  # merge.json may name bundles in subdirectories
    for d in candidates:
        if d not in cell_dirs and any(d in c.parents for c in cell_dirs):
            continue  # a directory holding cells' bundles (a shard's), not a run
        try:
            night.bundles.append(load_bundle(d))
        except (InputError, OSError) as exc:
            night.unreadable.append((d, str(exc).removeprefix(f"{d}/").removeprefix(f"{d}: ")))
    return night


def load_history(directory: Path, exclude: Path | None = None) -> list[Night]:
    """Every night under `directory`, oldest first; `exclude` (tonight, when it is kept there too) left out."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"--history {directory}: no such directory")
    skip = exclude.resolve() if exclude else None
    return [load_night(d) for d in run_dirs(directory) if d.resolve() != skip]


@dataclass
class TrendPoint:
    night: str
    median: float | None  # None: the metric was not measured that night
    n: int


def trend(nights: list[Night], scenario: str, kernel: str, name: str, phase: str) -> list[TrendPoint]:
    """The median of one metric of one kernel in one scenario, night by night."""
    points = []
    for night in nights:
        b = night.latest_per_scenario().get(scenario)
        vals = b.samples(kernel).get((name, phase), []) if b is not None and kernel in b.kernels else []
        points.append(TrendPoint(night.name, stats.summarize(vals).median if vals else None, len(vals)))
    return points
