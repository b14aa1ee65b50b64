"""Every number a scenario file can hold has a range (harness.scenario.bounds): read from the JSON Schema the
models export (`harness schema`), so a step kind added later without bounds fails here."""

from __future__ import annotations

import pytest

from harness.errors import InputError
from harness.scenario.bounds import MAX_SECONDS
from harness.scenario.json_schema import scenario_json_schema
from harness.scenario.schema import parse_scenario

# The values an expectation compares a metric with: any finite number is a sensible bound.
UNBOUNDED = {"/$defs/MetricCheck/properties/min", "/$defs/MetricCheck/properties/max",
             "/$defs/MetricCheck/properties/equals"}


def numbers(node, path="", bounds=()) -> list[tuple[str, dict, tuple]]:
    """(property path, its schema, the bounds of the schema holding it in an anyOf) of every number."""
    found = []
    if isinstance(node, dict):
        if node.get("type") in ("integer", "number"):
            found.append((path, node, bounds))
        keys = ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum")
        held = tuple(k for k in keys if k in node)
        for key, value in node.items():
            if key == "anyOf":
                for option in value:
                    found += numbers(option, path, held)
            elif isinstance(value, dict | list):
                found += numbers(value, f"{path}/{key}", ())
    elif isinstance(node, list):
        for value in node:
            found += numbers(value, path, ())
    return found


def test_every_number_in_a_scenario_file_has_a_lower_and_an_upper_bound():
    found = numbers(scenario_json_schema())
    assert len(found) > 15 and any(p.endswith("WaitReportingParams/properties/timeout_s") for p, *_ in found)
    unbounded = []
    for path, schema, held in found:
        keys = set(schema) | set(held)
        if path not in UNBOUNDED and not ({"minimum", "exclusiveMinimum"} & keys
                                           and {"maximum", "exclusiveMaximum"} & keys):
            unbounded.append(path)
    assert not unbounded, f"numbers without a range: {unbounded}"


@pytest.mark.parametrize("value, ok", [(1, True), (0.5, True), (MAX_SECONDS, True), (0, False), (-5, False),
                                       (MAX_SECONDS + 1, False), (float("inf"), False), (True, False), ("5", False)])
def test_a_timeout_takes_a_positive_finite_number_of_seconds(tmp_path, value, ok):
    doc = {"name": "t", "steps": ["boot", {"wait_reporting": {"timeout_s": value}}]}
    if ok:
        assert parse_scenario(doc, tmp_path / "t.yaml").steps[1].params.timeout_s == value
    else:
        with pytest.raises(InputError, match=r"t.yaml: steps\[1\].wait_reporting.timeout_s: "):
            parse_scenario(doc, tmp_path / "t.yaml")
