"""Write synthetic result bundles (results/README.md format) for the compare/report/junit tests.

Loaded by path from the tests (tests/ is not a package), e.g.::

    synth = load_synth()
    synth.write_bundle(tmp_path / "a", {"stock": {("fault_in_ms", "touch"): [10, 11]}})
"""

from __future__ import annotations

import json
from pathlib import Path


def manifest(scenario="smoke", kernels=("stock",), *, status="complete", error=None, accel="kvm",
             qemu="8.2.2", cpu="Intel(R) Xeon(R) CPU", started="2026-11-22T01:30:00Z", reps=3,
             timing="realtime") -> dict:
    return {
        "schema": 1,
        "status": status,
        "error": error,
        "scenario": {"name": scenario, "path": f"scenarios/{scenario}.yaml", "content": {}},
        "kernels": [{"spec": k, "slug": k, "version": None, "sha256": None, "cache_key": None, "config": None,
                     "config_fragment_sha256": None, "series": [], "zeroing_counters": "vmstat"}
                    for k in kernels],
        "qemu": {"version": qemu, "binary": "/usr/bin/qemu-system-x86_64", "argv": []},
        "accel": accel,
        "timing": timing,
        "host": {"cpu": cpu, "cores": 4, "memory_mib": 16000, "kernel": "6.8.0", "hostname": "ci"},
        "harness": {"version": "0.1.0", "git_commit": None},
        "started": started,
        "ended": started,
        "reps": reps,
    }


def write_bundle(path: Path, samples: dict, *, expectations=(), rss=True, **manifest_kw) -> Path:
    """samples: {kernel: {(name, phase): [values per rep]}}; kernels in dict order unless given."""
    from harness.results.metrics import metric

    manifest_kw.setdefault("kernels", tuple(samples))
    path.mkdir(parents=True)
    (path / "manifest.json").write_text(json.dumps(manifest(**manifest_kw)))
    rows = [metric(name, float(v), phase=phase, rep=rep, kernel=k)
            for k, per in samples.items() for (name, phase), vals in per.items() for rep, v in enumerate(vals)]
    (path / "metrics.json").write_text(json.dumps(rows))
    (path / "expectations.json").write_text(json.dumps(list(expectations)))
    for i, k in enumerate(samples):
        for rep in range(2):
            raw = path / k / f"rep{rep}"
            raw.mkdir(parents=True)
            (raw / "serial.log").write_text("Linux version 6.12\n")
            (raw / "transcript.log").write_text("$ true\nexit 0\n")
            if rss:
                (raw / "rss.csv").write_text("t_s,rss_kib\n" + "".join(
                    f"{t / 10:.1f},{200000 + 1000 * t + 5000 * i}\n" for t in range(50)))
    return path
