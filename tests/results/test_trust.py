"""The trust matrix: leaks, skipped zeroing and checks per design and host condition; a design that skipped
zeroing where nothing was checked makes the matrix fail."""

from __future__ import annotations

import subprocess
import sys

from bundle_synth import write_bundle

from harness.results.bundle import load_bundle
from harness.results.trust import render

BASE, SEED = "base+zeroing-stats", "base+zeroing-stats+balloon-opt-ins+host-zeroed-reporting"
BASE_ROW, SEED_ROW = "baseline", "seed002"  # a row is shown by its stack's name (kernel_patches/stacks.yaml)


def test_cells_say_leak_safe_and_never_skipped(tmp_path):
    discard = write_bundle(tmp_path / "a", {
        BASE: {("nonzero_pages", "touch"): [0]},
        SEED: {("nonzero_pages", "touch"): [0], ("vmstat.pgzero_skip_reported", "touch"): [900]}},
        scenario="stale-data", reps=1)
    postcopy = write_bundle(tmp_path / "b", {
        BASE: {("nonzero_pages", "touch"): [0]},
        SEED: {("nonzero_pages", "touch"): [74], ("vmstat.pgzero_skip_reported", "touch"): [80],
               ("vmstat.pgzero_skip_deflated", "touch2"): [20]}},
        scenario="stale-data-postcopy", reps=1)
    text, sound = render([load_bundle(discard), load_bundle(postcopy)])
    assert sound
    rows = {line.split(" | ")[0].strip("| `"): line for line in text.splitlines() if line.startswith("| `")}
    assert "| design | `stale-data` | `stale-data-postcopy` |" in text
    assert rows[BASE_ROW].count("safe (never skipped; 1 checks)") == 2
    assert "safe (skipped 900; 1 checks)" in rows[SEED_ROW] and "**LEAK** 74 (skipped 100; 1 checks)" in rows[SEED_ROW]


def test_bundles_of_one_condition_share_a_column(tmp_path):
    one = write_bundle(tmp_path / "a", {BASE: {("nonzero_pages", "touch"): [0]}}, scenario="stale-data-postcopy",
                       reps=1)
    two = write_bundle(tmp_path / "b", {SEED: {("nonzero_pages", "touch"): [56],
                                               ("vmstat.pgzero_skip_reported", "touch"): [60]}},
                       scenario="stale-data-postcopy", reps=1)
    text, sound = render([load_bundle(one), load_bundle(two)])
    assert sound and "| design | `stale-data-postcopy` |" in text
    assert f"| `{BASE_ROW}` | safe (never skipped; 1 checks) |" in text
    assert f"| `{SEED_ROW}` | **LEAK** 56 (skipped 60; 1 checks) |" in text


def test_skipping_with_nothing_checked_fails_the_matrix(tmp_path):
    b = write_bundle(tmp_path / "a", {SEED: {("vmstat.pgzero_skip_reported", "reporting"): [512]}},
                     scenario="stale-data-bgsnapshot", reps=1)
    text, sound = render([load_bundle(b)])
    assert not sound and "**UNCHECKED** (skipped 512; 0 checks)" in text
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "trust", str(b)], capture_output=True, text=True)
    assert proc.returncode == 1 and "UNCHECKED" in proc.stderr and "**UNCHECKED**" in proc.stdout


def test_a_flavoured_kernel_is_its_design_and_a_refusal_in_its_log_is_shown(tmp_path):
    poison = write_bundle(tmp_path / "p", {f"{BASE}%page-poison": {("nonzero_pages", "touch"): [0]},
                                           f"{SEED}%page-poison": {("nonzero_pages", "touch"): [0]}},
                          scenario="stale-data-page-poison", reps=1)
    (poison / f"{SEED}%page-poison" / "rep0" / "dmesg.txt").write_text(
        "virtio_balloon virtio0: page poisoning active, not trusting host to zero reported pages\n")
    (poison / f"{BASE}%page-poison" / "rep0" / "dmesg.txt").write_text("Free page reporting enabled\n")
    discard = write_bundle(tmp_path / "d", {SEED: {("nonzero_pages", "touch"): [0]}}, scenario="stale-data", reps=1)
    text, sound = render([load_bundle(discard), load_bundle(poison)])
    rows = {line.split(" | ")[0].strip("| `"): line for line in text.splitlines() if line.startswith("| `")}
    assert sound and set(rows) == {BASE_ROW, SEED_ROW}, text
    assert "safe (refused to trust; never skipped; 1 checks; as `%page-poison`)" in rows[SEED_ROW]
    assert "safe (never skipped; 1 checks; as `%page-poison`)" in rows[BASE_ROW] and "refused" not in rows[BASE_ROW]
    assert rows[BASE_ROW].startswith(f"| `{BASE_ROW}` | not run |")


def test_a_directory_stands_for_every_bundle_below_it(tmp_path):
    write_bundle(tmp_path / "night" / "shard-0" / "a", {BASE: {("nonzero_pages", "touch"): [0]}}, scenario="stale-data",
                 reps=1)
    write_bundle(tmp_path / "night" / "shard-1" / "b", {SEED: {("nonzero_pages", "touch"): [3]}},
                 scenario="stale-data-mlock", reps=1)
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "trust", str(tmp_path / "night")], capture_output=True,
                          text=True)
    assert proc.returncode == 0 and "| design | `stale-data` | `stale-data-mlock` |" in proc.stdout, proc.stderr
    assert "- `a` (complete)" in proc.stdout and "- `b` (complete)" in proc.stdout
    empty = subprocess.run([sys.executable, "-m", "harness.cli", "trust", str(tmp_path)], capture_output=True, text=True)
    assert empty.returncode == 0  # tmp_path holds the two bundles too
    nothing = tmp_path / "nothing"
    nothing.mkdir()
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "trust", str(nothing)], capture_output=True, text=True)
    assert proc.returncode == 2 and "no bundle below it" in proc.stderr


def test_a_run_that_failed_before_any_check_is_failed_not_unchecked(tmp_path):
    b = write_bundle(tmp_path / "a", {SEED: {("vmstat.pgzero_skip_reported", "reporting"): [512]}},
                     scenario="stale-data-hugetlb-order5", reps=1, status="failed",
                     error="run failed: guest command timed out after 360 s: memdirty 1200")
    text, sound = render([load_bundle(b)])
    assert sound and "| **FAILED** before any check (skipped 512; 0 checks) |" in text
    assert "(failed: run failed: guest command timed out after 360 s: memdirty 1200)" in text


def test_a_run_that_stopped_on_one_design_is_failed_for_that_design_only(tmp_path):
    b = write_bundle(tmp_path / "a", {BASE: {("nonzero_pages", "touch"): [0]},
                                      SEED: {("nonzero_pages", "touch"): [7]}},
                     scenario="stale-data-postcopy", reps=1, status="failed",
                     error="run failed: guest command timed out after 240 s: memtouch 600")
    rows = {line.split(" | ")[0].strip("| `"): line for line in render([load_bundle(b)])[0].splitlines()
            if line.startswith("| `")}
    assert "[failed]" not in rows[BASE_ROW] and rows[SEED_ROW].endswith("[failed] |")
