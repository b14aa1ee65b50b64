"""Host-side sampling of the QEMU process's resident memory into rss.csv."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def read_rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/statm") as f:
            pages = int(f.read().split()[1])
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return pages * PAGE_KIB if pages else None  # an exited (zombie) process reads as 0


class RssSampler:
    """Samples at `hz` on a thread from start() to stop(); time is seconds since `t0` (monotonic).

    `pid` may be a callable: the process it names is sampled, so the samples follow a migrated guest."""

    def __init__(self, pid: int | Callable[[], int], csv_path: Path, t0: float, hz: float = 20.0):
        self._pid = pid
        self.csv_path = csv_path
        self.t0 = t0
        self.period = 1.0 / hz
        self._peak_kib = 0  # the highest sample since the last mark()
        self.error: OSError | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss", daemon=True)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def _loop(self) -> None:
        try:
            self._sample()
        except OSError as exc:  # the results disk filled up: the run notices on its next write
            self.error = exc

    def _sample(self) -> None:
        with self.csv_path.open("w", buffering=1) as f:
            f.write("t_s,rss_kib\n")
            next_at = time.monotonic()
            while not self._stop.is_set():
                pid = self.pid
                rss = read_rss_kib(pid)
                if rss is None:
                    if self.pid != pid:
                        continue  # the guest moved to another QEMU while we read the old one
                    return
                t = time.monotonic() - self.t0
                with self._lock:
                    self._peak_kib = max(self._peak_kib, rss)
                f.write(f"{t:.3f},{rss}\n")
                next_at += self.period
                self._stop.wait(max(0.0, next_at - time.monotonic()))

    @property
    def pid(self) -> int:
        return self._pid() if callable(self._pid) else self._pid

    def current_kib(self) -> int | None:
        return read_rss_kib(self.pid)

    def mark(self) -> None:
        """Start a new peak: peak_kib() is then the highest RSS sampled from now on."""
        with self._lock:
            self._peak_kib = read_rss_kib(self.pid) or 0

    def peak_kib(self) -> int:
        with self._lock:
            return max(self._peak_kib, read_rss_kib(self.pid) or 0)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
