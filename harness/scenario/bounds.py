"""Bounded numbers for scenario files: every duration, count and amount has its range, checked when the file
is loaded, so `timeout_s: -5` is bad input (exit 2) and never a run that quietly does nothing.

Each type takes an int or a float (never a bool or a string), refuses NaN and infinity, and says in one
line which range it wanted.  A field with a range of its own writes
``Annotated[Number, in_range(0, 600), json_range(0, 600)]`` (tests/scenario/test_bounds.py requires both
ends of every number's range in the exported JSON Schema).
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema

from harness.validation import problem

MAX_SECONDS = 24 * 3600  # no step waits longer than a day
MAX_REPETITIONS = 1000
MAX_ITERATIONS = 10_000_000
MAX_MIB = 1024 * 1024  # 1 TiB

Number = int | float


def in_range(low: float, high: float, *, above: bool = False, whole: bool = False) -> BeforeValidator:
    """A check of `low <= value <= high` (`low < value` when `above`)."""
    def check(value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int if whole else int | float):
            raise problem(f"expected {'a whole number' if whole else 'a number'}, got {value!r}")
        if not math.isfinite(value):
            raise problem(f"expected a finite number, got {value!r}")
        if value < low or (above and value == low):
            raise problem(f"must be {'more than' if above else 'at least'} {low:g}, got {value!r}")
        if value > high:
            raise problem(f"must be at most {high:g}, got {value!r}")
        return value
    return BeforeValidator(check)


def json_range(low: float, high: float, *, above: bool = False, whole: bool = False) -> WithJsonSchema:
    return WithJsonSchema({"type": "integer" if whole else "number", "maximum": high,
                           ("exclusiveMinimum" if above else "minimum"): low})


# A timeout, or a time something runs for: more than 0 s, at most a day.
Seconds = Annotated[Number, in_range(0, MAX_SECONDS, above=True), json_range(0, MAX_SECONDS, above=True)]
# A loop of guest time a probe runs for (faultscale): more than 0 s, at most 10 minutes.
ProbeSeconds = Annotated[Number, in_range(0, 600, above=True), json_range(0, 600, above=True)]
# A wait that may be 0 s (sleep 0, no quiet spell).
SecondsOrZero = Annotated[Number, in_range(0, MAX_SECONDS), json_range(0, MAX_SECONDS)]
# Whole seconds, 0 meaning "off" (the balloon's statistics interval).
IntervalS = Annotated[int, in_range(0, 3600, whole=True), json_range(0, 3600, whole=True)]
Repetitions = Annotated[int, in_range(1, MAX_REPETITIONS, whole=True),
                        json_range(1, MAX_REPETITIONS, whole=True)]
Iterations = Annotated[int, in_range(1, MAX_ITERATIONS, whole=True),
                       json_range(1, MAX_ITERATIONS, whole=True)]
PageCount = Annotated[int, in_range(0, MAX_MIB * 256, whole=True), json_range(0, MAX_MIB * 256, whole=True)]
MiB = Annotated[Number, in_range(0, MAX_MIB), json_range(0, MAX_MIB)]
# A bound an expectation compares a metric with: any finite number.
Finite = Annotated[Number, in_range(-math.inf, math.inf), WithJsonSchema({"type": "number"})]
Ratio = Annotated[Number, in_range(0, 1e9, above=True), json_range(0, 1e9, above=True)]
# A rate of memory: more than 0 MiB/s, at most 1 TiB/s (a migration's bandwidth cap).
MiBPerS = Annotated[int, in_range(1, MAX_MIB, whole=True), json_range(1, MAX_MIB, whole=True)]

SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT])(?:i?B)?\s*$", re.IGNORECASE)
SIZE_JSON_PATTERN = r"^\s*[0-9]+(\.[0-9]+)?\s*[KMGTkmgt]([iI]?[bB])?\s*$"  # SIZE for JSON Schema (no flags)
UNIT_MIB = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}


def _size_mib(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise problem(f"expected a size like 512M or 2G, got {value!r}")
    m = SIZE.match(str(value))
    if not m:
        raise problem(f"expected a size with a unit like 512M or 2G, got {value!r}")
    mib = float(m.group(1)) * UNIT_MIB[m.group(2).upper()]
    if mib < 1 or mib != int(mib):
        raise problem(f"size {value!r} is not a whole number of MiB")
    return int(mib)


SizeMiB = Annotated[int, BeforeValidator(_size_mib),
                    WithJsonSchema({"type": "string", "pattern": SIZE_JSON_PATTERN,
                                    "description": "a size with a unit: 512M, 2G"})]
