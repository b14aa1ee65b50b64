"""Errors the CLI turns into exit codes."""


class HarnessError(Exception):
    """A run failed (exit 1)."""


class InputError(HarnessError):
    """The user gave bad input: a scenario, a kernel spec, a path (exit 2)."""
