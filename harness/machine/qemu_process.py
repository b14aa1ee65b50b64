"""One QEMU process: started so that it dies with the harness, its stderr in a log file, and its QMP.

A VM normally has one; during a live migration it has two (the source and the incoming destination), and
each writes its own logs into the same log directory (`suffix` tells them apart)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from harness.errors import HarnessError
from harness.machine.qemu_argv import free_local_port
from harness.machine.qmp import QMP
from harness.process import die_with_parent

PORT_RETRIES = 3


class QemuStartFailed(HarnessError):
    pass


class QemuProcess:
    """`argv_for(ssh_port)` builds the command line; logs are qemu{suffix}.stderr, qemu-argv{suffix}.json and
    qmp{suffix}.jsonl in `logdir`; QMP listens on `qmp_socket`."""

    def __init__(self, argv_for: Callable[[int], list[str]], logdir: Path, qmp_socket: Path, suffix: str = "",
                 label: str = "QEMU"):
        self._argv_for = argv_for
        self.label = label
        self.logdir = logdir
        self.qmp_socket = qmp_socket
        self.suffix = suffix
        self.stderr_path = logdir / f"qemu{suffix}.stderr"
        self.argv: list[str] = []
        self.ssh_port = 0
        self.started_at = 0.0
        self.qmp: QMP | None = None
        self._proc: subprocess.Popen | None = None
        self._stderr: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def start(self) -> None:
        for _attempt in range(PORT_RETRIES):
            self.ssh_port = free_local_port()
            self.argv = self._argv_for(self.ssh_port)
            (self.logdir / f"qemu-argv{self.suffix}.json").write_text(json.dumps(self.argv, indent=1))
            self._stderr = self.stderr_path.open("wb")
            self.started_at = time.monotonic()
            self._proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=self._stderr, stderr=self._stderr,
                preexec_fn=die_with_parent,
            )
            # A port taken between our probe and QEMU's bind is the only retryable start failure.
            time.sleep(0.05)
            if self._proc.poll() is None or "host forwarding" not in self.stderr_text():
                return
            self._stderr.close()
        raise QemuStartFailed(f"QEMU could not forward SSH to a free local port: {self.stderr_text()}")

    def connect_qmp(self, timeout: float, alive: Callable[[], None]) -> QMP:
        self.qmp = QMP(self.qmp_socket, self.logdir / f"qmp{self.suffix}.jsonl", name=f"vm{self.suffix}")
        self.qmp.connect(timeout=timeout, alive=alive)
        return self.qmp

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace").strip()
        except FileNotFoundError:
            return ""

    def exit_reason(self) -> str | None:
        """Why QEMU exited (its code and last stderr line), or None while it runs."""
        code = self.returncode
        if code is None:
            return None
        last = self.stderr_text().splitlines()
        return f"{self.label} exited with code {code}" + (f": {last[-1]}" if last else "")

    def wait(self, timeout: float) -> None:
        if self._proc is not None:
            try:
                self._proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass

    def stop(self, quit_timeout: float = 3.0) -> None:
        """Ask QEMU to quit, kill it if it does not, and release its QMP and log file; safe to call twice."""
        if self._proc is not None and self._proc.poll() is None and self.qmp is not None:
            try:
                self.qmp.execute("quit", timeout=quit_timeout)
            except HarnessError:
                pass  # QEMU is dying or hung: the kill below handles it
        if self._proc is not None:
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self.qmp is not None:
            self.qmp.close()
            self.qmp = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def send_kill(self) -> None:
        """SIGKILL QEMU and nothing else: safe from another thread (stop() then reaps it)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()

    def kill(self) -> None:
        """Stop at once (a failed migration's destination has nothing worth a clean exit)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
        self.stop()
