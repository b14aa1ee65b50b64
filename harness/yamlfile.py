"""YAML as the harness reads it: safe, and a key written twice in one mapping is an error, not a silent
overwrite (a duplicated `phase:` or `memory:` would otherwise change a run without a word)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from harness.errors import InputError


class DuplicateKeyError(yaml.constructor.ConstructorError):
    pass


class UniqueKeyLoader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: SafeLoader reports it below
                continue
            if first is None:
                seen[key] = line
            else:
                raise DuplicateKeyError(None, None, f"line {line}: duplicate key {key!r} (first given on line {first})")
        return super().construct_mapping(node, deep=deep)


def describe_error(exc: yaml.YAMLError) -> str:
    """A YAML error on one line."""
    return " ".join(str(exc).split())


def parse_yaml(text: str) -> Any:
    """The YAML document in `text`; yaml.YAMLError (DuplicateKeyError for a repeated key) when malformed."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 -- UniqueKeyLoader is a SafeLoader


def load_yaml_file(path: Path, what: str) -> Any:
    """The YAML document in the file `path` (a `what`: "matrix file"); InputError naming the file when it cannot
    be read or is not valid YAML."""
    try:
        return parse_yaml(path.read_text())
    except OSError as exc:
        raise InputError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML: {describe_error(exc)}") from None
