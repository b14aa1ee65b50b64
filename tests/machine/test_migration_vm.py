"""Live migration on real guests (stock kernel): a background snapshot, a precopy and a postcopy migration inside
one run, every later step on the destination; and a migration QEMU refuses, which fails with its reason and leaves the source
running, and no QEMU behind."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest

from harness.guest.launch import make_vm, prepare_boot, wait_ready
from harness.kernels.spec import parse_kernel_spec
from harness.machine.config import MachineConfig
from harness.machine.migration import MigrationFailed
from harness.results.scenario_run import run_scenario
from tests.conftest import qemu_pids_matching

pytestmark = pytest.mark.vm

SCENARIO = """
name: migrate-test
guest: {memory: 512M, cpus: 1}
kernels: [stock]
steps:
  - memdirty: 128M
    phase: dirty
  - background_snapshot:
    phase: snapshot
  - migrate: precopy
    phase: precopy
  - migrate: {mode: postcopy, precopy_s: 0.1, bandwidth: 100}  # a pass of ~200 MiB: 2 s, postcopy surely on
    phase: postcopy
  - memtouch: 64M
    phase: touch
expect: {nonzero_pages: 0}
"""


def test_precopy_then_postcopy_and_every_later_step_on_the_destination(tmp_path):
    path = tmp_path / "migrate.yaml"
    path.write_text(SCENARIO)
    outcome = run_scenario(path, results_dir=tmp_path / "results")
    assert outcome.status == "complete", outcome.error
    rep = outcome.bundle / "stock" / "rep1"
    steps = {s["phase"]: s for s in json.loads((rep / "steps.json").read_text())}
    pre, post = steps["precopy"]["migration"], steps["postcopy"]["migration"]
    assert pre["mode"] == "precopy" and pre["status"] == "completed" and pre["postcopy_after_s"] is None
    assert post["mode"] == "postcopy" and post["status"] == "completed"
    # 0.1 s into a precopy pass of ~200 MiB at 100 MiB/s: postcopy was really switched on.
    assert post["postcopy_after_s"] is not None and post["postcopy_requests"] is not None
    for m in (pre, post):
        assert m["transferred_mib"] > 64 and m["total_ms"] > 0 and m["downtime_ms"] is not None
    # Each destination had its own SSH forward, and the guest answered on it (the later steps ran).
    ports = {json.loads((rep / "qemu-argv.json").read_text())[-1]}
    assert steps["precopy"]["ssh_port"] != steps["postcopy"]["ssh_port"]
    for n in (1, 2):
        argv = json.loads((rep / f"qemu-argv-mig{n}.json").read_text())
        assert argv[-2:] == ["-incoming", "defer"]
        ports.add(argv[-1])
        assert (rep / f"qemu-mig{n}.stderr").exists() and (rep / f"qmp-mig{n}.jsonl").read_text()
    assert (rep / "qemu.stderr").exists() and "migrate" in (rep / "qmp.jsonl").read_text()
    assert steps["touch"]["nonzero_pages"] == 0
    snap = steps["snapshot"]["migration"]
    assert snap["mode"] == "background-snapshot" and snap["status"] == "completed"
    assert snap["file_mib"] > 64 and snap["transferred_mib"] > 64
    assert qemu_argv_count(rep) == 3  # the snapshot did not start another QEMU
    metrics = {(m["name"], m["phase"]) for m in json.loads((outcome.bundle / "metrics.json").read_text())}
    for name in ("migration_total_ms", "migration_downtime_ms", "migration_transferred_mib"):
        assert {(name, "precopy"), (name, "postcopy")} <= metrics
    # Host RSS sampling followed the guest: samples after the last migration, from the destination.
    with (rep / "rss.csv").open() as f:
        times = [float(row["t_s"]) for row in csv.DictReader(f)]
    assert max(times) > steps["postcopy"]["t_end_s"]
    assert "guest ready" in (rep / "serial.log").read_text()
    assert qemu_pids_matching(str(tmp_path)) == []


def qemu_argv_count(rep) -> int:
    return len(list(rep.glob("qemu-argv*.json")))


def test_a_migration_qemu_refuses_fails_with_its_reason_and_the_source_goes_on(tmp_path):
    kit = prepare_boot(parse_kernel_spec("stock"))
    config = MachineConfig(memory_mib=512, cpus=1)
    vm = make_vm(kit, config, "tcg", tmp_path)
    with vm:
        ssh, _ = wait_ready(vm, kit.keys, 180)
        source_pid = vm.pid
        vm.config = replace(config, memory_mib=768)  # the destination's RAM does not match the source's
        with pytest.raises(MigrationFailed) as exc:
            vm.migrate("precopy", 0, timeout=120)
        assert "the destination said: Size mismatch: mem0: 0x20000000 != 0x30000000" in str(exc.value), exc.value
        assert vm.pid == source_pid and qemu_pids_matching(f"{tmp_path}.*-incoming") == []
        assert vm.qmp is not None and vm.qmp.execute("query-status")["status"] == "running"
        assert ssh.run("echo alive").stdout.strip() == "alive"
    assert qemu_pids_matching(str(tmp_path)) == []


SLOW_MIGRATION = """
name: slow-migration
guest: {memory: 512M, cpus: 1}
steps:
  - shell: {command: "memdirty 200M --hold > /tmp/held.json 2>&1 < /dev/null & while ! grep -q mib /tmp/held.json; do sleep 0.2; done", timeout_s: 120}
  - migrate: {mode: precopy, bandwidth: 1}
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_stopping_the_harness_mid_migration_leaves_neither_qemu(tmp_path, sig):
    """SIGINT unwinds (both QEMUs stopped by the VM); SIGKILL leaves it to PR_SET_PDEATHSIG, for both."""
    (tmp_path / "s.yaml").write_text(SLOW_MIGRATION)
    results = tmp_path / "results"
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", str(tmp_path / "s.yaml"), "--results",
                             str(results)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while len(qemu_pids_matching(str(results))) < 2:  # the source and the incoming destination
        assert proc.poll() is None and time.monotonic() < deadline, "the migration never started"
        time.sleep(0.2)
    proc.send_signal(sig)
    proc.communicate(timeout=60)
    assert proc.returncode != 0
    deadline = time.monotonic() + 10  # a QEMU killed by its parent's death exits a moment later
    while qemu_pids_matching(str(results)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert qemu_pids_matching(str(results)) == []
