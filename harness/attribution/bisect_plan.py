"""What a bisect is asked to do and what it has learnt beside its search state, as `bisect.json` keeps it
(the search's own steps are kept by `search.BisectState` in the same file)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from harness.attribution.judge import Criterion
from harness.attribution.search import BAD
from harness.errors import InputError
from harness.kernels.record import Record


class BisectPlan(Record):
    scenario: str  # the scenario file, absolute
    good: str | None = None  # the ends as given (a spec, or a revision with --tree); bisect-check has none
    bad: str | None = None
    tree: str | None = None  # a developer's checkout: candidates are its commits, else kernel specs
    candidates: list[str]
    labels: list[str]
    criterion: Criterion
    direction: int | None = None  # the sign of the change that makes a candidate bad, once the bad end is judged
    reps: int
    max_reps: int
    timing: str | None = None
    panic: str = BAD
    bad_fail_rate: float | None = None  # with an expectation: how often (at least) the bad end fails it
    bundles: dict[str, list[str]] = {}  # candidate index -> the bundles of its rounds
    images: dict[str, str] = {}  # candidate index -> sha256 of its kernel image

    def to_json(self) -> dict:
        return self.model_dump(mode="json")

    @classmethod
    def read(cls, path: Path) -> BisectPlan:
        try:
            data = json.loads(path.read_text())
            data.pop("steps", None)
            return cls.model_validate(data)
        except (OSError, ValueError, ValidationError) as exc:
            raise InputError(f"{path}: not a readable bisect state: {str(exc).splitlines()[0]}") from None
