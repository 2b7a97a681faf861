"""`hvtui doctor PRESET [--json]`: environment, model assets and memory fit; exit 3 if any check fails."""
from __future__ import annotations

import os
import shutil
import sys
import textwrap

from hvtui.core.env.doctor import run_doctor
from hvtui.core.env.doctor_report import FAIL, OK, WARN, DoctorReport
from hvtui.core.env.doctor_system import check_gpu_count
from hvtui.core.preset.schema import PresetError, load_preset
from hvtui.core.run import exitcodes

COLORS = {OK: "\033[32m", WARN: "\033[33m", FAIL: "\033[31;1m"}
RESET = "\033[0m"


def _color(out) -> bool:
    return hasattr(out, "isatty") and out.isatty() and not os.environ.get("NO_COLOR")


def _wrap(text: str, width: int) -> list[str]:
    # paths and repo ids stay whole: no breaks at their hyphens
    return textwrap.wrap(text, width, break_on_hyphens=False, break_long_words=False)


def format_doctor_report(report: DoctorReport, width: int = 100, color: bool = False) -> str:
    """The checks as a table (status, name, detail; the hint under a failing or warning row), then a verdict."""
    name_w = max([len(c.name) for c in report.checks] + [5])
    indent = 7 + name_w + 2
    body_w = max(30, width - indent)
    lines = [f"{'STATUS':<7}{'CHECK':<{name_w + 2}}DETAIL"]
    group = None
    for c in report.checks:
        if c.group != group:
            group = c.group
            lines.append(f"-- {group or 'other'}")
        status = f"{c.status:<7}"
        if color:
            status = f"{COLORS[c.status]}{c.status:<4}{RESET}   "
        detail = _wrap(c.detail, body_w) or [""]
        lines.append(f"{status}{c.name:<{name_w + 2}}{detail[0]}")
        lines += [" " * indent + d for d in detail[1:]]
        if c.hint and c.status != OK:
            for i, h in enumerate(_wrap(c.hint, body_w - 6)):
                lines.append(" " * indent + ("hint: " if i == 0 else "      ") + h)
    n = report.counts()
    verdict = (f"{n[FAIL]} failed, {n[WARN]} warning{'s' if n[WARN] != 1 else ''}, {n[OK]} ok"
               + (": fix the failed checks before training" if report.failed else ": ready"))
    where = report.preset.source or "preset"
    lines += ["", f"{where}: {verdict}"]
    return "\n".join(lines)


def main(args) -> int:
    try:
        preset = load_preset(args.preset)
    except PresetError as e:
        print(f"hvtui doctor: {e}", file=sys.stderr)
        return exitcodes.INVALID
    gpus = getattr(args, "gpus", 1)
    report = run_doctor(preset, processes=gpus)
    if gpus != 1:
        report.checks.append(check_gpu_count(gpus, report.gpu))
    if getattr(args, "json", False):
        print(report.to_json())
    else:
        width = shutil.get_terminal_size((100, 24)).columns
        print(format_doctor_report(report, width=min(max(width, 60), 160), color=_color(sys.stdout)))
    return report.exit_code
