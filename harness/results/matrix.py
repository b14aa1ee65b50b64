"""A nightly matrix file: a YAML list of entries, each one scenario on its kernels (`harness nightly`,
`harness plan`); validated on load, InputError naming the file, the entry and the key."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError

from harness.errors import InputError
from harness.kernels.spec import KernelSpec, KernelSpecField
from harness.scenario.bounds import Repetitions
from harness.validation import Strict, first_problem
from harness.yamlfile import load_yaml_file


@dataclass
class MatrixEntry:
    index: int
    scenario: str  # as written
    path: Path  # resolved (may not exist)
    kernels: list[KernelSpec] | None
    reps: int | None
    timing: str | None = None  # None: the --timing option, else the scenario's own
    aa: bool = False

    @property
    def label(self) -> str:
        kernels = ",".join(k.text for k in self.kernels) if self.kernels else "scenario default"
        return f"entry {self.index} ({self.scenario}, kernels {kernels})"


def _resolve(scenario: str, matrix: Path) -> Path:
    p = Path(scenario).expanduser()
    if p.is_absolute():
        return p
    for base in (matrix.parent, Path.cwd()):
        if (base / p).is_file():
            return base / p
    return matrix.parent / p


class MatrixItem(Strict):
    """One entry of a matrix file as written."""

    scenario: Annotated[str, Field(min_length=1)]
    kernels: Annotated[list[KernelSpecField], Field(min_length=1)] | None = None
    reps: Repetitions | None = None
    timing: Literal["realtime", "icount"] | None = None
    aa: bool = False  # A/A calibration: exactly one kernel run against itself (its repetitions)


def _entry_problem(exc: ValidationError) -> str:
    loc, message, unknown = first_problem(exc)
    if unknown:
        return f"unknown key(s) {loc[0]} {message.removeprefix('unknown key ')}"
    return f"key '{loc[0]}': {message}" if loc else message


def load_matrix(path: Path) -> list[MatrixEntry]:
    """Parse and validate a matrix file; InputError naming the file, the entry and the key."""
    data = load_yaml_file(path, "matrix file")
    if not isinstance(data, list) or not data:
        raise InputError(f"{path}: expected a non-empty YAML list of {{{', '.join(MatrixItem.keys())}}} entries")
    entries = []
    for i, raw in enumerate(data):
        try:
            item = MatrixItem.model_validate(raw)
        except ValidationError as exc:
            raise InputError(f"{path}: entry {i}: {_entry_problem(exc)}") from None
        if item.aa and (item.kernels is None or len(item.kernels) != 1):
            raise InputError(f"{path}: entry {i}: key 'aa': an A/A entry names exactly one kernel in 'kernels'")
        entries.append(MatrixEntry(i, item.scenario, _resolve(item.scenario, path), item.kernels, item.reps,
                                   item.timing, item.aa))
    return entries
