"""Scenario files (YAML): what guest to boot, how QEMU backs it, and the steps and expectations.

Validation happens entirely at load time, so a bad file fails in a second with one message naming
the file, the key and what is wrong -- never half-way through a boot.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from harness.errors import InputError
from harness.kernels.spec import KernelSpec, parse_kernel_spec
from harness.machine.config import BACKENDS, TIMING_MODES, MachineConfig

SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT])(?:i?B)?\s*$", re.IGNORECASE)
UNIT_MIB = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}
# memtouch's ways to fault pages in: MADV_POPULATE_WRITE (the default) or a user-space store per page.
FAULT_MODES = ("populate", "store")
STEP_TYPES = ("boot", "balloon", "memdirty", "memtouch", "wait_reporting", "sleep", "snapshot", "contig_bench", "shell")


@dataclass(frozen=True)
class BalloonOptions:
    free_page_reporting: bool = True
    deflate_on_oom: bool = False
    stats_interval_s: int = 0


@dataclass(frozen=True)
class QemuOptions:
    memory_backend: str = "ram"
    prealloc: bool = False
    mem_lock: bool = False
    mem_path: str | None = None  # file backend: a directory or file path (default: the private run dir)
    balloon: BalloonOptions = BalloonOptions()
    timing: str = "realtime"  # one of TIMING_MODES


@dataclass(frozen=True)
class GuestOptions:
    memory_mib: int = 2048
    cpus: int = 2
    cmdline: str = ""


@dataclass(frozen=True)
class Step:
    kind: str
    phase: str
    params: dict


@dataclass(frozen=True)
class Scenario:
    name: str
    path: Path
    content: str
    description: str
    guest: GuestOptions
    qemu: QemuOptions
    kernels: list[KernelSpec]
    repetitions: int
    steps: list[Step]
    expect: dict = field(default_factory=dict)

    def machine(self) -> MachineConfig:
        """The guest machine this scenario describes, for the QEMU layer."""
        g, q = self.guest, self.qemu
        return MachineConfig(memory_mib=g.memory_mib, cpus=g.cpus, cmdline=g.cmdline, memory_backend=q.memory_backend,
                             prealloc=q.prealloc, mem_lock=q.mem_lock, mem_path=q.mem_path,
                             free_page_reporting=q.balloon.free_page_reporting,
                             deflate_on_oom=q.balloon.deflate_on_oom, stats_interval_s=q.balloon.stats_interval_s,
                             timing=q.timing)


class _Where:
    """Builds error messages that name the file and the key path."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, key: str, problem: str):
        raise InputError(f"{self.path}: {key}: {problem}")

    def mapping(self, value, key: str, allowed: dict) -> dict:
        """Check `value` is a mapping whose keys are all in `allowed` (key -> type or tuple of types)."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(key, f"expected a mapping, got {type(value).__name__}")
        for k, v in value.items():
            if k not in allowed:
                self.fail(f"{key}.{k}" if key else str(k), f"unknown key (allowed: {', '.join(allowed)})")
            types = _as_tuple(allowed[k])
            if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
                self.fail(f"{key}.{k}" if key else str(k), f"expected {_type_names(types)}, got {v!r}")
        return value

    def size_mib(self, value, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            self.fail(key, f"expected a size like 512M or 2G, got {value!r}")
        m = SIZE.match(str(value))
        if not m:
            self.fail(key, f"expected a size with a unit like 512M or 2G, got {value!r}")
        mib = float(m.group(1)) * UNIT_MIB[m.group(2).upper()]
        if mib < 1 or mib != int(mib):
            self.fail(key, f"size {value!r} is not a whole number of MiB")
        return int(mib)


def _as_tuple(types) -> tuple:
    return types if isinstance(types, tuple) else (types,)


def _type_names(types) -> str:
    return " or ".join(t.__name__ for t in _as_tuple(types))


def load_scenario(path: str | Path) -> Scenario:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such scenario file")
    content = path.read_text()
    try:
        data = yaml.safe_load(content)
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: malformed YAML: {exc}") from None
    return parse_scenario(data, path, content)


def parse_scenario(data, path: Path, content: str = "") -> Scenario:
    w = _Where(path)
    top = w.mapping(
        data,
        "",
        {
            "name": str,
            "description": str,
            "guest": dict,
            "qemu": dict,
            "kernels": list,
            "repetitions": int,
            "steps": list,
            "expect": dict,
        },
    )
    if not top:
        w.fail("(top)", "the scenario is empty")
    for required in ("name", "steps"):
        if required not in top:
            w.fail(required, "missing")
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", top["name"]):
        w.fail("name", f"{top['name']!r} must be letters, digits, '.', '_' or '-'")

    g = w.mapping(top.get("guest"), "guest", {"memory": (str, int), "cpus": int, "cmdline": str})
    guest = GuestOptions(
        memory_mib=w.size_mib(g["memory"], "guest.memory") if "memory" in g else 2048,
        cpus=g.get("cpus", 2),
        cmdline=g.get("cmdline", ""),
    )
    if guest.memory_mib < 256:
        w.fail("guest.memory", f"{guest.memory_mib} MiB is too small to boot a guest (at least 256M)")
    if not 1 <= guest.cpus <= 64:
        w.fail("guest.cpus", f"{guest.cpus} is not between 1 and 64")

    qemu = _parse_qemu(w, top.get("qemu"))
    kernels = []
    for i, text in enumerate(top.get("kernels", ["stock"])):
        if not isinstance(text, str):
            w.fail(f"kernels[{i}]", f"expected a kernel spec string, got {text!r}")
        try:
            kernels.append(parse_kernel_spec(text))
        except InputError as exc:
            w.fail(f"kernels[{i}]", str(exc))
    if not kernels:
        w.fail("kernels", "needs at least one kernel spec")
    reps = top.get("repetitions", 1)
    if reps < 1:
        w.fail("repetitions", f"must be at least 1, got {reps}")

    steps = _parse_steps(w, top["steps"], guest)
    expect = _parse_expect(w, top.get("expect"))
    return Scenario(
        name=top["name"],
        path=path,
        content=content,
        description=top.get("description", ""),
        guest=guest,
        qemu=qemu,
        kernels=kernels,
        repetitions=reps,
        steps=steps,
        expect=expect,
    )


def _parse_qemu(w: _Where, value) -> QemuOptions:
    q = w.mapping(
        value,
        "qemu",
        {"memory_backend": str, "prealloc": bool, "mem_lock": bool, "mem_path": str, "balloon": dict,
         "timing": str},
    )
    backend = q.get("memory_backend", "ram")
    if backend not in BACKENDS:
        w.fail("qemu.memory_backend", f"{backend!r} is not one of {', '.join(BACKENDS)}")
    timing = q.get("timing", "realtime")
    if timing not in TIMING_MODES:
        w.fail("qemu.timing", f"{timing!r} is not one of {', '.join(TIMING_MODES)}")
    if "mem_path" in q and backend != "file":
        w.fail("qemu.mem_path", "only meaningful with memory_backend: file")
    b = w.mapping(
        q.get("balloon"),
        "qemu.balloon",
        {"free_page_reporting": bool, "deflate_on_oom": bool, "stats_interval_s": int},
    )
    if b.get("stats_interval_s", 0) < 0:
        w.fail("qemu.balloon.stats_interval_s", "must be 0 (off) or a number of seconds")
    return QemuOptions(
        memory_backend=backend,
        prealloc=q.get("prealloc", False),
        mem_lock=q.get("mem_lock", False),
        mem_path=q.get("mem_path"),
        balloon=BalloonOptions(**b),
        timing=timing,
    )


def _parse_steps(w: _Where, raw: list, guest: GuestOptions) -> list[Step]:
    steps: list[Step] = []
    phases: set[str] = set()
    if not raw:
        w.fail("steps", "needs at least one step")
    for i, item in enumerate(raw):
        key = f"steps[{i}]"
        if isinstance(item, str):
            item = {item: None}
        if not isinstance(item, dict):
            w.fail(key, f"expected a step like '- memtouch: 256M', got {item!r}")
        kinds = [k for k in item if k != "phase"]
        if len(kinds) != 1 or kinds[0] not in STEP_TYPES:
            w.fail(key, f"a step has exactly one of {', '.join(STEP_TYPES)} (and optionally phase), got {list(item)}")
        kind = kinds[0]
        if kind == "boot" and i != 0:
            w.fail(key, "boot can only be the first step (every repetition starts with a fresh boot)")
        phase = item.get("phase") or f"{kind}{i}"
        if not isinstance(phase, str) or not re.match(r"^[A-Za-z0-9_-]+$", phase):
            w.fail(f"{key}.phase", f"{phase!r} must be letters, digits, '_' or '-'")
        if phase in phases:
            w.fail(f"{key}.phase", f"phase {phase!r} is used twice")
        phases.add(phase)
        params = _STEP_PARSERS[kind](w, f"{key}.{kind}", item[kind], guest)
        steps.append(Step(kind, phase, params))
    return steps


def _scalar_or_mapping(value, primary: str) -> dict:
    return value if isinstance(value, dict) else ({} if value is None else {primary: value})


def _step_balloon(w, key, value, guest):
    p = w.mapping(_scalar_or_mapping(value, "target"), key, {"target": (str, int), "timeout_s": (int, float)})
    if "target" not in p:
        w.fail(f"{key}.target", "missing")
    target = w.size_mib(p["target"], f"{key}.target")
    if target > guest.memory_mib:
        w.fail(f"{key}.target", f"{target} MiB is above the guest memory ({guest.memory_mib} MiB)")
    if target < 128:
        w.fail(f"{key}.target", f"{target} MiB would leave the guest too little memory to run (at least 128M)")
    return {"target_mib": target, "timeout_s": p.get("timeout_s", 300)}


def _step_mem(w, key, value, guest):
    p = w.mapping(_scalar_or_mapping(value, "size"), key, {"size": (str, int), "thp": bool})
    if "size" not in p:
        w.fail(f"{key}.size", "missing")
    size = w.size_mib(p["size"], f"{key}.size")
    if size >= guest.memory_mib:
        w.fail(f"{key}.size", f"{size} MiB does not fit in the guest's {guest.memory_mib} MiB")
    return {"size_mib": size, "thp": p.get("thp", False)}


def _step_memtouch(w, key, value, guest):
    raw = _scalar_or_mapping(value, "size")
    raw = dict(raw) if isinstance(raw, dict) else raw
    fault = raw.pop("fault", FAULT_MODES[0]) if isinstance(raw, dict) else FAULT_MODES[0]
    if fault not in FAULT_MODES:
        w.fail(f"{key}.fault", f"{fault!r} is not one of {', '.join(FAULT_MODES)}")
    return {**_step_mem(w, key, raw, guest), "fault": fault}


def _step_wait_reporting(w, key, value, guest):
    p = w.mapping(value, key, {"timeout_s": (int, float), "settle_s": (int, float)})
    return {"timeout_s": p.get("timeout_s", 60), "settle_s": p.get("settle_s", 3)}


def _step_sleep(w, key, value, guest):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        w.fail(key, f"expected a number of seconds, got {value!r}")
    return {"seconds": value}


def _step_snapshot(w, key, value, guest):
    return {}


def _step_boot(w, key, value, guest):
    if value is not None:
        w.fail(key, "takes no parameters")
    return {}


def _step_contig_bench(w, key, value, guest):
    p = w.mapping(_scalar_or_mapping(value, "iterations"), key, {"iterations": int, "order": int})
    if p.get("iterations", 1) < 1 or not 0 <= p.get("order", 9) <= 10:
        w.fail(key, "iterations must be >= 1 and order between 0 and 10")
    return {"iterations": p.get("iterations", 2000), "order": p.get("order", 9)}


def _step_shell(w, key, value, guest):
    p = w.mapping(_scalar_or_mapping(value, "command"), key, {"command": str, "timeout_s": (int, float)})
    if not p.get("command"):
        w.fail(f"{key}.command", "missing")
    return {"command": p["command"], "timeout_s": p.get("timeout_s", 60)}


_STEP_PARSERS = {
    "boot": _step_boot,
    "balloon": _step_balloon,
    "memdirty": _step_mem,
    "memtouch": _step_memtouch,
    "wait_reporting": _step_wait_reporting,
    "sleep": _step_sleep,
    "snapshot": _step_snapshot,
    "contig_bench": _step_contig_bench,
    "shell": _step_shell,
}

METRIC_CHECK_KEYS = {"name": str, "phase": str, "kernel": str, "min": (int, float), "max": (int, float),
                     "equals": (int, float)}
RATIO_CHECK_KEYS = {"name": str, "phase": str, "kernel": str, "baseline": str, "max_ratio": (int, float),
                    "min_ratio": (int, float)}


def _parse_expect(w: _Where, value) -> dict:
    e = w.mapping(
        value,
        "expect",
        {
            "balloon_reached": bool,
            "balloon_inflate_matches": bool,
            "rss_fell_after_reporting": dict,
            "nonzero_pages": int,
            "kernel_log_clean": bool,
            "metrics": list,
            "ratios": list,
        },
    )
    if "rss_fell_after_reporting" in e:
        w.mapping(e["rss_fell_after_reporting"], "expect.rss_fell_after_reporting", {"min_mib": (int, float)})
    for i, check in enumerate(e.get("metrics", [])):
        c = w.mapping(check, f"expect.metrics[{i}]", METRIC_CHECK_KEYS)
        if "name" not in c or not {"min", "max", "equals"} & set(c):
            w.fail(f"expect.metrics[{i}]", "needs name and one of min, max, equals")
    for i, check in enumerate(e.get("ratios", [])):
        c = w.mapping(check, f"expect.ratios[{i}]", RATIO_CHECK_KEYS)
        if not {"name", "kernel", "baseline"} <= set(c) or not {"max_ratio", "min_ratio"} & set(c):
            w.fail(f"expect.ratios[{i}]", "needs name, kernel, baseline and max_ratio or min_ratio")
    return e
