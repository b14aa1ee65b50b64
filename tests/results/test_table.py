"""`harness table`: README figures from bundles, with where they came from."""

from __future__ import annotations

import argparse

import bundle_synth as synth

from harness.commands import table


def run(argv, capsys):
    parser = argparse.ArgumentParser(prog="harness")
    table.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["table", *map(str, argv)])
    return args.func(args), capsys.readouterr().out


def test_medians_per_kernel_with_provenance(tmp_path, capsys):
    b = synth.write_bundle(tmp_path / "20261130T010000Z-reporting-x", {
        "base": {("fault_in_ms", "touch"): [10.0, 12.0, 11.0], ("nonzero_pages", "touch"): [0, 0, 0]},
        "base+s": {("fault_in_ms", "touch"): [5.0, 6.0, 7.0], ("nonzero_pages", "touch"): [0, 0, 0]},
    }, scenario="reporting", timing="icount", accel="tcg")
    code, out = run([b, "--metric", "fault_in_ms@touch", "--metric", "nonzero_pages"], capsys)
    assert code == 0
    first, _, header, _, fault, nonzero = out.splitlines()
    assert "`reporting`" in first and "tcg" in first and "timing icount" in first and "3 repetition(s)" in first
    assert header == "| metric | phase | `base` | `base+s` |"
    assert fault == "| fault_in_ms | touch | 11 (n=3) | 6 (n=3) |"
    assert nonzero == "| nonzero_pages | all | 0 (n=3) | 0 (n=3) |"


def test_default_rows_skip_all_zero_metrics(tmp_path, capsys):
    b = synth.write_bundle(tmp_path / "b", {"stock": {("fault_in_ms", "touch"): [3.0],
                                                      ("vmstat.pgzero_alloc", "touch"): [0]}})
    _, out = run([b], capsys)
    assert "fault_in_ms" in out and "pgzero_alloc" not in out


def test_only_the_kernels_asked_for(tmp_path, capsys):
    b = synth.write_bundle(tmp_path / "b", {k: {("fault_in_ms", "touch"): [1.0]} for k in ("base", "base+a", "base+b")})
    _, out = run([b, "--kernel", "base", "--kernel", "base+b"], capsys)
    assert "| metric | phase | `base` | `base+b` |" in out


def test_by_bundle_a_row_per_configuration_with_the_change_against_the_first_kernel(tmp_path, capsys):
    # The fault-scale scenarios: the same kernels with the opt-ins off and on, one bundle each.
    kw = {"timing": "icount", "accel": "tcg"}
    off = synth.write_bundle(tmp_path / "off", {"base": {("fault_ops_per_s", "page_fault1"): [1000.0, 1000.0, 1000.0]},
                                                "base+s": {("fault_ops_per_s", "page_fault1"): [990.0, 990.0, 990.0]}},
                             scenario="fault-scale-off-1cpu", **kw)
    on = synth.write_bundle(tmp_path / "on", {"base": {("fault_ops_per_s", "page_fault1"): [800.0, 800.0]},
                                              "base+s": {("fault_ops_per_s", "page_fault1"): [1000.0, 1000.0]}},
                            scenario="fault-scale-on-1cpu", reps=2, **kw)
    code, out = run([off, on, "--by-bundle", "--metric", "fault_ops_per_s@page_fault1"], capsys)
    assert code == 0
    first, second, _, header, _, row_off, row_on = out.splitlines()
    assert first.startswith("From [1] `fault-scale-off-1cpu`") and second.startswith("From [2] `fault-scale-on-1cpu`")
    assert header == "| configuration | metric | phase | `base` | `base+s` |"
    assert row_off == "| `fault-scale-off-1cpu` [1] | fault_ops_per_s | page_fault1 | 1000 (n=3) | 990 (n=3) -1.00 % |"
    assert row_on == "| `fault-scale-on-1cpu` [2] | fault_ops_per_s | page_fault1 | 800 (n=2) | 1000 (n=2) +25.00 % |"


def test_by_bundle_refuses_a_kernel_missing_from_a_bundle(tmp_path, capsys):
    import pytest

    from harness.errors import InputError

    a = synth.write_bundle(tmp_path / "a", {"base": {("x", "p"): [1.0]}, "base+s": {("x", "p"): [1.0]}})
    b = synth.write_bundle(tmp_path / "b", {"base": {("x", "p"): [1.0]}})
    with pytest.raises(InputError, match="needs every kernel in every bundle: b has no base\\+s"):
        run([a, b, "--by-bundle", "--kernel", "base", "--kernel", "base+s"], capsys)
