"""Kernel config checks: what the config fragments ask for, and which of those wishes the final .config dropped.

``make olddefconfig`` silently drops an option whose dependencies are not met; a build must not go on
without an option a fragment asks for.
"""

from __future__ import annotations

import re

from harness.errors import HarnessError, InputError
from harness.kernels.inputs import Fragment


def parse_fragment_wants(frags: list[Fragment]) -> dict[str, str | None]:
    """CONFIG_X -> wanted value (None for '# CONFIG_X is not set'); later fragments override earlier."""
    wants: dict[str, str | None] = {}
    for f in frags:
        for line in f.data.decode(errors="replace").splitlines():
            line = line.strip()
            m = re.match(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$", line)
            if m:
                wants[m.group(1)] = m.group(2)
                continue
            m = re.match(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$", line)
            if m:
                wants[m.group(1)] = None
    return wants


def parse_config(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def dropped_options(wants: dict[str, str | None], config_text: str) -> list[str]:
    have = parse_config(config_text)
    bad = []
    for opt, want in wants.items():
        got = have.get(opt)
        if want is None:
            if got is not None and got != "n":
                bad.append(f"{opt}: wanted not set, got {got}")
        elif got != want:
            bad.append(f"{opt}: wanted {want}, got {'not set' if got is None else got}")
    return bad


def check_config(frags: list[Fragment], config_text: str):
    """Raise when the final .config lacks an option a fragment asks for.

    The default fragment (guest.config, the first) failing is the harness's own fault: HarnessError with
    every option.  An extra fragment (a flavour, --config-fragment) failing is bad input: one-line InputError
    naming the fragment and its options.
    """
    bad = dropped_options(parse_fragment_wants(frags), config_text)
    if not bad:
        return
    extra = {opt for f in frags[1:] for opt in parse_fragment_wants([f])}
    from_extra = [b for b in bad if b.split(":")[0] in extra]
    if from_extra:
        failing = {b.split(":")[0] for b in from_extra}
        names = ", ".join(f.path.name for f in frags[1:] if set(parse_fragment_wants([f])) & failing)
        raise InputError(f"kernel config: {names}: {'; '.join(from_extra)} (the option did not survive "
                         "olddefconfig: unknown, or a dependency is missing)")
    raise HarnessError(
        f"kernel config: {len(bad)} option(s) the fragment(s) ask for did not survive olddefconfig "
        f"(missing dependencies?):\n  " + "\n  ".join(bad))
