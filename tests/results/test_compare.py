"""`harness compare` on synthetic bundles (and, marked vm, on real ones)."""

import argparse
import json

import bundle_synth as synth
import numpy as np
import pytest

from harness.commands import compare
from harness.errors import InputError


def run(argv, capsys):
    """Run `harness compare` through a parser with only compare's register(), like cli.main does."""
    parser = argparse.ArgumentParser(prog="harness")
    compare.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["compare", *map(str, argv)])
    try:
        code = args.func(args)
    except InputError as exc:
        print(exc)
        code = 2
    return code, capsys.readouterr().out


def samples(fault_center, seed, *, nonzero=0, n=10, skip=100.0):
    rng = np.random.default_rng(seed)
    return {
        ("fault_in_ms", "touch"): list(rng.normal(fault_center, fault_center * 0.02, n)),
        ("boot_to_ssh_s", "boot"): list(rng.normal(5.0, 0.05, n)),
        ("nonzero_pages", "touch"): [nonzero] * n,
        ("vmstat.pgzero_skip_reported", "touch"): [skip] * n,
        ("rss_mib", "touch"): list(rng.normal(600, 3, n)),
    }


@pytest.fixture
def base(tmp_path):
    return synth.write_bundle(tmp_path / "20261122T010000Z-smoke-stock", {"stock": samples(100, 1)})


def test_unchanged_exit_0(tmp_path, base, capsys):
    b = synth.write_bundle(tmp_path / "b", {"stock": samples(100, 2)})
    code, out = run([base, b, "--md"], capsys)
    assert code == 0
    assert "| fault_in_ms | touch |" in out and "0 regression(s)" in out


def test_regression_exit_1(tmp_path, base, capsys):
    b = synth.write_bundle(tmp_path / "b", {"base+x": samples(130, 2)})
    code, out = run([base, b], capsys)
    assert code == 1
    assert "REGRESSION" in out  # rich table


def test_counter_regression_exit_1(tmp_path, base, capsys):
    b = synth.write_bundle(tmp_path / "b", {"stock": samples(100, 2, nonzero=4)})
    code, out = run([base, b, "--json"], capsys)
    assert code == 1
    rows = {r["name"]: r for r in json.loads(out)["comparisons"][0]["metrics"]}
    assert rows["nonzero_pages"]["verdict"] == "regression"
    assert rows["nonzero_pages"]["p"] is None and rows["nonzero_pages"]["b_values"] == [4.0] * 10


def test_improvement_only_exit_0(tmp_path, base, capsys):
    b = synth.write_bundle(tmp_path / "b", {"stock": samples(70, 2, skip=900.0)})
    code, out = run([base, b, "--json"], capsys)
    assert code == 0
    data = json.loads(out)
    assert data["comparisons"][0]["improvements"] == 2 and not data["regressed"]


def test_json_structure(tmp_path, base, capsys):
    b = synth.write_bundle(tmp_path / "b", {"stock": samples(130, 2)})
    code, out = run([base, b, "--json", "--threshold", "10"], capsys)
    data = json.loads(out)
    assert code == 1
    assert data["change_of"] == "median" and data["threshold_pct"] == 10 and data["alpha"] == 0.05
    assert [x["path"] for x in data["bundles"]] == [str(base), str(b)]
    c = data["comparisons"][0]
    assert c["base"]["kernel"] == "stock" and c["timings_comparable"] and c["timings_reason"] is None
    row = next(r for r in c["metrics"] if r["name"] == "fault_in_ms")
    for key in ("phase", "kind", "better", "change_pct", "ci_low", "ci_high", "p", "test", "verdict", "flagged"):
        assert key in row
    for key in ("n", "median", "mean", "stddev", "cv", "total"):
        assert key in row["a"] and key in row["b"]
    assert row["phase"] == "touch" and row["kind"] == "time" and row["better"] == "lower"
    assert row["verdict"] == "regression" and row["p"] < 0.05 and 25 < row["change_pct"] < 35
    assert row["ci_low"] < row["change_pct"] < row["ci_high"]


def test_only_common_metrics_compared(tmp_path, base, capsys):
    s = samples(100, 2)
    del s[("rss_mib", "touch")]
    s[("fault_in_ms", "other-phase")] = [1.0, 2.0]
    b = synth.write_bundle(tmp_path / "b", {"stock": s})
    code, out = run([base, b, "--json"], capsys)
    c = json.loads(out)["comparisons"][0]
    assert {(r["name"], r["phase"]) for r in c["metrics"]} == {
        ("fault_in_ms", "touch"), ("boot_to_ssh_s", "boot"), ("nonzero_pages", "touch"),
        ("vmstat.pgzero_skip_reported", "touch")}
    assert c["only_in_base"] == [{"name": "rss_mib", "phase": "touch"}]
    assert c["only_in_other"] == [{"name": "fault_in_ms", "phase": "other-phase"}]


def test_cross_accelerator_timings_not_judged(tmp_path, base, capsys):
    # tcg is much slower, and a counter regressed: the timings are refused, the counter still judged
    b = synth.write_bundle(tmp_path / "b", {"stock": samples(1000, 2, nonzero=1)}, accel="tcg")
    code, out = run([base, b, "--json"], capsys)
    assert code == 1
    c = json.loads(out)["comparisons"][0]
    assert not c["timings_comparable"] and c["timings_reason"] == "timings not judged: accel kvm vs tcg"
    verdicts = {r["name"]: r["verdict"] for r in c["metrics"]}
    assert verdicts["fault_in_ms"] == verdicts["boot_to_ssh_s"] == "not-judged"
    assert verdicts["nonzero_pages"] == "regression"
    assert verdicts["rss_mib"] == "info"  # memory still compared (informational metric)


def test_cross_accelerator_terminal_says_why(tmp_path, base, capsys):
    b = synth.write_bundle(tmp_path / "b", {"stock": samples(1000, 2)}, accel="tcg", qemu="9.1.0")
    code, out = run([base, b, "--md"], capsys)
    assert code == 0
    assert "timings not judged: accel kvm vs tcg; QEMU 8.2.2 vs 9.1.0" in out


def test_different_host_cpu_refuses_timings(tmp_path, base, capsys):
    b = synth.write_bundle(tmp_path / "b", {"stock": samples(130, 2)}, cpu="AMD EPYC")
    code, out = run([base, b, "--json"], capsys)
    assert code == 0
    assert "host CPU" in json.loads(out)["comparisons"][0]["timings_reason"]


def test_a_bundle_from_before_the_machine_type_ran_pc(tmp_path, base, capsys):
    # q35 boots faster than pc: a night on q35 after nights on pc is not a boot-time improvement
    b = synth.write_bundle(tmp_path / "b", {"stock": samples(100, 2)}, machine={"memory_mib": 2048,
                                                                               "machine_type": "q35"})
    code, out = run([base, b, "--json"], capsys)
    c = json.loads(out)["comparisons"][0]
    assert c["timings_reason"] == "timings not judged: machine pc vs q35"
    assert {r["name"]: r["verdict"] for r in c["metrics"]}["boot_to_ssh_s"] == "not-judged"


def test_single_bundle_several_kernels(tmp_path, capsys):
    b = synth.write_bundle(tmp_path / "multi", {
        "base": samples(100, 1),
        "base+zeroing-stats": samples(101, 2),
        "base+reporting": samples(130, 3),
    })
    code, out = run([b, "--json"], capsys)
    assert code == 1
    comps = json.loads(out)["comparisons"]
    assert [(c["base"]["kernel"], c["other"]["kernel"]) for c in comps] == [
        ("base", "base+zeroing-stats"), ("base", "base+reporting")]
    assert (comps[0]["regressions"], comps[1]["regressions"]) == (0, 1)


def test_two_multi_kernel_bundles_pair_by_slug(tmp_path, capsys):
    a = synth.write_bundle(tmp_path / "a", {"base": samples(100, 1), "base+x": samples(100, 2)})
    b = synth.write_bundle(tmp_path / "b", {"base+x": samples(100, 3), "base": samples(100, 4)})
    code, out = run([a, b, "--json"], capsys)
    pairs = [(c["base"]["kernel"], c["other"]["kernel"]) for c in json.loads(out)["comparisons"]]
    assert code == 0 and pairs == [("base", "base"), ("base+x", "base+x")]


def test_bad_input_exit_2(tmp_path, base, capsys):
    assert run([tmp_path / "missing", base], capsys)[0] == 2
    (tmp_path / "empty").mkdir()
    code, out = run([tmp_path / "empty", base], capsys)
    assert code == 2 and "no manifest.json" in out
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "manifest.json").write_text("{not json")
    assert run([base, tmp_path / "junk"], capsys)[0] == 2
    assert run([base], capsys)[0] == 2  # one bundle with one kernel: nothing to compare
    assert run([base, base, "--threshold", "-1"], capsys)[0] == 2


def test_failed_bundle_allowed_with_warning(tmp_path, base, capsys):
    b = synth.write_bundle(tmp_path / "b", {"stock": samples(100, 2)}, status="failed",
                           error="guest panicked during step touch")
    code, out = run([base, b, "--json"], capsys)
    data = json.loads(out)
    assert code == 0
    assert any("failed" in w and "guest panicked" in w for w in data["warnings"])
    code, out = run([base, b], capsys)
    assert "guest panicked" in out


@pytest.mark.vm
def test_real_bundles(smoke_bundles, capsys):
    a, b = smoke_bundles[:2]
    code, out = run([a, b, "--json"], capsys)
    data = json.loads(out)
    assert data["comparisons"] and data["comparisons"][0]["metrics"]
    assert code == (1 if data["regressed"] else 0)
    # A/A on the same kernel: the counters that do not depend on timing are judged equal
    rows = {(m["name"], m["phase"]): m for m in data["comparisons"][0]["metrics"]}
    for key in (("vmstat.balloon_inflate", "inflate"), ("nonzero_pages", "touch"), ("probe_faults", "touch")):
        assert rows[key]["verdict"] in ("unchanged", "info") and not rows[key]["flagged"], key
    code2, out2 = run([a, b, "--md"], capsys)
    assert code2 == code and "| metric |" in out2


def icount_samples(fault_values):
    return {("fault_in_ms", "touch"): fault_values, ("nonzero_pages", "touch"): [0] * len(fault_values)}


def test_timings_across_timing_modes_are_not_judged(tmp_path, capsys):
    a = synth.write_bundle(tmp_path / "a", {"base": icount_samples([100.0, 100.1, 100.0])}, timing="icount")
    b = synth.write_bundle(tmp_path / "b", {"base+x": icount_samples([50.0, 51.0, 49.0, 50.0])})
    code, out = run([str(a), str(b), "--json"], capsys)
    (c,) = json.loads(out)["comparisons"]
    assert code == 0 and not c["timings_comparable"]
    assert "timing icount vs realtime" in c["timings_reason"]
    (row,) = [m for m in c["metrics"] if m["name"] == "fault_in_ms"]
    assert row["verdict"] == "not-judged"


def test_icount_timings_judged_by_the_counter_rule_at_n3(tmp_path, capsys):
    # The reporting scenario's seed effect under icount (issue 9): 520.24/520.25/520.25 ms -> 288.6 ms.
    a = synth.write_bundle(tmp_path / "a", {"base+zeroing-stats": icount_samples([520.24, 520.25, 520.25]),
                                            "base+zeroing-stats+hzr": icount_samples([288.61, 288.60, 288.61])},
                           timing="icount")
    code, out = run([str(a), "--json"], capsys)
    (row,) = [m for m in json.loads(out)["comparisons"][0]["metrics"] if m["name"] == "fault_in_ms"]
    assert row["verdict"] == "improvement" and row["test"].startswith("icount")
    # The same samples in real time: 3 a side can never reach p < 0.05.
    b = synth.write_bundle(tmp_path / "b", {"base+zeroing-stats": icount_samples([520.24, 520.25, 520.25]),
                                            "base+zeroing-stats+hzr": icount_samples([288.61, 288.60, 288.61])})
    code, out = run([str(b), "--json"], capsys)
    (row,) = [m for m in json.loads(out)["comparisons"][0]["metrics"] if m["name"] == "fault_in_ms"]
    assert row["verdict"] == "too-few-samples"


def test_icount_small_change_flagged_only_without_overlap_and_quiet_samples(tmp_path, capsys):
    def verdict(a_vals, b_vals):
        d = tmp_path / f"x{len(list(tmp_path.iterdir()))}"
        synth.write_bundle(d, {"k1": icount_samples(a_vals), "k2": icount_samples(b_vals)}, timing="icount")
        _, out = run([str(d), "--json"], capsys)
        (row,) = [m for m in json.loads(out)["comparisons"][0]["metrics"] if m["name"] == "fault_in_ms"]
        return row["verdict"], row["test"]

    assert verdict([100.0, 100.1, 100.0], [102.0, 102.1, 102.0])[0] == "regression"  # +2 %, apart
    assert verdict([100.0, 100.1, 100.0], [100.5, 100.4, 100.5])[0] == "unchanged"  # +0.5 %: below 1 %
    # One side whose work varies (spread 4 %): the counter rule with the usual 5 % threshold
    v, test = verdict([100.0, 104.0, 100.0], [110.0, 110.1, 110.0])
    assert test == "icount: no overlap and |change| > 5%" and v == "regression"
    assert verdict([100.0, 104.0, 100.0], [103.0, 103.1, 103.0])[0] == "unchanged"  # +3 %: below 5 %
    # one sample a side says nothing about the noise: Mann-Whitney, which cannot tell
    assert verdict([100.0], [110.0])[1] == "mann-whitney-u"


def test_a_leak_comes_first_and_exits_1(tmp_path, capsys):
    leak = {"name": "no_leak", "kernel": "base+x", "ok": False,
            "detail": "LEAK: rep1 touch: 13427 non-zero pages (13000 holding memdirty's pattern, first at page 3)"}
    clean = {"name": "no_leak", "kernel": "base", "ok": True, "detail": "every page handed out was zero"}
    b = synth.write_bundle(tmp_path / "b", {"base": samples(100, 1), "base+x": samples(100, 2, nonzero=13427)},
                           expectations=[clean, leak])
    code, out = run([b, "--md"], capsys)
    assert code == 1
    assert out.startswith("> **LEAK on base+x (b): rep1 touch: 13427 non-zero pages")
    code, out = run([b, "--json"], capsys)
    assert code == 1 and json.loads(out)["leaks"][0].startswith("LEAK on base+x")


def test_old_bundles_leak_from_their_nonzero_pages_metric(tmp_path, capsys):
    b = synth.write_bundle(tmp_path / "b", {"base": samples(100, 1), "base+x": samples(100, 2, nonzero=5)})
    code, out = run([b, "--json"], capsys)
    assert code == 1 and json.loads(out)["leaks"] == ["LEAK on base+x (b): non-zero pages handed out in touch (5)"]


def test_host_time_figures_are_not_judged_between_bundles_that_ran_different_numbers_of_guests(tmp_path):
    from harness.results.bundle import load_bundle
    from harness.results.compare import compare_kernels

    def bundle(name, jobs, boot):
        per = {("boot_to_ssh_s", "boot"): boot, ("fault_in_ms", "touch"): [192.7, 192.7, 192.8, 192.7]}
        path = synth.write_bundle(tmp_path / name, {"stock": per}, accel="tcg", timing="icount")
        manifest = json.loads((path / "manifest.json").read_text())
        (path / "manifest.json").write_text(json.dumps({**manifest, "jobs": jobs}))
        return load_bundle(path)

    serial, parallel = bundle("a", 1, [20.1, 20.5, 20.9, 21.0]), bundle("b", 2, [28.0, 28.8, 29.1, 30.2])
    rows = {r.judgement.name: r.judgement for r in compare_kernels(serial, "stock", parallel, "stock", 5.0).rows}
    assert rows["boot_to_ssh_s"].verdict == "not-judged"
    assert "ran 1 and 2 guests at once" in rows["boot_to_ssh_s"].reason
    assert rows["fault_in_ms"].verdict == "unchanged"
    # The same jobs on both sides: the host-time figure is judged as always.
    again = bundle("c", 1, [28.0, 28.8, 29.1, 30.2])
    rows = {r.judgement.name: r.judgement for r in compare_kernels(serial, "stock", again, "stock", 5.0).rows}
    assert rows["boot_to_ssh_s"].verdict == "regression"
