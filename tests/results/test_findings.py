"""The report's summary: findings grouped per scenario, the worst group first, leaks before failures before
timings before counters inside a group; kernels named by their stack."""

from __future__ import annotations

from harness.kernels.stacks import display_name as kernel_label
from harness.results.findings import Finding, Link, group_findings


def test_groups_lead_with_leaks_and_failures_and_order_inside_a_group():
    findings = [
        Finding("improvement", "counter up", [], "baseline", "reporting", timing=False),
        Finding("regression", "counter down", [], "baseline", "reporting", timing=False),
        Finding("regression", "slower vs last night", [], "last night", "reporting", timing=True),
        Finding("regression", "slower", [], "baseline", "reporting", timing=True),
        Finding("leak", "LEAK on seed002", [], scenario="stale-data"),
        Finding("failed", "expectation balloon_reached failed", [], scenario="stale-data"),
        Finding("failed", "x: not a readable bundle", []),
    ]
    links = {"reporting": [Link("card reporting", "#reporting")]}
    groups = group_findings(findings, links)
    assert [g.title for g in groups] == ["stale-data", "other", "reporting"]
    assert [f.text for f in groups[0].findings] == ["LEAK on seed002", "expectation balloon_reached failed"]
    assert [f.text for f in groups[2].findings] == ["slower", "slower vs last night", "counter down", "counter up"]
    assert groups[2].links == links["reporting"] and groups[1].links == []


def test_a_kernel_is_named_by_its_stack_with_its_flavours():
    assert kernel_label("base+zeroing-stats+balloon-opt-ins+host-zeroed-reporting") == "seed002"
    assert kernel_label("base+zeroing-stats%page-poison") == "baseline%page-poison"
    assert kernel_label("base+zeroing-stats+my-fix") == "base+zeroing-stats+my-fix"
    assert kernel_label("stock") == "stock" and kernel_label("seed002") == "seed002"
