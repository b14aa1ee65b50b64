"""Commands inside the guest over SSH (paramiko), every one logged to the run's transcript."""

from __future__ import annotations

import base64
import hashlib
import select
import shlex
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paramiko

from harness.errors import HarnessError
from harness.guest.keys import SshKeys
from harness.process import poll_until


class GuestCommandError(HarnessError):
    pass


@dataclass
class Result:
    command: str
    rc: int
    stdout: str
    stderr: str
    seconds: float


ALIVE_CHECK_S = 0.5  # how often a running command checks that the VM is still alive
CONNECT_RETRY_S = 0.05  # between refused SSH connections while the guest boots
OUTPUT_WAIT_S = 0.05  # the longest a running command waits for output before looking again


def _nodelay_socket(port: int) -> socket.socket:
    """A TCP connection to the guest's SSH port without Nagle's algorithm: with it, each small handshake
    message waited for the guest's late ACK of the one before.  A login to a booted guest took 0.147 s under
    TCG with it, 0.059 s without (`relogin` of tools/bench-boot-phases.py; README, "Boot, fourth pass")."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class Guest:
    def __init__(self, port: int, keys: SshKeys, transcript: Path, alive: Callable[[], None] = lambda: None):
        """`alive` raises when the VM died or its kernel oopsed (VM.check_alive): a command then fails at once
        with that reason instead of waiting out its timeout on a connection nothing answers any more."""
        self.port = port
        self.keys = keys
        self.transcript = transcript
        self.alive = alive
        self._client: paramiko.SSHClient | None = None

    def connect(self, deadline: float, alive: Callable[[], None] = lambda: None) -> None:
        """Connect, retrying until `deadline` (time.monotonic()); `alive` raises if the VM died."""
        key = paramiko.ECDSAKey.from_private_key_file(str(self.keys.client_key))
        kind, b64 = self.keys.host_pub.split()[:2]
        host_key = paramiko.Ed25519Key(data=base64.b64decode(b64))
        last_error: Exception | None = None

        def connected() -> bool:
            nonlocal last_error
            client = paramiko.SSHClient()
            client.get_host_keys().add(f"[127.0.0.1]:{self.port}", kind, host_key)
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            try:
                client.connect(
                    "127.0.0.1", self.port, username="root", pkey=key, look_for_keys=False, allow_agent=False,
                    timeout=5, banner_timeout=5, auth_timeout=5, sock=_nodelay_socket(self.port),
                )
            except (paramiko.SSHException, OSError, EOFError) as exc:
                last_error = exc
                client.close()
                return False
            self._client = client
            return True

        now = time.monotonic()
        poll_until(connected, timeout=max(0.0, deadline - now), started=now, interval=CONNECT_RETRY_S, alive=alive,
                   on_timeout=lambda: GuestCommandError(
                       f"SSH to the guest never came up on 127.0.0.1:{self.port}: {last_error!r}"))

    def run(self, command: str, timeout: float = 60, check: bool = True) -> Result:
        """Run `command` with /bin/sh in the guest; raise on timeout, and on non-zero exit if `check`."""
        if self._client is None:
            raise GuestCommandError("not connected to the guest")
        start = time.monotonic()
        try:
            channel = self._client.get_transport().open_session(timeout=10)
            channel.settimeout(1.0)
            channel.exec_command(command)
            out, err = bytearray(), bytearray()
            checked = start
            while True:
                while channel.recv_ready():
                    out += channel.recv(65536)
                while channel.recv_stderr_ready():
                    err += channel.recv_stderr(65536)
                if channel.exit_status_ready() and not channel.recv_ready() and not channel.recv_stderr_ready():
                    break
                now = time.monotonic()
                if now - start > timeout:
                    channel.close()
                    self._log(command, None, bytes(out), bytes(err), now - start)
                    raise GuestCommandError(f"guest command timed out after {timeout:.0f} s: {command}")
                if now - checked >= ALIVE_CHECK_S:
                    checked = now
                    try:
                        self.alive()
                    except BaseException:
                        channel.close()
                        self._log(command, None, bytes(out), bytes(err), now - start)
                        raise
                # Woken at once by output on stdout or the end of the command; stderr wakes it within this.
                select.select([channel], [], [], OUTPUT_WAIT_S)
            rc = channel.recv_exit_status()
            channel.close()
            if rc == -1:  # the channel closed without an exit status: the connection is gone
                raise EOFError("the SSH channel closed without an exit status")
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise GuestCommandError(f"SSH connection lost running {command!r}: {exc!r}") from exc
        result = Result(command, rc, out.decode(errors="replace"), err.decode(errors="replace"),
                        time.monotonic() - start)
        self._log(command, rc, bytes(out), bytes(err), result.seconds)
        if check and rc != 0:
            raise GuestCommandError(
                f"guest command failed with exit code {rc}: {command}: {result.stderr.strip() or result.stdout.strip()}"
            )
        return result

    def upload(self, src: Path, dest: str, mode: int = 0o755, timeout: float = 300) -> str:
        """Copy the host file `src` to `dest` in the guest over this connection (`cat` fed on stdin: the guest
        has no scp or sftp server), then check its size and sha256 there; returns the sha256."""
        if self._client is None:
            raise GuestCommandError("not connected to the guest")
        data = src.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        tmp = f"{dest}.upload"
        q_dest, q_tmp = shlex.quote(dest), shlex.quote(tmp)
        command = f"mkdir -p $(dirname {q_dest}) && cat > {q_tmp}"
        start = time.monotonic()
        try:
            channel = self._client.get_transport().open_session(timeout=10)
            channel.settimeout(timeout)
            channel.exec_command(command)
            channel.sendall(data)
            channel.shutdown_write()
            err = channel.makefile_stderr("rb").read()
            rc = channel.recv_exit_status()
            channel.close()
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise GuestCommandError(f"SSH connection lost uploading {src} to {dest}: {exc!r}") from exc
        self._log(f"{command}  # {len(data)} bytes from {src}", rc, b"", err, time.monotonic() - start)
        if rc != 0:
            raise GuestCommandError(f"upload of {src} to {dest} failed (exit {rc}): {err.decode(errors='replace')}")
        check = self.run(f"stat -c %s {q_tmp} && sha256sum {q_tmp}").stdout.split()
        if check[:2] != [str(len(data)), digest]:
            raise GuestCommandError(f"upload of {src} to {dest}: the guest has {check[:2]}, "
                                    f"expected {len(data)} bytes with sha256 {digest}")
        self.run(f"chmod {mode:o} {q_tmp} && mv {q_tmp} {q_dest}")
        return digest

    def _log(self, command: str, rc: int | None, out: bytes, err: bytes, seconds: float) -> None:
        with self.transcript.open("a") as f:
            f.write(f"$ {command}\n# exit={rc if rc is not None else 'timeout'} seconds={seconds:.3f}\n")
            if out:
                f.write(out.decode(errors="replace").rstrip("\n") + "\n")
            if err:
                f.write("# stderr:\n" + err.decode(errors="replace").rstrip("\n") + "\n")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
