"""What people read: --help texts, kernel build progress off a terminal, numbers in the run summary."""

from __future__ import annotations

import io
import re
import subprocess
import sys

from rich.console import Console

from harness.kernels.progress import Reporter
from harness.numbers import fmt_num


def verbs(parser=None, prefix=()) -> list[str]:
    """Every subcommand the CLI has, nested ones included ("kernel build"), read from its own parser."""
    import argparse

    from harness.cli import build_parser

    parser = parser or build_parser()
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append(" ".join((*prefix, name)))
                found += verbs(sub, (*prefix, name))
    return found


VERBS = verbs()
SPHINX = re.compile(r"``|:(mod|func|class|meth):`")


def help_text(*words: str) -> str:
    return subprocess.run([sys.executable, "-m", "harness.cli", *words, "--help"], capture_output=True, text=True,
                          check=True).stdout


def test_top_level_help_is_written_for_the_user():
    text = help_text()
    assert "register()" not in text
    assert "harness run scenarios/smoke.yaml" in text and "harness compare" in text and "exit codes" in text


def test_every_subcommand_is_covered():
    assert {"run", "ablate", "bisect", "bisect-check", "table", "kernel build", "trust"} <= set(VERBS)


def test_no_help_text_has_sphinx_markup():
    for verb in [""] + VERBS:
        text = help_text(*verb.split())
        assert not SPHINX.search(text), f"harness {verb} --help: {SPHINX.search(text).group(0)}"


def test_kernel_build_progress_off_a_terminal_is_plain_periodic_lines():
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    with Reporter(console=console, interval_s=0) as rep:
        with rep.status("configuring base"):
            pass
        task = rep.add("compiling base", 1960)
        for done in (100, 812):
            rep.update(task, completed=done)
        rep.log("built base in 330 s")
    lines = out.getvalue().splitlines()
    assert lines[0] == "kernel build: configuring base"
    assert re.fullmatch(r"kernel build: compiling base: 812 of 1960 objects, 0m0\ds elapsed", lines[-2]), lines
    assert lines[-1] == "built base in 330 s"
    assert not any(re.search(r"\.py:\d+", line) for line in lines)


def test_a_quiet_period_prints_no_progress_line():
    out = io.StringIO()
    with Reporter(console=Console(file=out, force_terminal=False), interval_s=3600) as rep:
        task = rep.add("compiling base", 1960)
        rep.update(task, completed=5)
    assert out.getvalue().splitlines() == ["kernel build: compiling base"]


def test_numbers_for_people():
    assert fmt_num(34697200.0) == "34697200"
    assert fmt_num(34697212.6) == "34697213"
    assert fmt_num(0.1234567) == "0.1235"
    assert "e+" not in fmt_num(3.46972e+07)
