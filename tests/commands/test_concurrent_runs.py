"""`harness run`s started together into one results directory (CI jobs on one runner, a bisect beside a run)
all keep their bundle: a second run of a name in the same second gets -2, the next -3; nothing is left under
.tmp-* and each run prints its own bundle."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest

pytestmark = pytest.mark.vm  # starts QEMU (which fails at once: no boot)

# QEMU cannot open its RAM backing file: the run fails a second after it made its bundle.
NO_RAM = """name: no-ram
guest: {memory: 512M, cpus: 1}
qemu: {memory_backend: file, mem_path: /proc/no-such-dir/ram}
steps: [boot]
"""
RUNS = 4  # started together, they make their bundles within 3 seconds: two of them share a second


def test_runs_started_together_all_write_their_bundle(tmp_path):
    scenario = tmp_path / "s.yaml"
    scenario.write_text(NO_RAM)
    for attempt in range(3):
        results = tmp_path / f"results{attempt}"
        procs = [subprocess.Popen([sys.executable, "-m", "harness.cli", "run", str(scenario), "--results",
                                   str(results)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(RUNS)]
        outs = [p.communicate(timeout=300) for p in procs]
        for p, (_, err) in zip(procs, outs, strict=True):
            assert p.returncode == 1 and "could not be written" not in err, err
        names = sorted(p.name for p in results.iterdir())
        stamps = Counter(n.split("-")[0] for n in names)
        if max(stamps.values()) > 1:
            break
    assert len(names) == RUNS and not [n for n in names if n.startswith(".")], names
    assert max(stamps.values()) > 1, f"no two runs started in the same second: {names}"
    for stamp, count in stamps.items():
        first = f"{stamp}-no-ram-stock"
        assert sorted(n for n in names if n.startswith(stamp)) == sorted([first] + [f"{first}-{k}"
                                                                                    for k in range(2, count + 1)])
    printed = sorted(out.strip().splitlines()[-1] for out, _ in outs)
    assert printed == [str(results / n) for n in names]  # each run printed its own bundle
    for n in names:
        manifest = json.loads((results / n / "manifest.json").read_text())
        assert manifest["status"] == "failed" and "backing store" in manifest["error"]
