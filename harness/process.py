"""Running host commands, and waiting for something to become true: the one way each is done."""

from __future__ import annotations

import ctypes
import logging
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TypeVar

from harness.errors import HarnessError

log = logging.getLogger(__name__)
ERROR_TAIL_LINES = 30  # lines of a failed command's output quoted in its error

T = TypeVar("T")


def tail(text: str, n: int = ERROR_TAIL_LINES) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


def run_command(cmd: Sequence[str | Path], *, cwd: Path | None = None, env: dict | None = None,
                input: str | bytes | None = None, stdout: IO | None = None, binary: bool = False,
                on_line: Callable[[str], None] | None = None, what: str | None = None,
                check: bool = True, pass_fds: Sequence[int] = ()) -> subprocess.CompletedProcess:
    """Run `cmd` and capture its output (text unless `binary`; into the file `stdout` if given).

    With `on_line`, stdout and stderr are merged and each line is handed over as it arrives (the full
    output is still returned).  A command that cannot start, or (with `check`) exits non-zero, is a
    HarnessError naming it, its exit status and the tail of what it printed.  pass_fds: file descriptors the
    command (and what it starts) inherits, e.g. a lock that must outlive the harness while they run."""
    argv = [str(c) for c in cmd]
    name = what or " ".join(argv)
    log.debug("run %s (cwd %s)", " ".join(argv), cwd or ".")
    try:
        if on_line is not None:
            res = _stream(argv, cwd, env, on_line, pass_fds)
        else:
            res = subprocess.run(argv, cwd=cwd, env=env, input=input, stdout=stdout or subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=not binary, errors=None if binary else "replace",
                                 pass_fds=tuple(pass_fds))
    except OSError as exc:
        raise HarnessError(f"{name}: cannot run {argv[0]}: {exc.strerror or exc}") from None
    if check and res.returncode != 0:
        err = res.stderr if not binary else (res.stderr or b"").decode(errors="replace")
        out = res.stdout if isinstance(res.stdout, str) else ""
        raise HarnessError(f"{name} failed (exit {res.returncode}): {tail(err or out)}")
    return res


def git(repo: Path | str | None, *args: str, **kwargs) -> subprocess.CompletedProcess:
    """`git -C repo ARGS` (repo None: no -C) through run_command, which takes the same keywords."""
    where = ["-C", str(repo)] if repo is not None else []
    kwargs.setdefault("what", " ".join(["git", *args[:3]]))
    return run_command(["git", *where, *args], **kwargs)


def _stream(argv: list[str], cwd: Path | None, env: dict | None, on_line: Callable[[str], None],
            pass_fds: Sequence[int] = ()) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace", bufsize=1, pass_fds=tuple(pass_fds))
    captured = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            captured.append(line)
            on_line(line)
        rc = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return subprocess.CompletedProcess(argv, rc, "".join(captured), "")


def poll_until(predicate: Callable[[], T], *, timeout: float, interval: float,
               alive: Callable[[], object] | None = None, started: float | None = None,
               on_timeout: Callable[[], Exception] | None = None,
               wait: Callable[[float], object] = time.sleep) -> T | None:
    """Call `predicate` every `interval` seconds until it returns something truthy, which is returned.

    `alive` runs before each look and raises when waiting is pointless (QEMU died).  Past `timeout`
    seconds (from `started`, default now) raises `on_timeout()`, or returns None without it.  `wait(s)`
    passes the time between looks: a sleep, or a wait that an event ends early (a QMP event)."""
    deadline = (time.monotonic() if started is None else started) + timeout
    while True:
        if alive is not None:
            alive()
        value = predicate()
        if value:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            if on_timeout is not None:
                raise on_timeout()
            return None
        wait(min(interval, remaining))


def die_with_parent() -> None:
    """A preexec_fn: the child (QEMU, virtiofsd) gets SIGKILL when the harness dies, so none outlives us."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
