"""The migrate and background_snapshot steps as written: their parameters, and machines that cannot be
migrated or snapshotted, refused before anything boots."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import InputError
from harness.scenario import migration_params
from harness.scenario.migration_params import filesystem_type
from harness.scenario.schema import load_scenario
from tests.conftest import write_scenario as write


def test_migrate_steps_parse(tmp_path):
    s = load_scenario(write(tmp_path, "name: t\nsteps: [{migrate: precopy}, {migrate: postcopy},\n"
                                      "  {migrate: {mode: postcopy, precopy_s: 2}}, background_snapshot]\n"))
    assert [st.kind for st in s.steps] == ["migrate", "migrate", "migrate", "background_snapshot"]
    assert [st.params.mode for st in s.steps[:3]] == ["precopy", "postcopy", "postcopy"]
    assert s.steps[1].params.precopy_pass_s == migration_params.POSTCOPY_PRECOPY_S
    assert s.steps[2].params.precopy_pass_s == 2


@pytest.mark.parametrize(
    "steps, qemu, message",
    [
        ("[{migrate: sideways}]", "{}", "steps[0].migrate.mode: 'sideways' is not one of precopy, postcopy"),
        ("[{migrate: {mode: precopy, precopy_s: 1}}]", "{}",
         "steps[0].migrate.precopy_s: only meaningful with mode: postcopy"),
        ("[{migrate: {mode: postcopy, precopy_s: -1}}]", "{}", "steps[0].migrate.precopy_s"),
        ("[{migrate: {mode: postcopy, timeout_s: 0}}]", "{}", "steps[0].migrate.timeout_s"),
        ("[{background_snapshot: {bogus: 1}}]", "{}", "steps[0].background_snapshot.bogus: unknown key"),
        ("[snapshot]", "{memory_backend: ram, mem_path: /tmp}",
         "qemu.mem_path: only meaningful with memory_backend: file or file-private"),
    ],
)
def test_bad_migration_steps_are_one_line(tmp_path, steps, qemu, message):
    path = write(tmp_path, f"name: t\nqemu: {qemu}\nsteps: {steps}\n")
    with pytest.raises(InputError) as exc:
        load_scenario(path)
    assert message in str(exc.value) and "\n" not in str(exc.value), str(exc.value)


@pytest.mark.parametrize("backend", ["file", "file-private"])
def test_a_ram_file_both_qemus_would_map_cannot_migrate(tmp_path, backend):
    ram = tmp_path / "guest.ram"
    ram.write_bytes(b"")
    path = write(tmp_path, f"name: t\nqemu: {{memory_backend: {backend}, mem_path: {ram}}}\n"
                           "steps: [{memtouch: 64M}, {migrate: postcopy}]\n")
    with pytest.raises(InputError) as exc:
        load_scenario(path)
    assert f"steps[1].migrate: this machine cannot be migrated: mem_path {ram} is one file" in str(exc.value)
    # A directory is fine: each QEMU creates (and unlinks) its own file there.
    load_scenario(write(tmp_path, f"name: t\nqemu: {{memory_backend: {backend}, mem_path: {tmp_path}}}\n"
                                  "steps: [{migrate: postcopy}]\n"))


def test_cli_migrate_on_a_machine_that_cannot_migrate_is_exit_2_before_boot(tmp_path):
    ram = tmp_path / "guest.ram"
    ram.write_bytes(b"")
    path = write(tmp_path, f"name: t\nqemu: {{memory_backend: file, mem_path: {ram}}}\nsteps: [{{migrate: precopy}}]\n")
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(path), "--results", str(tmp_path / "r")],
                          capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot be migrated" in lines[0], proc.stderr
    assert not (tmp_path / "r").exists()


def test_a_background_snapshot_of_file_ram_on_a_disk_filesystem_is_bad_input(tmp_path, monkeypatch):
    """QEMU refuses it ("not compatible with guest memory configuration"): userfaultfd cannot write-protect
    a file on ext4.  Which filesystem tmp_path is on depends on the host, so it is named here."""
    monkeypatch.setattr(migration_params, "filesystem_type", lambda path: "ext4")
    text = f"name: t\nqemu: {{memory_backend: file-private, mem_path: {tmp_path}}}\nsteps: [background_snapshot]\n"
    with pytest.raises(InputError) as exc:
        load_scenario(write(tmp_path, text))
    assert "steps[0].background_snapshot: QEMU cannot take a background snapshot of this machine" in str(exc.value)
    assert "on ext4" in str(exc.value)
    monkeypatch.setattr(migration_params, "filesystem_type", lambda path: "tmpfs")
    load_scenario(write(tmp_path, text))
    load_scenario(write(tmp_path, "name: t\nqemu: {memory_backend: memfd}\nsteps: [background_snapshot]\n"))


def test_filesystem_type_takes_the_longest_mount_point():
    mounts = ("/dev/sda1 / ext4 rw 0 0\ntmpfs /dev/shm tmpfs rw 0 0\ntmpfs /dev/shmem\\040x tmpfs rw 0 0\n"
              "hugetlbfs /dev/hugepages hugetlbfs rw 0 0\n")
    assert filesystem_type(Path("/dev/shm/vm"), mounts) == "tmpfs"
    assert filesystem_type(Path("/dev/shmem x/vm"), mounts) == "tmpfs"
    assert filesystem_type(Path("/dev/shmemx"), mounts) == "ext4"
    assert filesystem_type(Path("/dev/hugepages"), mounts) == "hugetlbfs"
    assert filesystem_type(Path("/var/lib"), mounts) == "ext4"
