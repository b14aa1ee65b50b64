"""The small nightly matrix on real guests, run on one shard and on two (`harness nightly --shards N`): the
same cells, each whole on one runner, and the same counter verdicts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.paths import REPO_ROOT
from harness.results import metrics
from harness.results.bundle import load_bundle
from harness.results.compare import run_compare
from harness.results.shards import Merge, load_merge

pytestmark = [pytest.mark.vm, pytest.mark.kernels]  # about 10 minutes under TCG: 2 x 4 icount boots

MATRIX = REPO_ROOT / "scenarios" / "nightly-small.yaml"


def sharded_night(night: Path, shards: int) -> Merge:
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "nightly", MATRIX, "--shards", str(shards),
                           "--results", night], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    merge = load_merge(night / "merged")
    assert merge is not None and not merge.problems
    assert (night / "report" / "index.html").is_file()
    return merge


def counter_verdicts(merged: Path, merge: Merge) -> dict[tuple[str, str, str, str], str]:
    """(cell, kernel, counter, phase) -> verdict against the cell's baseline kernel."""
    verdicts = {}
    for cell in merge.cells:
        if len(cell.kernels) < 2:  # an A/A cell: one kernel, nothing to judge it against
            continue
        for comparison in run_compare(load_bundle(merged / cell.bundle), None, 5.0):
            for row in comparison.rows:
                if metrics.definition(row.judgement.name).kind == metrics.COUNTER:
                    verdicts[(cell.id, comparison.other, row.judgement.name, row.phase)] = row.judgement.verdict
    return verdicts


@pytest.fixture(scope="module")
def nights(tmp_path_factory):
    root = tmp_path_factory.mktemp("nights")
    return {n: (root / f"shards{n}", sharded_night(root / f"shards{n}", n)) for n in (1, 2)}


def test_one_shard_and_two_shards_run_the_same_cells(nights):
    one, two = nights[1][1], nights[2][1]
    assert len(one.plan.shards) == 1 and len(two.plan.shards) == 2
    cells = {c.id: (c.scenario, c.kernels, c.aa, c.status) for c in one.cells}
    assert cells == {c.id: (c.scenario, c.kernels, c.aa, c.status) for c in two.cells}
    assert all(status == "complete" for *_, status in cells.values()) and len(cells) == len(one.plan.cells)
    assert sorted(two.runners) == ["s1", "s2"] and {c.shard for c in two.cells} == {"s1", "s2"}
    for night_dir, merge in nights.values():
        for c in merge.cells:  # a cell is one bundle: every kernel of it ran interleaved on one runner
            bundle = load_bundle(night_dir / "merged" / c.bundle)
            assert [k.spec for k in bundle.manifest.kernels] == c.kernels
            # the matrix asks for icount: TCG counts instructions, KVM records realtime (no instruction counting)
            assert bundle.manifest.timing == ("icount" if bundle.manifest.accel == "tcg" else "realtime")
            assert merge.runners[c.shard].cpu == bundle.manifest.host.cpu


def test_one_shard_and_two_shards_give_the_same_counter_verdicts(nights):
    (one_dir, one), (two_dir, two) = nights[1], nights[2]
    one_v, two_v = counter_verdicts(one_dir / "merged", one), counter_verdicts(two_dir / "merged", two)
    assert one_v and one_v == two_v
