"""`harness report` on synthetic bundles (a failed run, an unparsable dir) and, marked vm, real ones."""

import argparse
import re
from html.parser import HTMLParser
from pathlib import Path

import bundle_synth as synth
import numpy as np
import pytest

from harness.paths import REPO_ROOT
from harness.results import report


class Page(HTMLParser):
    """Tables (as lists of rows of cell text), <img> sources and <a> hrefs of an HTML page."""

    def __init__(self, text):
        super().__init__()
        self.tables, self.imgs, self.links = [], [], []
        self._cell = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = ""
        elif tag == "img":
            self.imgs.append(attrs["src"])
        elif tag == "a":
            self.links.append(attrs["href"])

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def runs_table(page):
    return next(t for t in page.tables if t[0][0] == "run")


def kernel_samples(fault, seed, n=8):
    rng = np.random.default_rng(seed)
    return {
        ("fault_in_ms", "touch"): list(rng.normal(fault, fault * 0.02, n)),
        ("nonzero_pages", "touch"): [0] * n,
        ("vmstat.pgzero_alloc", "touch"): [5000 + seed] * n,
        ("vmstat.pgzero_skip_reported", "touch"): [100 * seed] * n,
        ("vmstat.pgzero_alloc", "reclaim"): [300] * n,
    }


@pytest.fixture
def results(tmp_path):
    r = tmp_path / "results"
    synth.write_bundle(r / "20261122T010000Z-smoke-stock", {"stock": kernel_samples(100, 1)},
                       started="2026-11-22T01:00:00Z")
    synth.write_bundle(r / "20261122T020000Z-reporting-base-base+reporting",
                       {"base": kernel_samples(100, 2), "base+reporting": kernel_samples(130, 3)},
                       scenario="reporting", started="2026-11-22T02:00:00Z")
    synth.write_bundle(r / "20261122T030000Z-deflate-base", {}, kernels=("base",), scenario="deflate",
                       status="failed", error="guest panicked: Kernel panic - not syncing", rss=False)
    (r / "20261122T030000Z-deflate-base" / "base" / "rep0").mkdir(parents=True)
    (r / "20261122T030000Z-deflate-base" / "base" / "rep0" / "serial.log").write_text("Kernel panic\n")
    (r / "20261122T040000Z-junk").mkdir()
    (r / "20261122T040000Z-junk" / "manifest.json").write_text("{truncated")
    (r / ".tmp-20261122T050000Z-smoke").mkdir()  # a run in progress: skipped
    return r


def test_report_renders(results, tmp_path):
    out = tmp_path / "out"
    index = report.build_report(results, out)
    assert index == out / "index.html"
    page = Page(index.read_text())
    runs = {row[0]: row for row in runs_table(page)[1:]}
    assert runs_table(page)[0] == ["run", "status", "scenario", "kernels", "accel", "started", "error", "logs"]
    assert set(runs) == {"20261122T010000Z-smoke-stock", "20261122T020000Z-reporting-base-base+reporting",
                         "20261122T030000Z-deflate-base", "20261122T040000Z-junk"}
    failed = runs["20261122T030000Z-deflate-base"]
    assert failed[1] == "failed" and "Kernel panic" in failed[6] and "serial.log" in failed[7]
    junk = runs["20261122T040000Z-junk"]
    assert junk[1] == "unparsable" and "not valid JSON" in junk[6]
    assert runs["20261122T020000Z-reporting-base-base+reporting"][3] == "base, base+reporting"

    # log links are relative and resolve
    log_links = [h for h in page.links if h.endswith("serial.log")]
    assert log_links and all(not h.startswith("/") and (out / h).resolve().is_file() for h in log_links)

    # per scenario: kernels side by side, change flagged against the first kernel, the threshold it used
    side = next(t for t in page.tables if t[0][3:] == ["base (baseline)", "base+reporting", "threshold"])
    fault = next(row for row in side if row[0] == "fault_in_ms")
    assert "REGRESSION" in fault[4] and "+" in fault[4]
    skip = next(row for row in side if row[0] == "vmstat.pgzero_skip_reported")
    assert "IMPROVEMENT" in skip[4] and fault[5] == "5 % (fixed 5 %)"
    text = index.read_text()
    summary = text.split('id="summary"')[1].split("</section>")[0]  # the first screen answers
    assert "base+reporting vs base: fault_in_ms @ touch" in summary and "REGRESSION" in summary
    assert "run 20261122T030000Z-deflate-base (deflate) failed: guest panicked" in summary
    assert "20261122T040000Z-junk: not a readable bundle" in summary
    assert summary.index("FAILED") < summary.index("REGRESSION") < summary.index("IMPROVEMENT")
    assert '<a href="#reporting">' in summary  # each finding links to its evidence
    skip_line = next(x for x in summary.split("<li") if "vmstat.pgzero_skip_reported" in x)
    assert "200 -&gt; 300 pages" in skip_line and "%" not in skip_line  # a counter: "a -> b pages", no percentage
    # one group per scenario, the worst first, each linking its card and bundle once
    groups = re.findall(r'<h3 class="group">([^<\[]+)', summary)
    assert [g.strip() for g in groups] == ["deflate", "other", "reporting"], groups
    assert summary.count("20261122T020000Z-reporting-base-base+reporting</a>") == 1
    assert text.index('id="summary"') < text.index("Scenario reporting") < text.index("<details")
    assert "No A/A run" in text and "fixed 5 % threshold" in text

    # plots exist next to the HTML
    assert len(page.imgs) == 6  # rss, fault-in, zeroing for smoke and reporting
    assert all((out / src).is_file() and (out / src).stat().st_size > 1000 for src in page.imgs)

    md = (out / "report.md").read_text()
    assert "20261122T040000Z-junk" in md and "guest panicked" in md and "## Scenario reporting" in md
    assert all(f"]({src})" in md for src in page.imgs)
    assert ".tmp-" not in md


def test_latest_run_shown_even_when_failed(results, tmp_path):
    synth.write_bundle(results / "20261122T060000Z-smoke-stock", {"stock": kernel_samples(100, 4)},
                       started="2026-11-22T06:00:00Z", status="failed",
                       error="expectations failed: nonzero_pages [stock]: 3 pages")
    md = report.build_report(results, tmp_path / "out").with_name("report.md").read_text()
    section = md.split("## Scenario smoke")[1]
    assert "20261122T060000Z-smoke-stock" in section and "FAILED: expectations failed" in section


def test_report_out_inside_results_is_skipped(results):
    report.build_report(results, results / "report")
    report.build_report(results, results / "report")  # second scan must not list the report dir
    page = Page((results / "report" / "index.html").read_text())
    assert all(row[0] != "report" for row in runs_table(page))


def test_report_extra_failures_and_cli(results, tmp_path, capsys):
    extra = [report.Entry("entry 2 (stale-data.yaml)", None, problem="scenario file not found: x")]
    index = report.build_report(results, tmp_path / "o", extra=extra)
    assert "scenario file not found" in index.read_text()

    parser = argparse.ArgumentParser()
    from harness.commands import report as report_cmd

    report_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["report", str(results), "--out", str(tmp_path / "cli")])
    assert args.func(args) == 0
    assert (tmp_path / "cli" / "index.html").is_file() and (tmp_path / "cli" / "report.md").is_file()


def test_report_missing_results_dir(tmp_path):
    from harness.errors import InputError

    with pytest.raises(InputError):
        report.build_report(tmp_path / "nope", tmp_path / "out")


@pytest.mark.vm
def test_report_real_bundles(smoke_bundles, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    for b in smoke_bundles:
        (results / Path(b).name).symlink_to(Path(b).resolve())
    index = report.build_report(results, tmp_path / "out")
    page = Page(index.read_text())
    assert len(runs_table(page)) == len(smoke_bundles) + 1
    assert len(page.tables) >= 2  # at least one scenario table
    assert page.imgs and all((index.parent / src).is_file() for src in page.imgs)


# ------------------------------------------------------------------------------ harness nightly


def fake_runs(monkeypatch, calls, fail_scenario=None):
    """Stand in for the runs of `harness run-shard` (which `harness nightly` takes, sharded or not): each cell
    writes a synthetic bundle on a synthetic runner."""
    from harness.results import shard_run as run_shard
    from harness.results.shards import Runner

    class RunOutcome:
        def __init__(self, bundle, ok, error=None):
            self.bundle, self.ok, self.error = bundle, ok, error

    def run_scenario(scenario_path, kernels=None, reps=None, results_dir=None, timing=None, require_accel=None, jobs=None):
        kernels = [k.text for k in kernels] if kernels else None  # the plan's typed specs
        calls.append((Path(scenario_path).name, kernels, reps))
        name = Path(scenario_path).stem
        if name == "explodes":
            raise RuntimeError("qemu-system-x86_64 not found")
        failed = name == fail_scenario
        path = synth.write_bundle(results_dir / f"20261122T0{len(calls)}0000Z-{name}", {
            k: kernel_samples(100, len(calls)) for k in (kernels or ["stock"])}, scenario=name,
            status="failed" if failed else "complete", error="guest panicked" if failed else None)
        return RunOutcome(path, not failed, "guest panicked" if failed else None)

    monkeypatch.setattr(run_shard, "run_scenario", run_scenario)
    host = synth.manifest()
    monkeypatch.setattr(run_shard, "runner_fingerprint", lambda: Runner(
        cpu=host.host.cpu, cores=host.host.cores, accelerator=host.accel, qemu_version=host.qemu.version))


def nightly(argv):
    from harness.commands import nightly as nightly_mod

    parser = argparse.ArgumentParser()
    nightly_mod.register(parser.add_subparsers())
    args = parser.parse_args(["nightly", *map(str, argv)])
    return args.func(args)


def write_scenarios(directory: Path, *names: str) -> None:
    for name in names:
        (directory / f"{name}.yaml").write_text(f"name: {name}\nsteps: [boot]\n")


def test_nightly_runs_matrix_and_reports(tmp_path, monkeypatch):
    calls = []
    fake_runs(monkeypatch, calls)
    write_scenarios(tmp_path, "smoke")
    (tmp_path / "matrix.yaml").write_text("- scenario: smoke.yaml\n  kernels: [stock]\n  reps: 3\n")
    code = nightly([tmp_path / "matrix.yaml", "--results", tmp_path / "res", "--junit", tmp_path / "j.xml"])
    assert code == 0
    assert calls == [("smoke.yaml", ["stock"], 3)]
    assert (tmp_path / "res" / "report" / "index.html").is_file() and (tmp_path / "j.xml").is_file()
    assert (tmp_path / "res" / "plan.json").is_file() and (tmp_path / "res" / "merged" / "merge.json").is_file()


def test_nightly_failures_reported_not_fatal(tmp_path, monkeypatch):
    calls = []
    fake_runs(monkeypatch, calls, fail_scenario="deflate")
    write_scenarios(tmp_path, "smoke", "deflate", "explodes")
    (tmp_path / "matrix.yaml").write_text(
        "- scenario: smoke.yaml\n- scenario: deflate.yaml\n- scenario: explodes.yaml\n"
        "- {scenario: smoke.yaml, kernels: [stock], reps: 2, aa: true}\n")
    out = tmp_path / "report"
    code = nightly([tmp_path / "matrix.yaml", "--results", tmp_path / "res", "--out", out,
                    "--junit", tmp_path / "j.xml"])
    assert code == 3  # a cell that left no bundle is an infrastructure error, as in the sharded CI nightly
    assert sorted(c[0] for c in calls) == ["deflate.yaml", "explodes.yaml", "smoke.yaml", "smoke.yaml"]
    text = (out / "index.html").read_text()
    assert "RuntimeError: qemu-system-x86_64 not found" in text and "explodes" in text
    assert "guest panicked" in text
    junit = (tmp_path / "j.xml").read_text()
    assert "qemu-system-x86_64 not found" in junit and "guest panicked" in junit


def test_nightly_with_a_missing_scenario_is_bad_input_before_any_run(tmp_path, monkeypatch):
    from harness.errors import InputError

    calls = []
    fake_runs(monkeypatch, calls)
    write_scenarios(tmp_path, "smoke")
    (tmp_path / "matrix.yaml").write_text("- scenario: smoke.yaml\n- scenario: missing.yaml\n")
    with pytest.raises(InputError, match=r"matrix.yaml: entry 1: scenario file not found: .*missing.yaml"):
        nightly([tmp_path / "matrix.yaml", "--results", tmp_path / "res"])
    assert calls == [] and not (tmp_path / "res").exists()


def test_nightly_matrix_validation(tmp_path):
    from harness.commands.nightly import load_matrix
    from harness.errors import InputError

    bad = {
        "{}": "non-empty YAML list",
        "- 3": "entry 0: expected a mapping",
        "- {kernels: [stock]}": "key 'scenario'",
        "- {scenario: a.yaml, kernels: stock}": "key 'kernels'",
        "- {scenario: a.yaml, reps: 0}": "key 'reps'",
        "- {scenario: a.yaml, reps: true}": "key 'reps'",
        "- {scenario: a.yaml}\n- {scenario: b.yaml, rep: 3}": "entry 1: unknown key(s) rep",
        "- [unclosed": "not valid YAML",
    }
    for text, message in bad.items():
        path = tmp_path / "m.yaml"
        path.write_text(text)
        with pytest.raises(InputError) as exc:
            load_matrix(path)
        assert str(path) in str(exc.value) and message in str(exc.value), text
    with pytest.raises(InputError, match="cannot read"):
        load_matrix(tmp_path / "nope.yaml")


def test_repository_nightly_matrix_is_valid():
    from harness.results.matrix import load_matrix

    entries = load_matrix(REPO_ROOT / "scenarios" / "nightly.yaml")
    assert entries[0].path.name == "smoke.yaml" and entries[0].path.is_file()
    assert ([k.text for k in entries[0].kernels], entries[0].reps) == (["stock"], 3)
    assert {e.path.name for e in entries} >= {"reporting.yaml", "deflate.yaml", "init-on-free.yaml",
                                              "free-contig-range.yaml", "stale-data.yaml"}
