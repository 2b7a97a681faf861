"""`hvtui import-simpletuner CONFIG_JSON [MULTIDATABACKEND_JSON] -o PRESET_TOML`.

Writes the preset, lists every SimpleTuner key it did not carry over, then checks the result.
Exit 0 when the written preset passes `hvtui check`, 2 for unreadable input or a preset with errors.
"""
from __future__ import annotations

import sys
from pathlib import Path

from hvtui.commands.check import report
from hvtui.core.preset.check import validate_file
from hvtui.core.preset.simpletuner_import import SimpleTunerInputError, convert
from hvtui.core.run import exitcodes


def main(args) -> int:
    output = Path(args.output)
    try:
        result = convert(args.config, args.databackend, output)
    except SimpleTunerInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return exitcodes.INVALID
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(result.text, encoding="utf-8")
    except OSError as e:
        print(f"error: cannot write {output}: {e.strerror}", file=sys.stderr)
        return exitcodes.INVALID
    if result.dropped:
        print(f"warning: {len(result.dropped)} SimpleTuner key{'s' if len(result.dropped) != 1 else ''} "
              "not carried over:", file=sys.stderr)
        for line in result.dropped:
            print(f"  {line}", file=sys.stderr)
    for line in result.notes:
        print(f"note: {line}", file=sys.stderr)
    source = f" (datasets from {result.datasets_from})" if result.datasets_from else " (no datasets found)"
    print(f"wrote {output}{source}")
    v = validate_file(output)
    report(v)
    return exitcodes.OK if v.ok else exitcodes.INVALID
