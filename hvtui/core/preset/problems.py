"""What `hvtui check` reports: one Problem per finding (file, line, key, what is wrong, how to fix it) and
the Validation of a whole file. Shared by check.py, its rules, the SimpleTuner import and every face."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from hvtui.core.preset.schema import Preset

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Problem:
    severity: str          # "error" | "warning"
    file: str
    line: int | None
    key: str               # e.g. "learning_rate", "datasets[0].video.num_frames"
    message: str           # what is wrong
    fix: str               # how to fix it

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.message}; {self.fix}"

    @property
    def is_error(self) -> bool:
        return self.severity == ERROR

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Validation:
    file: str
    preset: Preset | None
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.is_error]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if not p.is_error]

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_json(self) -> dict:
        return {"file": self.file, "ok": self.ok, "errors": len(self.errors), "warnings": len(self.warnings),
                "problems": [p.to_dict() for p in self.problems]}
