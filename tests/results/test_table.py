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
