"""A corpus of bad scenario files: each is exit 2 from `harness run`, one line naming the file, the key and
the problem, and nothing made (the results directory is created only once a run starts).

Impossible durations, counts and sizes (harness.scenario.bounds), and expectations that could only fail at
the end of a run: a phase no step has, a kernel the run does not know, a metric the harness never records.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

GUEST = "guest: {memory: 1G, cpus: 1}\n"
STEPS = "steps: [boot, {memtouch: 64M, phase: touch}]\n"

CORPUS = {
    # durations
    "wait-timeout-negative": ("steps: [boot, {wait_reporting: {timeout_s: -5}}]",
                              "steps[1].wait_reporting.timeout_s: must be more than 0, got -5"),
    "wait-timeout-inf": ("steps: [{wait_reporting: {timeout_s: .inf}}]",
                         "steps[0].wait_reporting.timeout_s: expected a finite number, got inf"),
    "wait-settle-negative": ("steps: [{wait_reporting: {settle_s: -1}}]",
                             "steps[0].wait_reporting.settle_s: must be at least 0, got -1"),
    "balloon-timeout-zero": ("steps: [{balloon: {target: 512M, timeout_s: 0}}]",
                             "steps[0].balloon.timeout_s: must be more than 0, got 0"),
    "sleep-negative": ("steps: [{sleep: -1}]", "steps[0].sleep.seconds: must be at least 0, got -1"),
    "sleep-a-week": ("steps: [{sleep: 604800}]", "steps[0].sleep.seconds: must be at most 86400, got 604800"),
    "sleep-nan": ("steps: [{sleep: .nan}]", "steps[0].sleep.seconds: expected a finite number, got nan"),
    "shell-timeout-negative": ("steps: [{shell: {command: 'true', timeout_s: -1}}]",
                               "steps[0].shell.timeout_s: must be more than 0, got -1"),
    "stress-seconds-zero": ("steps: [{stress: {seconds: 0, memdirty: 64M, memtouch: 64M, balloon_low: 512M}}]",
                            "steps[0].stress.seconds: must be more than 0, got 0"),
    "stress-period-negative": ("steps: [{stress: {seconds: 5, memdirty: 64M, memtouch: 64M, balloon_low: 512M, "
                               "balloon_period_s: -2}}]", "steps[0].stress.balloon_period_s: must be more than 0"),
    "selftest-timeout-negative": ("steps: [{kselftest: {tests: [{name: cow, timeout_s: -1}]}}]",
                                  "steps[0].kselftest.tests[0].timeout_s: must be more than 0, got -1"),
    "fault-scale-seconds-zero": ("steps: [{fault_scale: {seconds: 0}}]", "steps[0].fault_scale.seconds"),
    "stats-interval-negative": ("qemu: {balloon: {stats_interval_s: -1}}\nsteps: [boot]",
                                "qemu.balloon.stats_interval_s: must be at least 0, got -1"),
    # counts
    "repetitions-zero": ("repetitions: 0\nsteps: [boot]", "repetitions: must be at least 1, got 0"),
    "repetitions-huge": ("repetitions: 100000\nsteps: [boot]", "repetitions: must be at most 1000, got 100000"),
    "repetitions-float": ("repetitions: 2.5\nsteps: [boot]", "repetitions: expected a whole number, got 2.5"),
    "contig-iterations-zero": ("steps: [{contig_bench: 0}]", "steps[0].contig_bench.iterations: must be at least 1"),
    "contig-order-11": ("steps: [{contig_bench: {order: 11}}]", "steps[0].contig_bench.order: must be at most 10"),
    "fault-scale-workers-zero": ("steps: [{fault_scale: {workers: 0}}]",
                                 "steps[0].fault_scale.workers: must be at least 1"),
    "cpus-zero": ("guest: {cpus: 0}\nsteps: [boot]", "guest.cpus: must be at least 1, got 0"),
    "cpus-65": ("guest: {cpus: 65}\nsteps: [boot]", "guest.cpus: must be at most 64, got 65"),
    "nonzero-pages-negative": ("steps: [boot]\nexpect: {nonzero_pages: -1}",
                               "expect.nonzero_pages: must be at least 0, got -1"),
    # sizes
    "memory-2T": ("guest: {memory: 2T}\nsteps: [boot]", "guest.memory: 2097152 MiB is more than a guest can have"),
    "memory-tiny": ("guest: {memory: 64M}\nsteps: [boot]", "guest.memory: 64 MiB is too small to boot a guest"),
    "memtouch-fraction": ("steps: [{memtouch: 0.5M}]", "steps[0].memtouch.size: size '0.5M' is not a whole number"),
    "memtouch-too-big": ("steps: [{memtouch: 4G}]", "steps[0].memtouch.size: 4096 MiB does not fit"),
    "balloon-above-memory": ("steps: [{balloon: 8G}]", "steps[0].balloon.target: 8192 MiB is above the guest memory"),
    "rss-fell-negative": ("steps: [boot]\nexpect: {rss_fell_after_reporting: {min_mib: -1}}",
                          "expect.rss_fell_after_reporting.min_mib: must be at least 0, got -1"),
    # expectations that could only fail once the run is over
    "metric-phase-missing": ("expect: {metrics: [{name: fault_in_ms, phase: zz, max: 5}]}",
                             "expect.metrics[0].phase: no step has phase 'zz' (phases: boot0, touch, boot)"),
    "ratio-phase-missing": ("kernels: [stock, base]\n"
                            "expect: {ratios: [{name: sys_ms, phase: zz, kernel: base, baseline: stock, "
                            "max_ratio: 1}]}", "expect.ratios[0].phase: no step has phase 'zz'"),
    "metric-kernel-unknown": ("expect: {metrics: [{name: fault_in_ms, kernel: base, max: 5}]}",
                              "expect.metrics[0].kernel: 'base' is not a kernel this run knows"),
    "metric-name-unknown": ("expect: {metrics: [{name: fault_in_msec, phase: touch, max: 5}]}",
                            "expect.metrics[0].name: 'fault_in_msec' is not a metric the harness records "
                            "(did you mean fault_in_ms"),
    "metric-vmstat-untracked": ("expect: {metrics: [{name: vmstat.nr_free_pages, min: 1}]}",
                                "expect.metrics[0].name: 'vmstat.nr_free_pages' is not a metric the harness records"),
    "ratio-name-unknown": ("kernels: [stock, base]\n"
                           "expect: {ratios: [{name: kprobe.clear_page_erms, kernel: base, baseline: stock, "
                           "max_ratio: 1}]}", "expect.ratios[0].name: 'kprobe.clear_page_erms' is not a metric"),
    "metric-min-above-max": ("expect: {metrics: [{name: fault_in_ms, min: 5, max: 1}]}",
                             "expect.metrics[0].min: min 5 is above max 1: no value can pass"),
    "metric-bound-nan": ("expect: {metrics: [{name: fault_in_ms, max: .nan}]}",
                         "expect.metrics[0].max: expected a finite number, got nan"),
    "ratio-zero": ("kernels: [stock, base]\n"
                   "expect: {ratios: [{name: sys_ms, kernel: base, baseline: stock, max_ratio: 0}]}",
                   "expect.ratios[0].max_ratio: must be more than 0, got 0"),
}

# One process runs every file through the CLI's own main(): exit code and stderr per case.
DRIVER = textwrap.dedent("""
    import contextlib, io, json, sys
    from harness import cli
    out = {}
    for name, path, results in json.loads(sys.argv[1]):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            try:
                rc = cli.main(["run", path, "--results", results])
            except SystemExit as exc:
                rc = exc.code
        out[name] = [rc, err.getvalue()]
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    cases = []
    for name, (text, _) in CORPUS.items():
        body = text if text.startswith("steps") or "\nsteps" in text else STEPS + text
        (d / f"{name}.yaml").write_text("name: s\n" + ("" if "guest:" in text else GUEST) + body + "\n")
        cases.append([name, str(d / f"{name}.yaml"), str(d / "results" / name)])
    proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(cases)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return d, json.loads(proc.stdout)


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_bad_scenario_is_one_line_and_exit_2_before_anything_runs(outcomes, name):
    d, out = outcomes
    rc, err = out[name]
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"harness: error: {d / name}.yaml: "), lines[0]
    assert CORPUS[name][1] in lines[0], lines[0]
    assert not (d / "results" / name).exists()
