"""Scenario validation: every bad input is one clear error naming the file and the key."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness.errors import InputError
from harness.paths import REPO_ROOT
from harness.scenario.schema import load_scenario
from tests.conftest import write_scenario as write

GOOD = """
name: t
guest: {memory: 2G, cpus: 2}
steps:
  - balloon: 1G
  - memtouch: {size: 256M, thp: true}
expect: {nonzero_pages: 0}
"""


def test_good_scenario_parses(tmp_path):
    s = load_scenario(write(tmp_path, GOOD))
    assert s.guest.memory_mib == 2048
    assert [st.kind for st in s.steps] == ["balloon", "memtouch"]
    assert s.steps[0].params.target_mib == 1024
    assert s.steps[1].params.model_dump() == {"size_mib": 256, "thp": True, "fault": "populate"}
    assert [k.text for k in s.kernels] == ["stock"]
    assert s.machine().machine_type == "q35"


def test_the_machine_type_reaches_qemu(tmp_path):
    from harness.machine.qemu_argv import qemu_argv

    config = load_scenario(write(tmp_path, GOOD + "qemu: {machine: pc}\n")).machine()
    argv = qemu_argv(kernel=tmp_path / "k", initrd=tmp_path / "i", config=config, accel="tcg", rundir=tmp_path,
                     serial_log=tmp_path / "s", ssh_port=2222)
    assert argv[argv.index("-machine") + 1] == "pc,memory-backend=mem0"


def test_every_shipped_scenario_is_valid():
    for path in sorted((REPO_ROOT / "scenarios").glob("*.yaml")):
        if not path.name.startswith("nightly"):  # nightly*.yaml are matrices
            load_scenario(path)


@pytest.mark.parametrize(
    "text, message",
    [
        ("name: t\nsteps: [snapshot]\nbogus: 1\n", "bogus: unknown key"),
        ("name: t\nguest: {memory: lots}\nsteps: [snapshot]\n", "guest.memory: expected a size"),
        ("name: t\nguest: {memory: 2G, cpus: two}\nsteps: [snapshot]\n", "guest.cpus: expected int"),
        ("name: t\nguest: {memory: 2G}\nsteps: [{balloon: 3G}]\n", "above the guest memory"),
        ("name: t\nguest: {memory: 2G}\nsteps: [{memtouch: 4G}]\n", "does not fit"),
        ("name: t\nsteps: [{explode: 1}]\n", "steps[0]: a step has exactly one of"),
        ("name: t\nsteps: [snapshot]\nqemu: {memory_backend: nvme}\n", "qemu.memory_backend"),
        ("name: t\nsteps: [snapshot]\nqemu: {balloon: {free_page_reporting: 1}}\n", "expected bool"),
        ("name: t\nsteps: [snapshot]\nkernels: [linux-9]\n", "kernels[0]"),
        ("name: t\nsteps: [snapshot, boot]\n", "boot can only be the first step"),
        ("steps: [snapshot]\n", "name: missing"),
        ("name: t\nsteps: [{memtouch: 12}]\n", "expected a size with a unit"),
        ("name: t\nsteps: [{memtouch: {size: 1M, fault: atomic}}]\n", "steps[0].memtouch.fault: 'atomic' is not one of"),
        ("name: t\nsteps: [{memdirty: {size: 1M, fault: store}}]\n", "unknown key"),
        ("name: t\nsteps: [snapshot]\nexpect: {metrics: [{name: x}]}\n", "expect.metrics[0]"),
        ("name: t\nsteps: [{memtouch: 1M, phase: a}, {memtouch: 1M, phase: a}]\n", "used twice"),
        ("name: t\nsteps: [{fault_scale: {mapping: shared}}]\n", "steps[0].fault_scale.mapping: 'shared' is not one of"),
        ("name: t\nsteps: [{fault_scale: {workers: 0}}]\n", "steps[0].fault_scale.workers"),
        ("name: t\nsteps: [{fault_scale: {seconds: 0}}]\n", "steps[0].fault_scale.seconds"),
        ("name: t\nsteps: [{fault_scale: {tasks: fibers}}]\n", "steps[0].fault_scale.tasks"),
        ("name: t\nguest: {memory: 1G}\nsteps: [{fault_scale: {mapping: file, workers: 4, region: 128M}}]\n",
         "steps[0].fault_scale.region: 4 worker(s) x 128 MiB (and a tmpfs file each) do not fit"),
        ("name: [unclosed\n", "malformed YAML"),
    ],
)
def test_bad_scenarios_name_the_problem(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(InputError) as exc:
        load_scenario(path)
    assert str(path) in str(exc.value)
    assert message in str(exc.value)


def test_cli_bad_scenario_exits_2_with_one_line(tmp_path):
    path = write(tmp_path, "name: t\nguest: {memory: 2G}\nsteps: [{balloon: 3G}]\n")
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(path), "--results", str(tmp_path / "r")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "steps[0].balloon.target" in lines[0], proc.stderr
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


def test_cli_missing_scenario_and_kernel(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(tmp_path / "nope.yaml")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "no such scenario file" in proc.stderr
    good = write(tmp_path, GOOD)
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(good), "--kernel", "/no/such/bzImage"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "no such kernel image file" in proc.stderr


def test_kernel_problems_are_picked_out_of_dmesg():
    from harness.scenario.steps import kernel_problems

    dmesg = """[    2.385002] contig_bench: loading out-of-tree module taints kernel.
[   12.101010] ------------[ cut here ]------------
[   12.101011] WARNING: CPU: 1 PID: 87 at mm/page_alloc.c:1234 post_alloc_hook+0x1a/0x90
[   12.101012] Modules linked in: virtio_balloon
[   13.000000] BUG: Bad page state in process memtouch  pfn:12345
[   14.000000] virtio_balloon virtio1: Free page reporting: host zeroes reported pages
"""
    problems = kernel_problems(dmesg)
    assert len(problems) == 2
    assert problems[0].endswith("post_alloc_hook+0x1a/0x90") and "Bad page state" in problems[1]
    assert kernel_problems("[    0.1] Linux version 6.12.117+\n[    0.2] Run /init as init process\n") == []


def test_same_kernel_twice_is_bad_input(tmp_path):
    import subprocess
    import sys

    scenario = tmp_path / "s.yaml"
    scenario.write_text("name: s\nsteps: [sleep: 1]\n")
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(scenario), "--kernel", "stock",
                           "--kernel", "stock", "--results", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2 and "named twice: stock" in proc.stderr
    assert list(tmp_path.iterdir()) == [scenario], "bad input must not start a run"


def test_image_files_with_the_same_name_get_different_slugs(tmp_path):
    from harness.kernels.spec import parse_kernel_spec

    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "bzImage").write_bytes(b"\0" * 0x202 + b"HdrS")
    a, b = (parse_kernel_spec(str(tmp_path / d / "bzImage")) for d in ("a", "b"))
    assert a.slug != b.slug and a.slug.startswith("bzImage-")


def test_step_parameters_are_typed(tmp_path):
    s = load_scenario(write(tmp_path, "name: t\nsteps:\n  - boot\n  - wait_reporting\n  - sleep: 0.5\n"
                                      "  - contig_bench: 10\n  - shell: {command: 'true', timeout_s: 5}\n"))
    boot, wait, sleep, bench, shell = (st.params for st in s.steps)
    assert [st.phase for st in s.steps] == ["boot0", "wait_reporting1", "sleep2", "contig_bench3", "shell4"]
    assert (wait.timeout_s, wait.settle_s, sleep.seconds) == (60, 3, 0.5)
    assert (bench.iterations, bench.order, shell.command, shell.timeout_s) == (10, 9, "true", 5)


@pytest.mark.parametrize(
    "text, message",
    [
        ("name: t\nsteps: [snapshot]\nname: u\n", "line 3: duplicate key 'name' (first given on line 1)"),
        ("name: t\nsteps: [{memtouch: {size: 1M, size: 2M}}]\n", "line 2: duplicate key 'size'"),
        ("name: t\nsteps: [{boot: 3}]\n", "steps[0].boot: takes no parameters"),
        ("name: t\nsteps: [{contig_bench: {order: 11}}]\n", "steps[0].contig_bench.order: must be at most 10"),
        ("name: t\nsteps: [{shell: ''}]\n", "steps[0].shell.command: must not be empty"),
        ("name: t\nsteps: [{sleep: -1}]\n", "steps[0].sleep.seconds: must be at least 0"),
        ("name: t\nsteps: [snapshot]\nqemu: {mem_path: /x}\n", "qemu.mem_path: only meaningful"),
        ("name: t\nsteps: [snapshot]\nqemu: {machine: microvm}\n", "qemu.machine: 'microvm' is not one of q35, pc"),
        ("name: t\nsteps: []\n", "steps: must not be empty"),
        ("name: t\nsteps: [snapshot]\nguest: {zeroing: kprobe}\n",
         "guest.zeroing: 'kprobe' is not one of auto, vmstat, trace, both"),
        ("", "(top): the scenario is empty"),
        ("- 1\n", "(top): expected a mapping, got list"),
        ("name: t\nsteps: [snapshot]\nexpect: {ratios: [{name: x, kernel: a, baseline: b}]}\n",
         "expect.ratios[0]: needs name, kernel, baseline and max_ratio or min_ratio"),
    ],
)
def test_more_bad_scenarios_are_one_line(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(InputError) as exc:
        load_scenario(path)
    assert str(exc.value) == f"{path}: {str(exc.value).split(': ', 1)[1]}" and "\n" not in str(exc.value)
    assert message in str(exc.value)


def test_every_shipped_scenario_validates_against_the_exported_json_schema():
    import json

    import jsonschema
    import yaml

    proc = subprocess.run([sys.executable, "-m", "harness.cli", "schema"], capture_output=True, text=True, check=True)
    schema = json.loads(proc.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    scenarios = [p for p in sorted((REPO_ROOT / "scenarios").glob("*.yaml")) if not p.name.startswith("nightly")]
    assert scenarios
    for path in scenarios:
        errors = [e.message for e in validator.iter_errors(yaml.safe_load(path.read_text()))]
        assert not errors, f"{path.name}: {errors}"
    for bad in ({"name": "t", "steps": ["explode"]}, {"name": "t", "steps": [{"memtouch": {"size": "1M", "x": 1}}]},
                {"steps": ["snapshot"]}, {"name": "t", "steps": ["snapshot"], "qemu": {"timing": "fast"}}):
        assert not validator.is_valid(bad), bad


@pytest.mark.parametrize(
    "steps, message",
    [
        ("[{kselftest: []}]", "steps[0].kselftest.tests: must not be empty"),
        ("[{kselftest: [cow, cow]}]", "steps[0].kselftest.tests: cow named twice"),
        ("[{kselftest: {suite: net, tests: [cow]}}]", "steps[0].kselftest.suite: 'net' is not one of mm"),
        ("[{kselftest: {tests: [cow], timeout_s: 0}}]", "steps[0].kselftest.timeout_s: must be more than 0, got 0"),
        ("[{upload: {src: x, dest: relative}}]", "steps[0].upload.dest"),
        ("[{stress: {seconds: 10, memdirty: 600M, memtouch: 100M, balloon_low: 640M}}]",
         "steps[0].stress.balloon_low: memdirty + memtouch (700 MiB) do not fit"),
        ("[{stress: {seconds: 10, memdirty: 60M, memtouch: 10M, balloon_low: 2G}}]",
         "steps[0].stress.balloon_low: 2048 MiB is not below the guest memory"),
    ],
)
def test_bad_workload_steps_are_one_line(tmp_path, steps, message):
    path = write(tmp_path, f"name: t\nguest: {{memory: 1G}}\nsteps: {steps}\n")
    with pytest.raises(InputError) as exc:
        load_scenario(path)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_kselftest_on_a_kernel_without_a_tree_is_bad_input_before_boot(tmp_path):
    path = write(tmp_path, "name: t\nsteps: [{kselftest: [cow]}]\n")
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(path), "--results", str(tmp_path / "r")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert "kernel 'stock'" in line and "own source tree" in line
    assert not (tmp_path / "r").exists()


def test_every_step_kind_has_its_function():
    """The runner dispatches by STEP_FUNCTIONS: every kind the schema accepts runs (boot first, zeroing_paths
    around the step it wraps), and nothing there is a kind the schema refuses."""
    from harness.scenario.schema import STEP_TYPES
    from harness.scenario.steps import STEP_FUNCTIONS

    assert set(STEP_FUNCTIONS) == set(STEP_TYPES) - {"boot", "zeroing_paths"}
