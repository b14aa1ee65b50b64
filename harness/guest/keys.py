"""The SSH keys the harness logs into guests with, and the guests' pinned host key; made once, kept private."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import paramiko

from harness.paths import cache_root, private_dir
from harness.process import run_command


@dataclass(frozen=True)
class SshKeys:
    client_key: Path  # private key the harness logs in with (paramiko ECDSA, 0600)
    client_pub: str  # its authorized_keys line
    host_key: Path  # dropbear host key baked into images (0600)
    host_pub: str  # "ssh-ed25519 AAAA..." to pin in paramiko


def ssh_keys() -> SshKeys:
    """This host's SSH key pair for guests and the guests' host key, made once, kept private."""
    d = private_dir(cache_root() / "ssh")
    client = d / "id_ecdsa"
    host = d / "dropbear_ed25519_host_key"
    if not client.exists():
        key = paramiko.ECDSAKey.generate(bits=256)
        tmp = d / "id_ecdsa.tmp"
        key.write_private_key_file(str(tmp))
        tmp.chmod(0o600)
        tmp.rename(client)
    if not host.exists():
        tmp = d / "host.tmp"
        tmp.unlink(missing_ok=True)
        run_command(["dropbearkey", "-t", "ed25519", "-f", tmp])
        tmp.chmod(0o600)
        tmp.rename(host)
    key = paramiko.ECDSAKey.from_private_key_file(str(client))
    client_pub = f"{key.get_name()} {key.get_base64()} balloon-testbed"
    host_pub = next(
        line for line in run_command(["dropbearkey", "-y", "-f", host]).stdout.splitlines() if line.startswith("ssh-")
    )
    return SshKeys(client, client_pub, host, " ".join(host_pub.split()[:2]))
