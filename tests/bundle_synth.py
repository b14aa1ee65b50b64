"""Write synthetic result bundles (harness.results.model, results/README.md) for the compare/report/junit tests.

Loaded by path from the tests (tests/ is not a package), e.g.::

    synth = load_synth()
    synth.write_bundle(tmp_path / "a", {"stock": {("fault_in_ms", "touch"): [10, 11]}})
"""

from __future__ import annotations

from pathlib import Path

from harness.results.bundle import Bundle
from harness.results.model import (
    ExpectationRow,
    HarnessRecord,
    HostRecord,
    KernelRecord,
    Manifest,
    MetricRow,
    QemuRecord,
    ScenarioRecord,
)


def manifest(scenario="smoke", kernels=("stock",), *, status="complete", error=None, accel="kvm",
             qemu="8.2.2", cpu="Intel(R) Xeon(R) CPU", started="2026-11-22T01:30:00Z", reps=3,
             timing="realtime", machine=None) -> Manifest:
    return Manifest(
        status=status,
        error=error,
        scenario=ScenarioRecord(name=scenario, path=f"scenarios/{scenario}.yaml", content=""),
        kernels=[KernelRecord(spec=k, slug=k, zeroing_counters="vmstat") for k in kernels],
        qemu=QemuRecord(version=qemu, binary="/usr/bin/qemu-system-x86_64", argv=[]),
        accel=accel,
        timing=timing,
        host=HostRecord(cpu=cpu, cores=4, memory_mib=16000, kernel="6.8.0", hostname="ci"),
        harness=HarnessRecord(version="0.1.0", git_commit=None),
        started=started,
        ended=started,
        reps=reps,
        machine=machine,
    )


def write_bundle(path: Path, samples: dict, *, expectations=(), rss=True, **manifest_kw) -> Path:
    """samples: {kernel: {(name, phase): [values per rep]}}; kernels in dict order unless given.
    expectations: {name, kernel, ok, detail} dicts."""
    manifest_kw.setdefault("kernels", tuple(samples))
    path.mkdir(parents=True)
    rows = [MetricRow.measured(name, float(v), phase=phase, rep=rep, kernel=k)
            for k, per in samples.items() for (name, phase), vals in per.items() for rep, v in enumerate(vals)]
    Bundle(path, manifest(**manifest_kw), rows, [ExpectationRow.model_validate(e) for e in expectations]).write(path)
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
