"""Exact event counts from tracefs without hist triggers and without reading a trace.

Each counter is a tracefs instance (/sys/kernel/tracing/instances/NAME) with one event enabled under a
filter and a tiny ring buffer that nothing reads.  Its per-CPU ``stats`` keep counting what the buffer
could not hold: in overwrite mode a full buffer drops its oldest page and adds that page's events to
``overrun``, so ``entries + overrun + read events`` summed over the CPUs is the number of events that
passed the filter since the instance was made.  ``commit overrun`` and ``dropped events`` count events
that were lost without being counted; a count with any of those is not exact and is reported as such.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from harness.machine.qemu_argv import TRACE_BUFFER_KB

TRACING = "/sys/kernel/tracing"
BUFFER_KB = TRACE_BUFFER_KB  # per CPU; the kernel rounds it up to a page or two
ROUNDED_KB_MAX = 2 * BUFFER_KB  # what an instance of BUFFER_KB reads back at most (7 for 4)
STATS_LINE = re.compile(r"/instances/(?P<name>[^/]+)/per_cpu/cpu\d+/stats:(?P<key>[a-z ]+): (?P<value>\d+)$")
COUNTED = ("entries", "overrun", "read events")
UNCOUNTED = ("commit overrun", "dropped events")


@dataclass(frozen=True)
class Counter:
    """Events of `event` (``group/name``) that pass `filter`, counted by instance `name`."""

    name: str
    event: str
    filter: str


@dataclass(frozen=True)
class Count:
    events: int
    lost: int  # events dropped without being counted (then `events` is a lower bound)


def setup_script(counters: list[Counter], prefix: str) -> str:
    """Shell that makes every counter's instance; it stops at the first failure, naming the counter.
    An instance the guest's trace_buf_size already made small is not resized: a resize costs a grace period
    even to the same size.  (Short lines: dropbear refuses a command longer than 9000 bytes.)"""
    lines = [f"T={TRACING}",
             f'c() {{ i=$T/instances/$1; mkdir $i && read kb _ < $i/buffer_size_kb && {{ [ "$kb" -le {ROUNDED_KB_MAX} ]'
             f' || echo {BUFFER_KB} > $i/buffer_size_kb; }}'
             ' && echo "$3" > $i/events/$2/filter && echo 1 > $i/events/$2/enable'
             ' || { echo "$2 with filter \'$3\' refused: $(tail -n 3 $T/error_log 2>/dev/null)" >&2; exit 1; }; }']
    lines += [f"c {c.name} {c.event} {shlex.quote(c.filter)}" for c in counters]
    lines.append(f"ls -d $T/instances/{prefix}* | wc -l")
    return "\n".join(lines)


def stats_files(prefix: str) -> str:
    """A shell glob of the per-CPU stats files of every instance named prefix*."""
    return f"{TRACING}/instances/{prefix}*/per_cpu/cpu*/stats"


def parse_stats(text: str) -> dict[str, Count]:
    """`grep -H . STATS_FILES` output: per instance, events counted and events lost, summed over the CPUs."""
    events: dict[str, int] = {}
    lost: dict[str, int] = {}
    for line in text.splitlines():
        m = STATS_LINE.search(line.strip())
        if not m:
            continue
        name, key, value = m.group("name"), m.group("key"), int(m.group("value"))
        events.setdefault(name, 0)
        lost.setdefault(name, 0)
        if key in COUNTED:
            events[name] += value
        elif key in UNCOUNTED:
            lost[name] += value
    return {name: Count(events[name], lost[name]) for name in events}

