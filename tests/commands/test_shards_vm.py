"""The small nightly matrix on real guests, run on one shard and on two (`harness nightly --shards N`): the
same cells, each whole on one runner, and the same counter verdicts."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from harness.paths import REPO_ROOT
from harness.results import metrics
from harness.results.bundle import load_bundle
from harness.results.calibration import Calibration
from harness.results.compare import run_compare
from harness.results.history import load_night
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


MARGIN = 1.5  # a change within this factor of a threshold is judged by the night's noise, not by the kernels


def counter_verdicts(merged: Path, merge: Merge) -> dict[tuple[str, str, str, str], tuple[str, float, float]]:
    """(cell, kernel, counter, phase) -> (verdict against the cell's baseline kernel, |change| %, threshold %),
    judged as the night's report judges it (thresholds from the night's own A/A cell)."""
    calibration = Calibration.from_nights([load_night(merged)])
    assert calibration, "the small nightly's A/A cell gave no calibration"
    verdicts = {}
    for cell in merge.cells:
        if len(cell.kernels) < 2:  # an A/A cell: one kernel, nothing to judge it against
            continue
        bundle = load_bundle(merged / cell.bundle)
        threshold = calibration.threshold_for(bundle, 5.0)
        for comparison in run_compare(bundle, None, 5.0, threshold):
            for row in comparison.rows:
                j = row.judgement
                if metrics.definition(j.name).kind == metrics.COUNTER:
                    verdicts[(cell.id, comparison.other, j.name, row.phase)] = (
                        j.verdict, abs(j.change_pct), threshold(j.name, row.phase).pct)
    return verdicts


def clear(one: tuple[str, float, float], two: tuple[str, float, float]) -> bool:
    """Both nights' changes are clear of both nights' thresholds: over MARGIN times the larger, or under the
    smaller divided by MARGIN."""
    low, high = min(one[2], two[2]), max(one[2], two[2])
    return all(not math.isfinite(c) or c > MARGIN * high or c < low / MARGIN for c in (one[1], two[1]))


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
    """The same verdict for every counter whose change is clear of both nights' thresholds.  A counter
    counted over a host-timed step (wait_reporting's settling: how many guest timer ticks pass depends on the
    host's load, even under icount) changes between two runs of one kernel, and each night's two-sample A/A
    cell estimates that noise differently (seen: zeroing.alloc_pages@reporting +35 % against a threshold of
    37 % in one night, +39 % against 2.4 % in the other; zeroing.alloc_pages@end -5.6 % against 10.3 %, then
    -4.2 % against 1.0 %); such a verdict is a coin toss whatever the sharding."""
    (one_dir, one), (two_dir, two) = nights[1], nights[2]
    one_v, two_v = counter_verdicts(one_dir / "merged", one), counter_verdicts(two_dir / "merged", two)
    assert one_v and one_v.keys() == two_v.keys()
    judged = [k for k in one_v if clear(one_v[k], two_v[k])]
    assert len(judged) >= 0.75 * len(one_v), f"only {len(judged)} of {len(one_v)} counter verdicts are clear"
    assert {k: one_v[k][0] for k in judged} == {k: two_v[k][0] for k in judged}
