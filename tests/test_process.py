"""The one subprocess helper and the one polling helper."""

from __future__ import annotations

import time

import pytest

from harness.errors import HarnessError
from harness.process import poll_until, run_command


def test_run_command_captures_and_names_a_failure():
    assert run_command(["sh", "-c", "echo hi"]).stdout == "hi\n"
    with pytest.raises(HarnessError) as exc:
        run_command(["sh", "-c", "echo one >&2; echo two >&2; exit 3"], what="the thing")
    assert str(exc.value) == "the thing failed (exit 3): one\ntwo"
    with pytest.raises(HarnessError, match="cannot run /no/such/tool"):
        run_command(["/no/such/tool"])
    assert run_command(["sh", "-c", "exit 4"], check=False).returncode == 4


def test_run_command_streams_lines():
    seen = []
    res = run_command(["sh", "-c", "echo a; echo b >&2"], on_line=seen.append)
    assert seen == ["a\n", "b\n"] and res.stdout == "a\nb\n"


def test_poll_until_returns_the_value_times_out_and_stops_when_not_alive():
    calls = iter([None, 0, "done"])
    assert poll_until(lambda: next(calls), timeout=5, interval=0.001) == "done"
    t0 = time.monotonic()
    assert poll_until(lambda: False, timeout=0.05, interval=0.01) is None
    assert time.monotonic() - t0 < 1
    with pytest.raises(TimeoutError):
        poll_until(lambda: False, timeout=0.01, interval=0.01, on_timeout=lambda: TimeoutError("late"))

    def dead():
        raise HarnessError("QEMU died")

    with pytest.raises(HarnessError, match="QEMU died"):
        poll_until(lambda: True, timeout=5, interval=0.01, alive=dead)
