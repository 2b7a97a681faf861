"""`hvtui --help`, `hvtui check` and `hvtui import-simpletuner` never load the ML stack or Textual, and exit 0/2."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

from tests.helpers.repo_paths import REPO

HEAVY = ("torch", "diffusers", "transformers", "peft", "accelerate", "textual")
BROKEN = 'lora_rank = "16"\nvalidation_num_video_frames = 60\n'


def run(args: list[str], env_extra: dict | None = None, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, env=env, timeout=120, **kw)


def test_help_check_and_import_load_no_heavy_module(tmp_path):
    broken = tmp_path / "broken.toml"
    broken.write_text(BROKEN)
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"--model_flavour": "t2v-480p", "--learning_rate": "1e-4"}))
    script = textwrap.dedent(f"""
        import json, sys
        from hvtui.cli import main
        codes = []
        for argv in (["--help"], ["check", "presets/demo.toml"], ["check", "presets/demo.toml", "--json"],
                     ["check", {str(broken)!r}], ["check", "no/such/preset.toml"],
                     ["import-simpletuner", {str(cfg)!r}, "-o", {str(tmp_path / "out.toml")!r}]):
            try:
                codes.append(main(argv))
            except SystemExit as e:
                codes.append(e.code)
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
        print("RESULT", json.dumps({{"codes": codes, "heavy": heavy}}))
    """)
    proc = run([sys.executable, "-c", script])
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    result = json.loads(proc.stdout.rsplit("RESULT ", 1)[1])
    # --help 0, demo ok, demo ok (json), broken 2, missing 2, import without datasets -> written but check fails: 2
    assert result == {"codes": [0, 0, 0, 2, 2, 2], "heavy": []}


def imported_modules(stderr: str) -> set[str]:
    """Module names from PYTHONPROFILEIMPORTTIME output ("import time: self | cumulative | name")."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    return names


def test_python_dash_m_and_console_script_check(tmp_path):
    commands = [[sys.executable, "-m", "hvtui", "check", "presets/demo.toml"]]
    script = shutil.which("hvtui")
    if script:
        commands.append([script, "check", "presets/demo.toml"])
        commands.append([script, "--help"])
    for cmd in commands:
        proc = run(cmd, {"PYTHONPROFILEIMPORTTIME": "1"})
        assert proc.returncode == 0, (cmd, proc.stdout, proc.stderr[-2000:])
        modules = imported_modules(proc.stderr)
        assert "hvtui.cli" in modules
        assert sorted(m for m in modules if m.split(".")[0] in HEAVY) == [], cmd


def test_check_exit_codes_and_output(tmp_path):
    broken = tmp_path / "broken.toml"
    broken.write_text(BROKEN)
    proc = run([sys.executable, "-m", "hvtui", "check", str(broken)])
    assert proc.returncode == 2
    assert "Traceback" not in proc.stdout + proc.stderr
    assert f"{broken}:1: lora_rank: expected a whole number" in proc.stdout
    assert f"{broken}:2: validation_num_video_frames: 60 frames is not 4k+1" in proc.stdout
    proc = run([sys.executable, "-m", "hvtui", "check", str(broken), "--json"])
    data = json.loads(proc.stdout)
    assert proc.returncode == 2 and data["ok"] is False
    assert [(p["line"], p["key"]) for p in data["problems"]][:2] == [(1, "lora_rank"),
                                                                   (2, "validation_num_video_frames")]
    syntax = tmp_path / "syntax.toml"
    syntax.write_text("lora_rank = 16\nseed = \n")
    proc = run([sys.executable, "-m", "hvtui", "check", str(syntax)])
    assert proc.returncode == 2 and f"{syntax}:2: toml: syntax error" in proc.stdout
