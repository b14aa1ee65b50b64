"""The selftest gate of `harness compare`, the selftest table and JUnit cases, on synthetic bundles."""

import argparse
import json
import xml.etree.ElementTree as ET

import bundle_synth as synth

from harness.commands import compare, table
from harness.results.junit import write_junit


def run(module, argv, capsys):
    parser = argparse.ArgumentParser(prog="harness")
    module.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args), capsys.readouterr().out


def bundle(path, per_kernel: dict) -> object:
    """per_kernel: {kernel: [rep1 results, rep2 results, ...]}, each {(test, case): result}."""
    synth.write_bundle(path, {k: {("kselftest_pass", "selftests"): [1.0]} for k in per_kernel})
    for kernel, reps in per_kernel.items():
        for rep, results in enumerate(reps, 1):
            d = path / kernel / f"rep{rep}"
            d.mkdir(parents=True, exist_ok=True)
            rows = [{"suite": "mm", "phase": "selftests", "test": t, "case": c, "result": r,
                     "reason": "no hugetlb pages" if r == "skip" else "EEXIST expected" if r == "fail" else "",
                     "log": "# mmap(MAP_FIXED_NOREPLACE) succeeded"} for (t, c), r in results.items()]
            (d / "kselftest.json").write_text(json.dumps(rows))
    return path


GOOD = {("map_fixed_noreplace", "overlap"): "pass", ("cow", "anon"): "pass", ("hugepage-mmap", "hugepage-mmap"): "skip"}


def test_pass_on_baseline_and_fail_on_candidate_is_a_regression(tmp_path, capsys):
    bad = {**GOOD, ("map_fixed_noreplace", "overlap"): "fail"}
    b = bundle(tmp_path / "b", {"base": [GOOD, GOOD], "base+break": [bad, bad]})
    code, out = run(compare, ["compare", str(b)], capsys)
    assert code == 1
    assert "REGRESSION selftest map_fixed_noreplace: overlap: passed on the baseline, fails on the candidate" in out
    code, out = run(compare, ["compare", str(b), "--json"], capsys)
    (c,) = json.loads(out)["comparisons"]
    assert c["selftests"]["regressions"] == ["map_fixed_noreplace: overlap"] and json.loads(out)["regressed"]


def test_mixed_results_are_named_flaky_not_a_regression(tmp_path, capsys):
    bad = {**GOOD, ("cow", "anon"): "fail"}
    b = bundle(tmp_path / "b", {"base": [GOOD, GOOD], "base+x": [GOOD, bad]})
    code, out = run(compare, ["compare", str(b), "--md"], capsys)
    assert code == 0
    assert "FLAKY selftest cow: anon (base+x: pass, fail)" in out
    assert "0 regression(s), 1 flaky" in out


def test_same_results_and_two_bundles(tmp_path, capsys):
    a = bundle(tmp_path / "a", {"base": [GOOD]})
    b = bundle(tmp_path / "b", {"base+x": [GOOD]})
    code, out = run(compare, ["compare", str(a), str(b)], capsys)
    assert code == 0 and "selftests: 0 regression(s), 0 flaky, 0 fixed, 3 case(s) compared" in out


def test_table_and_junit(tmp_path, capsys):
    bad = {**GOOD, ("map_fixed_noreplace", "overlap"): "fail"}
    b = bundle(tmp_path / "b", {"base": [GOOD], "base+break": [bad]})
    code, out = run(table, ["table", str(b), "--selftests"], capsys)
    assert code == 0
    assert "| map_fixed_noreplace | 1 pass | 0 pass, **1 fail** |  |" in out
    assert "| hugepage-mmap | skip | skip | no hugetlb pages |" in out
    assert "- base+break rep1: map_fixed_noreplace: overlap (EEXIST expected)" in out
    write_junit(tmp_path / "j.xml", [b])
    cases = ET.parse(tmp_path / "j.xml").getroot().findall(".//testcase")
    by_name = {(c.get("classname"), c.get("name")): c for c in cases}
    failed = by_name[("smoke.base+break.mm.map_fixed_noreplace", "overlap (rep1)")]
    assert "EEXIST expected" in failed.find("failure").text and "MAP_FIXED_NOREPLACE" in failed.find("failure").text
    assert by_name[("smoke.base.mm.hugepage-mmap", "hugepage-mmap (rep1)")].find("skipped").get("message") == \
        "no hugetlb pages"
    assert by_name[("smoke.base.mm.cow", "anon (rep1)")].find("failure") is None


def test_a_test_that_bails_out_on_the_candidate_is_a_regression(tmp_path, capsys):
    base = {("map_fixed_noreplace", "a"): "pass", ("map_fixed_noreplace", "b"): "pass", ("cow", "anon"): "pass"}
    bailed = {("map_fixed_noreplace", "a"): "pass", ("map_fixed_noreplace", "(exit status)"): "fail",
              ("cow", "anon"): "pass"}
    b = bundle(tmp_path / "b", {"base": [base, base], "base+break": [bailed, bailed]})
    code, out = run(compare, ["compare", str(b), "--json"], capsys)
    assert code == 1
    (c,) = json.loads(out)["comparisons"]
    assert c["selftests"]["regressions"] == ["map_fixed_noreplace: (exit status)"]
