"""The walking skeleton on a real stock guest: balloon, reporting, zero check, bundle contents."""

from __future__ import annotations

import csv
import json
import os
import stat
from pathlib import Path

import pytest

from harness.machine.vm import run_dir_owner
from harness.paths import cache_root

pytestmark = pytest.mark.vm


def load(bundle, name):
    return json.loads((bundle / name).read_text())


def metric_values(bundle, name, phase=None):
    return [m["value"] for m in load(bundle, "metrics.json") if m["name"] == name and (phase is None or m["phase"] == phase)]


def test_bundle_is_complete_and_valid(smoke_bundles):
    for bundle in smoke_bundles:
        manifest = load(bundle, "manifest.json")
        assert manifest["schema"] == 1
        assert manifest["status"] == "complete" and manifest["error"] is None
        assert manifest["accel"] in ("kvm", "tcg")
        assert manifest["scenario"]["name"] == "smoke" and "steps:" in manifest["scenario"]["content"]
        (kernel,) = manifest["kernels"]
        assert kernel["spec"] == "stock" and kernel["version"].startswith("6.12.")
        assert kernel["guest_release"] == kernel["version"]
        # Debian's cloud kernel has CONFIG_PVH=y: QEMU boots its vmlinux directly, no decompression.
        assert kernel["boot"].startswith("pvh")
        assert Path(manifest["qemu"]["argv"][manifest["qemu"]["argv"].index("-kernel") + 1]).name == "vmlinux"
        assert len(kernel["sha256"]) == 64
        assert manifest["qemu"]["version"] and manifest["qemu"]["argv"][0] == "qemu-system-x86_64"
        assert manifest["host"]["cores"] >= 1 and manifest["harness"]["version"]
        assert manifest["started"] <= manifest["ended"]
        checks = load(bundle, "expectations.json")
        assert all(e["ok"] for e in checks)
        assert "kernel_log_clean" in [e["name"] for e in checks]
        rep = bundle / "stock" / "rep1"
        for f in ("serial.log", "qmp.jsonl", "rss.csv", "transcript.log", "vmstat-boot.txt", "vmstat-final.txt",
                  "buddyinfo-end.txt", "meminfo-end.txt", "qemu-argv.json", "dmesg.txt"):
            assert (rep / f).stat().st_size > 0, f
        assert bundle.name.endswith("-smoke-stock") and not bundle.name.startswith(".tmp")


def test_balloon_reached_targets_and_vmstat_counts_the_pages(smoke_bundles):
    for bundle in smoke_bundles:
        assert metric_values(bundle, "balloon_actual_mib", "inflate") == [1024]
        assert metric_values(bundle, "balloon_actual_mib", "deflate") == [2048]
        # 1 GiB in 4 KiB balloon pages
        assert metric_values(bundle, "vmstat.balloon_inflate", "inflate") == [262144]
        assert metric_values(bundle, "vmstat.balloon_deflate", "deflate") == [262144]
        events = [json.loads(line) for line in (bundle / "stock/rep1/qmp.jsonl").read_text().splitlines()]
        changes = [e for e in events if e.get("event", {}).get("event") == "BALLOON_CHANGE"]
        assert changes and changes[-1]["event"]["data"]["actual"] == 2048 << 20


def test_host_rss_falls_after_free_page_reporting(smoke_bundles):
    for bundle in smoke_bundles:
        rss_dirty = metric_values(bundle, "rss_mib", "dirty")[0]
        rss_reported = metric_values(bundle, "rss_mib", "reporting")[0]
        (drop,) = metric_values(bundle, "rss_drop_mib", "reporting")
        assert drop >= 200 and rss_reported < rss_dirty - 200


def test_memtouch_finds_only_zero_pages(smoke_bundles):
    for bundle in smoke_bundles:
        assert metric_values(bundle, "nonzero_pages", "touch") == [0]
        assert metric_values(bundle, "fault_in_ms", "touch")[0] > 0


def test_rss_sampled_at_10hz_or_more(smoke_bundles):
    with (smoke_bundles[0] / "stock/rep1/rss.csv").open() as f:
        rows = list(csv.DictReader(f))
    times = [float(r["t_s"]) for r in rows]
    assert len(rows) / (times[-1] - times[0]) >= 10


def test_private_state_stays_private(smoke_bundles):
    ssh_dir = cache_root() / "ssh"
    assert stat.S_IMODE(ssh_dir.stat().st_mode) == 0o700
    for key in ssh_dir.iterdir():
        if "id_" in key.name or "host_key" in key.name:
            assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    run_root = cache_root() / "run"
    assert stat.S_IMODE(run_root.stat().st_mode) == 0o700
    left = [p for p in run_root.iterdir() if run_dir_owner(p) == os.getpid()]
    assert not left, f"a VM run dir was left behind: {left}"
