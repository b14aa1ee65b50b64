"""The bundle model: what a run writes reads back the same, old schema-1 bundles still load, others do not."""

import json

import pytest

from harness.errors import InputError
from harness.kernels.record import KernelRecord
from harness.results.bundle import load_bundle
from harness.results.writer import BundleWriter

# A manifest as the first schema-1 bundles were written: no timing, no series[].of, no guest_release.
OLD_MANIFEST = {
    "schema": 1, "status": "complete", "error": None,
    "scenario": {"name": "smoke", "path": "scenarios/smoke.yaml", "content": "name: smoke\n"},
    "kernels": [{"spec": "base+zs", "slug": "base+zs", "version": "6.12.9", "sha256": "ab", "cache_key": "k",
                 "config": "/c", "config_fragment_sha256": "cd",
                 "series": [{"name": "zs", "patches": [{"file": "0001-x.patch", "sha256": "ef"}]}],
                 "zeroing_counters": "vmstat"}],
    "qemu": {"version": "7.2.0", "binary": "qemu-system-x86_64", "argv": ["qemu-system-x86_64"]},
    "accel": "tcg", "host": {"cpu": "x", "cores": 2, "memory_mib": 4000, "kernel": "6.1", "hostname": "h"},
    "harness": {"version": "0.1.0", "git_commit": None},
    "started": "2026-01-01T00:00:00+00:00", "ended": "2026-01-01T00:01:00+00:00", "reps": 1,
}


def write(path, manifest, metrics=(), expectations=()):
    path.mkdir()
    (path / "manifest.json").write_text(json.dumps(manifest))
    (path / "metrics.json").write_text(json.dumps(list(metrics)))
    (path / "expectations.json").write_text(json.dumps(list(expectations)))
    return path


def test_an_old_schema_1_bundle_loads_with_defaults(tmp_path):
    b = load_bundle(write(tmp_path / "old", OLD_MANIFEST,
                          [{"name": "fault_in_ms", "value": 5, "unit": "ms", "phase": "touch", "rep": 0,
                            "kernel": "base+zs"}],
                          [{"name": "nonzero_pages", "kernel": "base+zs", "ok": True, "detail": "0"}]))
    assert b.timing == "realtime" and b.manifest.timing is None
    (kernel,) = b.manifest.kernels
    assert kernel.series[0].of is None and kernel.guest_release is None
    assert b.samples("base+zs") == {("fault_in_ms", "touch"): [5.0]}
    assert b.expectations[0].ok and b.scenario == "smoke"


def test_an_unknown_schema_is_one_clear_error(tmp_path):
    path = write(tmp_path / "new", {**OLD_MANIFEST, "schema": 2})
    with pytest.raises(InputError, match=r"new/manifest.json: unsupported schema 2 \(expected 1\)"):
        load_bundle(path)


def test_a_mistyped_manifest_key_names_the_file_and_key(tmp_path):
    path = write(tmp_path / "b", {**OLD_MANIFEST, "reps": [1]})
    with pytest.raises(InputError, match=r"b/manifest.json: reps: "):
        load_bundle(path)


def test_a_malformed_expectation_row_names_the_row(tmp_path):
    path = write(tmp_path / "b", OLD_MANIFEST, expectations=[{"name": "x", "ok": "yes"}])
    with pytest.raises(InputError, match=r"expectations.json: row 0 is not \{name, kernel, ok, detail\}"):
        load_bundle(path)


def test_what_a_run_records_reads_back(tmp_path):
    w = BundleWriter(tmp_path, "smoke", ["stock"])
    w.manifest.reps = 2
    w.set_environment(accel="tcg", timing="icount", qemu_version="7.2.0", qemu_binary="qemu-system-x86_64")
    w.add_kernel(KernelRecord.model_validate(
        {"spec": "stock", "slug": "stock", "version": "6.12", "package": "linux-image", "sha256": "ab",
         "cache_key": None, "config": "/c", "config_fragment_sha256": None, "series": [], "boot": "bzImage"}))
    w.add_kernel(KernelRecord.model_validate({"spec": "base", "slug": "base", "series": [],
                                              "base": {"package": "linux-source-6.12"}}))
    w.update_kernel(0, zeroing_counters="trace", guest_release="6.12", qemu_argv=["qemu-system-x86_64", "-m"],
                    zeroing={"methods": ["trace"], "unavailable": {"zeroing.thp_pages": "kprobe refused"}})
    w.add_metric("fault_in_ms", 1.5, phase="touch", rep=0, kernel="stock")
    w.add_metric("nonzero_pages", 0, phase="touch", rep=0, kernel="stock")
    w.set_expectations([{"name": "nonzero_pages", "kernel": "stock", "ok": True, "detail": "none"}])
    path = w.finish("complete", None)
    assert not list(tmp_path.glob(".tmp-*"))
    raw = json.loads((path / "manifest.json").read_text())
    assert raw["schema"] == 1 and raw["timing"] == "icount" and raw["qemu"]["argv"] == ["qemu-system-x86_64", "-m"]
    assert raw["kernels"][0]["boot"] == "bzImage" and "boot" not in raw["kernels"][1]
    assert raw["kernels"][0]["zeroing"]["unavailable"] == {"zeroing.thp_pages": "kprobe refused"}
    assert "zeroing" not in raw["kernels"][1]
    assert json.loads((path / "metrics.json").read_text())[1] == {
        "name": "nonzero_pages", "value": 0, "unit": "pages", "phase": "touch", "rep": 0, "kernel": "stock"}
    b = load_bundle(path)
    assert b.manifest == w.manifest and b.metrics == w.bundle.metrics and b.expectations == w.bundle.expectations
    assert b.kernels == ["stock", "base"] and b.values("fault_in_ms", "touch", "stock") == [1.5]
