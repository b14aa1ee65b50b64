"""`harness schema`: the JSON Schema of scenario files, for editors that complete and check YAML."""

from __future__ import annotations

import json
import sys

from harness.scenario.json_schema import scenario_json_schema


def cmd_schema(args) -> int:
    sys.stdout.write(json.dumps(scenario_json_schema(), indent=2) + "\n")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "schema", help="print the JSON Schema of scenario files (for editor completion and checks)",
        description="Print the JSON Schema of scenario files. Save it and point your editor's YAML support at it, "
                    "e.g. a first line '# yaml-language-server: $schema=scenario.schema.json'.")
    p.set_defaults(func=cmd_schema)
