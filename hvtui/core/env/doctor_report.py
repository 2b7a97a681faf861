"""What `hvtui doctor` answers with: a Check per question (ok / warn / fail, a detail line, a hint a user can
act on, its group) and the DoctorReport of a whole run (checks, resolved components, the fit estimate, the GPU).
With the small formatting helpers the doctor's parts share."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from hvtui.core.env.assets import (
    Component,
)
from hvtui.core.env.fit import FitEstimate
from hvtui.core.env.nvml import NvmlInfo
from hvtui.core.preset.schema import BUILTIN_TINY, Preset
from hvtui.core.run import exitcodes

OK, WARN, FAIL = "ok", "warn", "fail"



@dataclass
class Check:
    name: str
    status: str          # ok | warn | fail
    detail: str
    hint: str = ""
    group: str = ""      # system | model | fit

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DoctorReport:
    preset: Preset
    checks: list[Check] = field(default_factory=list)
    components: list[Component] = field(default_factory=list)
    fit: FitEstimate | None = None
    gpu: NvmlInfo | None = None

    @property
    def failed(self) -> bool:
        return any(c.status == FAIL for c in self.checks)

    @property
    def exit_code(self) -> int:
        return exitcodes.DOCTOR_FAILED if self.failed else exitcodes.OK

    def counts(self) -> dict[str, int]:
        return {s: sum(1 for c in self.checks if c.status == s) for s in (OK, WARN, FAIL)}

    def get(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)

    def to_dict(self) -> dict:
        return {"preset": str(self.preset.source) if self.preset.source else None,
                "flavour": self.preset.model_flavour, "ok": not self.failed, "exit_code": self.exit_code,
                "counts": self.counts(), "checks": [c.to_dict() for c in self.checks],
                "components": [c.to_dict() for c in self.components],
                "fit": self.fit.to_dict() if self.fit else None,
                "gpu": self.gpu.to_dict() if self.gpu else None}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, default=str)


def source_words(source: str) -> str:
    if source == "model":
        return "the model folder"
    kind, _, what = source.partition(":")
    return {"preset": f"preset key {what}", "env": f"${what}", "hf-cache": f"the HF cache ({what})"}.get(kind, source)


def version_tuple(v: str) -> tuple[int, ...]:
    out = []
    for part in v.split("+")[0].split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


def real_model(preset: Preset) -> bool:
    return preset.pretrained_model_name_or_path != BUILTIN_TINY
