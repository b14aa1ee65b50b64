"""`harness bench boot`'s kernel figure: when the guest's kernel started /init, read from its log."""

import math

from harness.commands.bench import guest_clock_at_init

DMESG = """\
[    1.397723] Freeing unused kernel image (initmem) memory: 4024K
[    1.405027] x86/mm: Checked W+X mappings: passed, no W+X pages found.
[    1.405289] Run /init as init process
[    1.405372]     with arguments:
[   12.000001] Run /init as init process
"""


def test_the_first_run_init_line_gives_the_guest_clock():
    assert guest_clock_at_init(DMESG) == 1.405289


def test_a_log_without_the_line_gives_nan_not_a_figure():
    assert math.isnan(guest_clock_at_init("[    0.000000] Linux version 6.12\n[    1.0] Run /sbin/init\n"))
