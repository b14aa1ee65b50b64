"""Named stacks (kernel_patches/stacks.yaml): the legal stacks, each with a short name that works wherever a kernel
spec does.  `seed002` is its spec; `seed002%debug-vm` and `seed002+my-fix` extend it like any spec.

The file is validated when it is first needed; a problem in it is one line naming the file, the entry and the
key (exit 2), like every other input."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Annotated

from pydantic import Field

from harness.errors import InputError
from harness.paths import REPO_ROOT
from harness.validation import Strict, validate
from harness.yamlfile import load_yaml_file

STACKS_FILE = REPO_ROOT / "kernel_patches" / "stacks.yaml"
NAME = re.compile(r"^[a-z][a-z0-9-]*$")
RESERVED = ("stock",)  # names a spec already means something by


class Stack(Strict):
    name: Annotated[str, Field(pattern=NAME.pattern)]
    spec: Annotated[str, Field(pattern=r"^base(\+[A-Za-z0-9][A-Za-z0-9._-]*)*$")]  # no flavours, no file
    purpose: Annotated[str, Field(min_length=1)]


class StackFile(Strict):
    stacks: list[Stack]


@functools.cache
def load_stacks(path: Path = STACKS_FILE) -> dict[str, Stack]:
    """Every named stack by name, in the file's order; InputError when the file is malformed."""
    data = load_yaml_file(path, "the named stacks")
    stacks = validate(StackFile, {"stacks": data}, path).stacks
    by_name: dict[str, Stack] = {}
    for i, s in enumerate(stacks):
        if s.name in by_name or s.name in RESERVED:
            raise InputError(f"{path}: stacks[{i}].name: {s.name!r} is taken (named twice, or a spec word)")
        if s.name == "base" and s.spec != "base":
            raise InputError(f"{path}: stacks[{i}].spec: the stack named 'base' must be the base itself")
        by_name[s.name] = s
    return by_name


def expand(text: str) -> tuple[str, str | None]:
    """(the spec with a leading stack name replaced by the stack's spec, that name or None)."""
    head = re.split(r"[+%]", text, maxsplit=1)[0]
    if head in ("base", "stock") or "/" in text:
        return text, None
    stack = load_stacks().get(head)
    if stack is None:
        return text, None
    return stack.spec + text[len(head):], head


def name_of(spec: str) -> str | None:
    """The name of the stack whose spec is exactly `spec` (flavours and all), if one has it."""
    return next((s.name for s in load_stacks().values() if s.spec == spec and s.name != "base"), None)


def display_name(spec: str) -> str:
    """A kernel as reports name it: its stack's name where it has one (flavours kept), else the spec."""
    head, sep, flavours = spec.partition("%")
    name = name_of(head) if head.startswith("base") else None
    return (name + sep + flavours) if name else spec


def stacks_table() -> str:
    """The Markdown table of the legal stacks that kernel_patches/README.md shows."""
    rows = ["| name | spec | purpose |", "| --- | --- | --- |"]
    rows += [f"| `{s.name}` | `{s.spec}` | {s.purpose} |" for s in load_stacks().values()]
    return "\n".join(rows) + "\n"
