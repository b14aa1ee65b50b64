"""A synchronous face on qemu.qmp's asyncio QMPClient.

The client lives on its own event-loop thread so QMP events are read (and logged to qmp.jsonl) the
moment QEMU sends them, while the harness itself stays simple blocking code.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import threading
import time
from pathlib import Path

from qemu.qmp import ConnectError, ExecuteError, QMPClient

from harness.errors import HarnessError
from harness.process import poll_until

CONNECT_RETRY_S = 0.02  # between attempts while QEMU creates its socket and starts listening


class QMPError(HarnessError):
    pass


@contextlib.contextmanager
def _quiet(logger: logging.Logger):
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


class QMP:
    def __init__(self, socket_path: Path, log_path: Path, name: str = "vm"):
        self._socket_path = socket_path
        self._log = log_path.open("a", buffering=1)
        self._log_lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"qmp-{name}", daemon=True)
        self._client = QMPClient(name)
        self._events: list[dict] = []
        self._events_changed = threading.Condition()

    def connect(self, timeout: float, alive=lambda: None) -> None:
        """Connect to QEMU's QMP server socket, retrying until it accepts; `alive` raises if QEMU died.

        QEMU sends its greeting only once guest memory is set up, which takes a while with
        prealloc or mem-lock, so one attempt may wait for most of the timeout.
        """
        self._thread.start()
        started = time.monotonic()
        refused: list[Exception] = []

        def connected() -> bool:
            if not self._socket_path.exists():  # QEMU has not created it yet
                return False
            try:
                self._call(self._client.connect(str(self._socket_path)),
                           timeout=max(0.1, started + timeout - time.monotonic()))
                return True
            except (ConnectError, OSError) as exc:
                refused[:] = [exc]
                return False
            except concurrent.futures.TimeoutError:
                raise QMPError(f"QEMU did not greet on its QMP socket within {timeout:.0f} s") from None

        def gave_up() -> QMPError:
            if not refused:
                return QMPError(f"QEMU never created its QMP socket {self._socket_path}")
            return QMPError(f"could not connect to QMP socket {self._socket_path}: {refused[0]}")

        # qemu.qmp logs every refused attempt as an error; refusals are expected until QEMU listens.
        with _quiet(logging.getLogger(f"qemu.qmp.protocol.{self._client.name}")):
            poll_until(connected, timeout=timeout, interval=CONNECT_RETRY_S, alive=alive, started=started,
                       on_timeout=gave_up)
        asyncio.run_coroutine_threadsafe(self._read_events(), self._loop)

    async def _read_events(self) -> None:
        async for message in self._client.events:
            event = dict(message)
            self._write_log({"event": event})
            with self._events_changed:
                self._events.append(event)
                self._events_changed.notify_all()

    def _write_log(self, record: dict) -> None:
        record = {"host_time": time.time(), **record}
        with self._log_lock:
            try:
                self._log.write(json.dumps(record, default=str) + "\n")
            except (OSError, ValueError):
                pass  # a full results disk (or the log closed at shutdown): the run reports it on its own writes

    def _call(self, coro, timeout: float):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def execute(self, command: str, arguments: dict | None = None, timeout: float = 30.0):
        self._write_log({"execute": command, "arguments": arguments})
        try:
            result = self._call(self._client.execute(command, arguments), timeout)
        except ExecuteError as exc:
            self._write_log({"error": str(exc), "command": command})
            raise QMPError(f"QMP {command} failed: {exc}") from exc
        except Exception as exc:  # connection dropped, timeout: QEMU is gone or hung
            self._write_log({"error": repr(exc), "command": command})
            raise QMPError(f"QMP {command} failed: {exc!r}") from exc
        self._write_log({"return": result, "command": command})
        return result

    def events_since(self, index: int) -> list[dict]:
        with self._events_changed:
            return self._events[index:]

    @property
    def event_count(self) -> int:
        with self._events_changed:
            return len(self._events)

    def wait_event(self, timeout: float) -> None:
        """Block until a new event arrives or the timeout passes."""
        with self._events_changed:
            count = len(self._events)
            self._events_changed.wait_for(lambda: len(self._events) > count, timeout)

    @staticmethod
    async def _cancel_pending_tasks() -> None:
        """Cancel the event reader (and anything qemu.qmp left) and let them finish cancelling."""
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    def close(self) -> None:
        if self._thread.is_alive():
            try:
                self._call(self._client.disconnect(), timeout=5)
            except Exception:
                pass  # QEMU may already be gone; nothing left to tell it
            try:
                self._call(self._cancel_pending_tasks(), timeout=5)
            except Exception:
                pass  # the loop is stopped below either way
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        with contextlib.suppress(OSError):
            self._log.close()
