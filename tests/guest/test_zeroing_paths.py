"""/proc/zeroing_sources parsing and the partition of zeroed pages into paths (no guest needed)."""

from __future__ import annotations

import pytest

from harness.errors import HarnessError
from harness.guest import zeroing_paths as zp

# As the zeroing-sources kernel prints it (values from a real extended-stack guest are larger).
SAMPLE = """zeroed movable pcp_recycled - plain 40
zeroed movable pcp_refill 3 plain 120
zeroed movable pcp_refill 9 plain 7
zeroed movable pcp_refill 10 remnant 30
zeroed movable buddy 9 reported 2
zeroed kernel pcp_refill 0 plain 5
zeroed kernel pcp_recycled - plain 3
skipped movable pcp_refill 9 reported 500
skipped movable other 10 remnant 11
"""


def test_parse_reads_every_field():
    counts = zp.parse(SAMPLE)
    assert counts[zp.Key("zeroed", "movable", "pcp_recycled", None, "plain")] == 40
    assert counts[zp.Key("zeroed", "movable", "pcp_refill", 10, "remnant")] == 30
    assert sum(counts.values()) == 718


@pytest.mark.parametrize("line", ["zeroed movable pcp_refill 3 plain", "zeroed user pcp_refill 3 plain 1",
                                  "zeroed movable pcp_refill x plain 1", "zeroed movable pcp_refill 3 plain -1"])
def test_parse_rejects_malformed_lines(line):
    with pytest.raises(HarnessError, match="line 1 is not"):
        zp.parse(line + "\n")


def test_breakdown_partitions_the_zeroed_pages():
    parts = zp.breakdown(zp.parse(SAMPLE), reporting_order=9)
    z = {name.removeprefix("zeroing_paths.zeroed."): v for name, v in parts.items()
         if name.startswith("zeroing_paths.zeroed.")}
    assert parts["zeroing_paths.zeroed"] == 207
    assert z == {"kernel": 8, "user.pcp_recycled": 40, "user.reported": 2, "user.remnant": 30,
                 "user.unreported_low": 120, "user.unreported_high": 7,
                 "user.via_pcp_refill": 157, "user.via_buddy": 2, "user.via_other": 0}
    assert sum(z[p] for p in zp.PARTS) == parts["zeroing_paths.zeroed"]
    assert parts["zeroing_paths.skipped"] == 511
    assert parts["zeroing_paths.skipped.user.reported"] == 500
    assert parts["zeroing_paths.skipped.user.via_other"] == 11


def test_reporting_order_moves_the_low_high_line():
    parts = zp.breakdown(zp.parse(SAMPLE), reporting_order=3)
    assert parts["zeroing_paths.zeroed.user.unreported_low"] == 0
    assert parts["zeroing_paths.zeroed.user.unreported_high"] == 127


def test_every_metric_is_present_even_when_nothing_was_zeroed():
    parts = zp.breakdown({}, reporting_order=9)
    assert parts["zeroing_paths.zeroed"] == 0 and parts["zeroing_paths.skipped.kernel"] == 0
    assert len(parts) == 2 * (1 + len(zp.PARTS) + len(zp.VIA_PARTS))


def test_delta_drops_unchanged_counters():
    before = zp.Snapshot(zp.parse("zeroed movable pcp_refill 3 plain 10\nzeroed kernel pcp_refill 0 plain 4\n"), 9, {}, 0, {})
    after = zp.Snapshot(zp.parse("zeroed movable pcp_refill 3 plain 25\nzeroed kernel pcp_refill 0 plain 4\n"
                                 "skipped movable pcp_refill 9 reported 3\n"), 9, {}, 0, {})
    assert zp.delta(before, after) == {zp.Key("zeroed", "movable", "pcp_refill", 3, "plain"): 15,
                                       zp.Key("skipped", "movable", "pcp_refill", 9, "reported"): 3}


ZONEINFO = """Node 0, zone    DMA32
  pages free     402134
  pagesets
    cpu: 0
              count: 1532
              high:  2048
              batch: 63
    cpu: 1
              count: 61
              high:  2048
"""
PAGETYPEINFO = """Page block order: 9
Free pages count per migrate type at order       0      1      2      3      4      5      6      7      8      9     10
Node    0, zone      DMA, type    Unmovable      0      0      0      0      0      0      0      0      0      0      0
Node    0, zone      DMA, type      Movable      1      0      0      1      1      1      1      1      0      1      3
Node    0, zone    DMA32, type      Movable     10      4      2      0      0      0      0      0      1      5    300
Node    0, zone    DMA32, type  Reclaimable      7      0      0      0      0      0      0      0      0      0      0

Number of blocks type     Unmovable      Movable  Reclaimable   HighAtomic      Isolate
Node 0, zone      DMA            1            7            0            0            0
"""


def test_free_memory_at_the_start_of_a_step():
    assert zp.parse_pcp_pages(ZONEINFO) == 1593
    free = zp.parse_movable_free(PAGETYPEINFO)
    assert free[0] == 11 and free[10] == 303 and free[8] == 1
    snap = zp.Snapshot({}, 9, {}, 1593, free)
    assert zp.free_pages_below(snap, 9) == 11 + 4 * 2 + 2 * 4 + 8 + 16 + 32 + 64 + 128 + 256
