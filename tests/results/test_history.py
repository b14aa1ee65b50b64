"""Nights and a history of them: plain and merged directories, trends, tonight against last night."""

import json
import subprocess
import sys

import bundle_synth as synth
from test_report import Page

from harness.results import report
from harness.results.history import load_history, load_night, trend


def night(root, day, fault, *, merged=False, started_hour=1):
    d = root / day
    name = f"{day.replace('-', '')}T0{started_hour}0000Z-smoke-stock"
    synth.write_bundle(d / name, {"stock": {("fault_in_ms", "touch"): [fault, fault + 1, fault - 1, fault],
                                            ("nonzero_pages", "touch"): [0, 0, 0, 0]}},
                       started=f"{day}T0{started_hour}:00:00Z")
    if merged:
        (d / "merge.json").write_text(json.dumps({"plan": {}, "merged_at": day, "runners": {"s0": {}}, "cells": [
            {"id": "smoke-stock", "scenario": "smoke", "kernels": ["stock"], "shard": "s0", "bundle": name}]}))
    return d


def test_history_reads_plain_and_merged_nights_in_date_order(tmp_path):
    h = tmp_path / "history"
    for i in range(14):
        night(h, f"2026-11-{10 + i:02d}", 100 + i, merged=bool(i % 2))
    (h / "2026-11-24").mkdir()  # an empty night: no runs
    nights = load_history(h, exclude=h / "2026-11-24")
    assert [n.name for n in nights] == [f"2026-11-{10 + i:02d}" for i in range(14)]
    assert nights[1].merge is not None and nights[0].merge is None
    points = trend(nights, "smoke", "stock", "fault_in_ms", "touch")
    assert [p.median for p in points] == [100.0 + i for i in range(14)] and points[0].n == 4
    assert trend(nights, "smoke", "base", "fault_in_ms", "touch")[0].median is None


def test_report_judges_tonight_against_last_night_and_draws_trends(tmp_path):
    h = tmp_path / "history"
    for i in range(14):
        night(h, f"2026-11-{10 + i:02d}", 100, merged=bool(i % 2))
    tonight = night(tmp_path, "2026-11-24", 150)
    index = report.build_report(tonight, tmp_path / "out", history_dir=h)
    text = index.read_text()
    summary = text.split('id="summary"')[1].split("</section>")[0]
    assert "against last night" in summary and "stock vs last night: fault_in_ms @ touch 100 -&gt; 150" in summary
    assert "last night: 20261123T010000Z-smoke-stock" in summary
    assert "14 earlier night(s), 2026-11-10 to 2026-11-23" in text
    page = Page(text)
    assert "smoke-trends.png" in page.imgs and (index.parent / "smoke-trends.png").stat().st_size > 10000
    headline = next(t for t in page.tables if t[0][0] == "metric @ phase")
    assert any("vs last night REGRESSION" in cell for row in headline for cell in row)
    assert "(against last night)" in index.with_name("report.md").read_text()


def test_tonight_kept_inside_the_history_is_not_its_own_last_night(tmp_path):
    h = tmp_path / "history"
    night(h, "2026-11-23", 100)
    tonight = night(h, "2026-11-24", 150)
    text = report.build_report(tonight, tmp_path / "out", history_dir=h).read_text()
    assert "1 earlier night(s)" in text and "fault_in_ms @ touch 100 -&gt; 150" in text


def test_a_plain_directory_without_merge_json_is_a_night(tmp_path):
    d = night(tmp_path, "2026-11-24", 100)
    n = load_night(d)
    assert n.merge is None and [b.scenario for b in n.bundles] == ["smoke"]


def test_missing_history_is_bad_input(tmp_path):
    d = night(tmp_path, "2026-11-24", 100)
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "report", str(d), "--history", str(tmp_path / "no")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "--history" in proc.stderr
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "night").mkdir()
    (tmp_path / "broken" / "night" / "merge.json").write_text("{nope")
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "report", str(d), "--history",
                           str(tmp_path / "broken")], capture_output=True, text=True)
    assert proc.returncode == 2 and "merge.json: not readable JSON" in proc.stderr and "Traceback" not in proc.stderr


def test_nightly_missing_history_is_bad_input_before_anything_runs(tmp_path):
    import pytest
    from test_report import nightly

    from harness.errors import InputError

    (tmp_path / "smoke.yaml").write_text("name: smoke\n")
    (tmp_path / "matrix.yaml").write_text("- scenario: smoke.yaml\n")
    with pytest.raises(InputError, match="--history"):
        nightly([tmp_path / "matrix.yaml", "--results", tmp_path / "res", "--history", tmp_path / "no"])
    assert not (tmp_path / "res").exists()


def test_merge_json_may_name_bundles_in_shard_directories_and_a_missing_one_is_shown(tmp_path):
    d = tmp_path / "2026-11-24"
    synth.write_bundle(d / "shard-1" / "b1", {"stock": {("fault_in_ms", "touch"): [1, 2]}})
    synth.write_bundle(d / "b2", {"stock": {("fault_in_ms", "touch"): [1, 2]}}, scenario="deflate")
    (d / "merge.json").write_text(json.dumps({"plan": {}, "merged_at": "x", "runners": {}, "cells": [
        {"id": "c1", "scenario": "smoke", "kernels": ["stock"], "shard": "1", "bundle": "shard-1/b1"},
        {"id": "c2", "scenario": "deflate", "kernels": ["stock"], "shard": "1", "bundle": "b2"},
        {"id": "c3", "scenario": "reporting", "kernels": ["stock"], "shard": "2", "bundle": "shard-2/gone"}]}))
    n = load_night(d)
    assert sorted(b.path.name for b in n.bundles) == ["b1", "b2"]
    assert [(p.name, why) for p, why in n.unreadable] == [("gone", "not a bundle directory")]
    text = report.build_report(d, tmp_path / "out").read_text()
    assert "gone: not a readable bundle" in text.split('id="summary"')[1].split("</section>")[0]
