"""Balloon convergence against a fake QMP peer: a socket server that speaks QMP and moves the balloon."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest

from harness.machine import balloon
from harness.machine.qmp import QMP

MIB = 1 << 20


class FakeQemu:
    """Greets, accepts qmp_capabilities, and moves `actual` toward the target one step per query-balloon,
    sending a BALLOON_CHANGE event for each step (stuck_at: the balloon stops there)."""

    def __init__(self, path: Path, start_mib: int, step_mib: int, stuck_at: int | None = None):
        self.actual = start_mib * MIB
        self.target = self.actual
        self.step = step_mib * MIB
        self.stuck_at = None if stuck_at is None else stuck_at * MIB
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(1)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _send(self, conn, obj) -> None:
        conn.sendall(json.dumps(obj).encode() + b"\r\n")

    @staticmethod
    def _messages(conn):
        """JSON objects as the client sends them (not necessarily one a line)."""
        decoder, buf = json.JSONDecoder(), ""
        while chunk := conn.recv(65536):
            buf += chunk.decode()
            while buf.strip():
                try:
                    msg, end = decoder.raw_decode(buf.lstrip())
                except ValueError:
                    break
                buf = buf.lstrip()[end:]
                yield msg

    def _serve(self) -> None:
        conn, _ = self.server.accept()
        self._send(conn, {"QMP": {"version": {"qemu": {"major": 8, "minor": 2, "micro": 2}, "package": ""},
                                  "capabilities": []}})
        for msg in self._messages(conn):
            cmd, ident = msg["execute"], msg.get("id")
            if cmd == "balloon":
                self.target = msg["arguments"]["value"]
                ret: dict = {}
            elif cmd == "query-balloon":
                if self.actual != self.target and self.actual != self.stuck_at:
                    move = max(-self.step, min(self.step, self.target - self.actual))
                    self.actual += move
                    self._send(conn, {"event": "BALLOON_CHANGE", "data": {"actual": self.actual},
                                      "timestamp": {"seconds": 0, "microseconds": 0}})
                ret = {"actual": self.actual}
            else:
                ret = {}
            self._send(conn, {"return": ret, "id": ident})
        conn.close()


@pytest.fixture
def qmp_to(tmp_path):
    opened = []

    def connect(**fake) -> QMP:
        sock = tmp_path / "qmp.sock"
        FakeQemu(sock, **fake)
        qmp = QMP(sock, tmp_path / "qmp.jsonl")
        qmp.connect(timeout=10)
        opened.append(qmp)
        return qmp

    yield connect
    for q in opened:
        q.close()


def test_inflate_converges_on_the_target_and_counts_events(qmp_to):
    qmp = qmp_to(start_mib=2048, step_mib=256)
    res = balloon.set_target(qmp, 1024, timeout_s=10)
    assert res.start_mib == 2048 and res.actual_mib == 1024 and res.target_mib == 1024
    assert res.events == 4


def test_a_balloon_that_stops_short_times_out_naming_both_sizes(qmp_to):
    qmp = qmp_to(start_mib=2048, step_mib=256, stuck_at=1536)
    with pytest.raises(balloon.BalloonTimeout, match="target 1024 MiB, actual 1536.0 MiB"):
        balloon.set_target(qmp, 1024, timeout_s=1)


def test_a_dead_vm_stops_the_wait(qmp_to):
    qmp = qmp_to(start_mib=2048, step_mib=1, stuck_at=2040)

    class Died(Exception):
        pass

    def alive():
        raise Died

    with pytest.raises(Died):
        balloon.set_target(qmp, 1024, timeout_s=30, alive=alive)
