"""The `expect:` section of a scenario file: what a run must show, checked by harness.scenario.expectations
once it ends; what can be checked before anything boots (bounds, phases) is checked when the file loads."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from harness.scenario.bounds import Finite, MiB, PageCount, Ratio
from harness.validation import Strict, problem


class RssFellCheck(Strict):
    min_mib: MiB = 64


class MetricCheck(Strict):
    name: str
    phase: str | None = None
    kernel: str | None = None
    min: Finite | None = None
    max: Finite | None = None
    equals: Finite | None = None

    @model_validator(mode="after")
    def _has_a_bound(self) -> MetricCheck:
        if self.min is None and self.max is None and self.equals is None:
            raise problem("needs name and one of min, max, equals")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise problem(f"min {self.min} is above max {self.max}: no value can pass", "min")
        return self


class RatioCheck(Strict):
    name: str
    kernel: str
    baseline: str
    phase: str | None = None
    max_ratio: Ratio | None = None
    min_ratio: Ratio | None = None

    @model_validator(mode="after")
    def _has_a_bound(self) -> RatioCheck:
        if self.max_ratio is None and self.min_ratio is None:
            raise problem("needs name, kernel, baseline and max_ratio or min_ratio")
        if self.min_ratio is not None and self.max_ratio is not None and self.min_ratio > self.max_ratio:
            raise problem(f"min_ratio {self.min_ratio} is above max_ratio {self.max_ratio}: no ratio can pass",
                          "min_ratio")
        return self


class KernelLogCheck(Strict):
    """Text every boot of a kernel must print (a refusal, a feature announced); `present: false` forbids it."""

    kernel: str
    contains: Annotated[str, Field(min_length=1)]
    present: bool = True


class ExpectedLeak(Strict):
    """A kernel that is meant to hand out non-zero pages in this configuration: a negative control, or a
    survey of unsafe configurations.  Its leaks are then reported, not failed on; no leak fails instead."""

    kernel: str
    why: Annotated[str, Field(min_length=1)]


class Expectations(Strict):
    expected_leaks: list[ExpectedLeak] = []
    balloon_reached: bool = False
    balloon_inflate_matches: bool = False
    rss_fell_after_reporting: RssFellCheck | None = None
    nonzero_pages: PageCount | None = None
    kernel_log_clean: bool = True
    kernel_log: list[KernelLogCheck] = []
    kselftests_pass: bool = True  # with kselftest steps: every case that ran passed (or was skipped)
    metrics: list[MetricCheck] = []
    ratios: list[RatioCheck] = []


def check_expectation_phases(expect: Expectations, phases: list[str]) -> None:
    """A metric or ratio check naming a phase no step has would only fail after the whole run ("metric was not
    recorded"): a problem at load time instead.  `phases`: every step's phase, and "boot" (boot_to_ssh_s)."""
    for group in ("metrics", "ratios"):
        for i, check in enumerate(getattr(expect, group)):
            if check.phase is not None and check.phase not in phases:
                raise problem(f"no step has phase {check.phase!r} (phases: {', '.join(phases)})",
                              "expect", group, i, "phase")
