"""TEST FIXTURE: a history of nights derived from real bundles, for the report's trend and last-night tests.

Nothing here is a measurement.  Each derived bundle copies a real bundle (its rep directories: rss.csv,
steps.json, logs), shifts its timestamps back by whole days, turns each real repetition into REPS_PER_REAL
repetitions with a deterministic +-1 % jitter (so that the Mann-Whitney test has enough samples), and
scales chosen metrics by a per-night factor.  Every derived manifest says so in its ``fixture`` key, and
every night directory holds a FIXTURE.txt.
"""

from __future__ import annotations

import json
import shutil
import zlib
from datetime import datetime, timedelta
from pathlib import Path

from harness.results.bundle import load_bundle
from harness.results.model import KernelRecord, MetricRow

REPS_PER_REAL = 4


def _shift(stamp: str | None, days: int) -> str | None:
    if not stamp:
        return stamp
    return (datetime.fromisoformat(stamp.replace("Z", "+00:00")) - timedelta(days=days)).isoformat()


def derive_bundle(src: Path, night_dir: Path, days_back: int, scale: dict[str, float] | None = None) -> Path:
    """A copy of bundle `src` in night_dir, `days_back` days earlier, metric NAME scaled by scale[NAME]."""
    b = load_bundle(src)
    scale = scale or {}
    started = _shift(b.manifest.started, days_back) or "2026-01-01T00:00:00+00:00"
    stamp = datetime.fromisoformat(started).strftime("%Y%m%dT%H%M%SZ")
    dest = night_dir / f"{stamp}-{src.name.split('-', 1)[1]}"
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("*.json", "serial.log", "transcript.log", "dmesg.txt",
                                                             "qmp.jsonl"), dirs_exist_ok=False)
    for rep_dir in src.glob("*/rep*"):  # steps.json carries the phase times the RSS plot shades
        if (rep_dir / "steps.json").is_file():
            shutil.copy2(rep_dir / "steps.json", dest / rep_dir.relative_to(src) / "steps.json")
    rows = []
    for row in b.metrics:
        for copy in range(REPS_PER_REAL):
            jitter = 1 + 0.01 * ((zlib.crc32(f'{row.name}{row.phase}{row.rep}{copy}{days_back}'.encode()) % 201) - 100) / 100
            value = row.value * scale.get(row.name, 1.0) * (jitter if row.value and copy else 1)
            rows.append(row.model_copy(update={"value": value, "rep": (row.rep or 0) * REPS_PER_REAL + copy}))
    b.metrics = rows
    b.manifest.started = started
    b.manifest.ended = _shift(b.manifest.ended, days_back)
    b.manifest.reps = (b.manifest.reps or 1) * REPS_PER_REAL
    b.manifest.fixture = f"TEST FIXTURE derived from real bundle {src.name}: {days_back} day(s) earlier, " f"each rep x{REPS_PER_REAL} with +-1 % jitter, scaled {scale or 'not'}"
    b.write(dest)
    return dest


def aa_bundle(first: Path, second: Path, dest_dir: Path, days_back: int) -> Path:
    """One bundle holding the same kernel twice (spec shared, slugs differ): the first real bundle's samples
    as one side, the second's as the other -- what an A/A cell writes."""
    a, b = load_bundle(first), load_bundle(second)
    kernel = a.kernels[0]
    twin = f"{a.kernel_slug(kernel)}-aa"
    started = _shift(a.manifest.started, days_back) or "2026-01-01T00:00:00+00:00"
    dest = dest_dir / f"{datetime.fromisoformat(started).strftime('%Y%m%dT%H%M%SZ')}-aa-{kernel}"
    dest.mkdir(parents=True)
    record = a.kernel_records()[0]
    a.manifest.kernels = [record, KernelRecord.model_validate({**record.model_dump(), "slug": twin})]
    a.manifest.started = started
    a.metrics = [*a.metrics, *(MetricRow.model_validate({**r.model_dump(), "kernel": twin}) for r in b.metrics
                               if b.kernel_label(r.kernel) == kernel)]
    a.manifest.fixture = f"TEST FIXTURE: A/A of {kernel} from real bundles {first.name} and {second.name}"
    a.write(dest)
    return dest


def make_history(real: list[Path], aa_pair: tuple[Path, Path], root: Path, nights: int = 14,
                 tonight_scale: dict[str, float] | None = None) -> tuple[Path, Path]:
    """(history dir with `nights` nights, tonight's dir).  Nights alternate between the plain format and the
    merged one (merge.json naming the A/A cell); tonight's metrics are scaled by tonight_scale."""
    history, tonight = root / "history", root / "tonight"
    tonight_date = datetime.fromisoformat(load_bundle(real[0]).started).date()
    for back in range(nights, -1, -1):
        night = tonight if back == 0 else history / str(tonight_date - timedelta(days=back))
        night.mkdir(parents=True)
        (night / "FIXTURE.txt").write_text(f"TEST FIXTURE derived from real bundles ({back} day(s) back)\n")
        drift = {"fault_in_ms": 1 + 0.01 * (back % 3)}  # a little movement for the trend lines
        bundles = [derive_bundle(p, night, back, tonight_scale if back == 0 else drift) for p in real]
        aa = aa_bundle(*aa_pair, night, back)
        if back % 2:
            cells = [{"id": f"cell{i}", "scenario": load_bundle(p).scenario, "kernels": load_bundle(p).kernels,
                      "shard": "s0", "bundle": p.name} for i, p in enumerate(bundles)]
            cells.append({"id": "aa-smoke", "scenario": "smoke", "kernels": ["stock", "stock"], "shard": "s0",
                          "bundle": aa.name, "aa": True})
            (night / "merge.json").write_text(json.dumps({
                "plan": "fixture", "cells": cells, "merged_at": f"{night.name}T06:00:00Z",
                "runners": {"s0": {"cpu": "fixture", "cores": 2, "accelerator": "tcg", "qemu_version": "7.2"}}}))
    return history, tonight
