"""A result bundle in memory: its directory, manifest, metric rows and expectation rows, and the questions
compare, report, junit, table, bench, ablate and bisect ask of it.  Read with :func:`load_bundle`; a run
builds one through :class:`harness.results.writer.BundleWriter`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from harness.errors import InputError
from harness.results.model import SCHEMA, ExpectationRow, KernelRecord, Manifest, MetricRow
from harness.validation import validate

FILES = ("manifest.json", "metrics.json", "expectations.json")


@dataclass
class Bundle:
    path: Path
    manifest: Manifest
    metrics: list[MetricRow] = field(default_factory=list)
    expectations: list[ExpectationRow] = field(default_factory=list)

    @property
    def status(self) -> str:
        return self.manifest.status or "unknown"

    @property
    def error(self) -> str | None:
        return self.manifest.error

    @property
    def scenario(self) -> str:
        return self.manifest.scenario_name

    @property
    def accel(self) -> str | None:
        return self.manifest.accel

    @property
    def timing(self) -> str:
        """realtime or icount; bundles written before timing modes existed ran in real time."""
        return self.manifest.timing or "realtime"

    @property
    def started(self) -> str:
        return self.manifest.started or ""

    def kernel_records(self) -> list[KernelRecord]:
        return self.manifest.kernels

    @property
    def kernels(self) -> list[str]:
        """Kernel labels (spec, else slug) in run order, plus any only the metrics name."""
        labels = [str(k.spec or k.slug) for k in self.kernel_records()]
        for row in self.metrics:
            label = self.kernel_label(row.kernel)
            if label not in labels:
                labels.append(label)
        return labels

    def kernel_slug(self, label: str) -> str:
        for k in self.kernel_records():
            if label in (k.spec, k.slug):
                return str(k.slug or label)
        return label

    def kernel_label(self, name: str) -> str:
        """A metric row's kernel (slug or spec) as the label used in output."""
        for k in self.kernel_records():
            if name in (k.spec, k.slug):
                return str(k.spec or k.slug)
        return str(name)

    def samples(self, label: str) -> dict[tuple[str, str], list[float]]:
        """(name, phase) -> values of one kernel, in metrics.json order (the rep order)."""
        out: dict[tuple[str, str], list[float]] = {}
        for row in self.metrics:
            if self.kernel_label(row.kernel) == label:
                out.setdefault((row.name, row.phase or ""), []).append(float(row.value))
        return out

    def values(self, name: str, phase: str | None = None, kernel: str | None = None) -> list[float]:
        """Values of a metric as recorded (kernel: as the row names it), in order."""
        return [m.value for m in self.metrics
                if m.name == name and (phase is None or m.phase == phase) and (kernel is None or m.kernel == kernel)]

    def write(self, directory: Path) -> None:
        """The three JSON files into `directory`."""
        contents: list[Any] = [_json(self.manifest), [_json(r) for r in self.metrics],
                               [_json(r) for r in self.expectations]]
        for name, data in zip(FILES, contents, strict=True):
            (directory / name).write_text(json.dumps(data, indent=1) + "\n")


def _json(record: BaseModel) -> Any:
    return record.model_dump(mode="json", by_alias=True)


def _read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise InputError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise InputError(f"{path}: {what} is not valid JSON: {exc}") from None


def _rows(path: Path, data: Any, model: type[MetricRow] | type[ExpectationRow], shape: str) -> list:
    if not isinstance(data, list):
        raise InputError(f"{path}: not a JSON list")
    rows = []
    for i, row in enumerate(data):
        try:
            rows.append(model.model_validate(row))
        except ValidationError:
            raise InputError(f"{path}: row {i} is not {shape}") from None
    return rows


def load_bundle(path: Path) -> Bundle:
    """Read a bundle directory; InputError saying why when it is not one."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: not a bundle directory")
    if not (path / "manifest.json").is_file():
        raise InputError(f"{path}: not a bundle (no manifest.json)")
    raw = _read_json(path / "manifest.json", "manifest.json")
    if not isinstance(raw, dict):
        raise InputError(f"{path}/manifest.json: not a JSON object")
    if raw.get("schema") != SCHEMA:
        raise InputError(f"{path}/manifest.json: unsupported schema {raw.get('schema')!r} (expected {SCHEMA})")
    if not isinstance(raw.get("kernels", []), list):
        raise InputError(f"{path}/manifest.json: kernels is not a list")
    manifest = validate(Manifest, raw, f"{path}/manifest.json")
    metrics: list[MetricRow] = []
    if (path / "metrics.json").is_file():
        metrics = _rows(path / "metrics.json", _read_json(path / "metrics.json", "metrics.json"), MetricRow,
                        "{name, value, unit, phase, rep, kernel}")
    elif manifest.status != "failed":
        raise InputError(f"{path}: complete bundle without metrics.json")
    expectations: list[ExpectationRow] = []
    if (path / "expectations.json").is_file():
        expectations = _rows(path / "expectations.json", _read_json(path / "expectations.json", "expectations.json"),
                             ExpectationRow, "{name, kernel, ok, detail}")
    return Bundle(path, manifest, metrics, expectations)
