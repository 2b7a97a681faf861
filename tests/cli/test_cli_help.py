"""`hvtui --help` lists every subcommand (from the subcommand parser itself), and flags that only a headless
run understands are refused without `--run` (exit 2), never silently opening the TUI."""
from __future__ import annotations

import subprocess
import sys

import pytest

from hvtui import cli
from tests.helpers.repo_paths import REPO


def test_help_lists_every_subcommand_once_with_its_line(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    commands = out.split("commands:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    names = [line.split()[0] for line in commands]
    # every command main() dispatches, and nothing else, each on one line with its help text
    assert names == list(cli.SUBCOMMANDS)
    assert {"check", "buckets", "doctor", "import-simpletuner"} <= set(names)
    assert all(len(line.split(None, 1)) == 2 for line in commands)
    assert "hvtui COMMAND" in out and "--attach OUTPUT_DIR" in out


def test_a_command_added_to_the_subparser_appears_in_help(monkeypatch, capsys):
    real = cli.build_subparsers

    def with_extra():
        p = real()
        p._subparsers._group_actions[0].add_parser("frobnicate", help="a command added elsewhere")
        return p
    monkeypatch.setattr(cli, "build_subparsers", with_extra)
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "  frobnicate" in capsys.readouterr().out


@pytest.mark.parametrize("argv, named", [
    (["--resume", "auto"], "--resume"),
    (["--fresh", "presets/demo.toml"], "--fresh"),
    (["--allow-changed"], "--allow-changed"),
    (["--gpus", "2"], "--gpus"),
    (["presets/demo.toml", "--resume", "auto", "--fresh"], "--resume and --fresh"),
])
def test_run_only_flags_without_run_exit_2(argv, named, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"{named} only work" in err and "with --run PRESET" in err
    preset = next((a for a in argv if a.endswith(".toml")), "PRESET")
    assert f"hvtui --run {preset} " in err          # the command line that was probably meant


def test_run_and_attach_together_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--run", "presets/demo.toml", "--attach", "output/demo"])
    assert e.value.code == 2 and "not both" in capsys.readouterr().err


def test_resume_without_run_never_opens_the_tui():
    """Without a terminal the TUI would hang: the process must answer at once with exit 2."""
    code = ("import sys; from hvtui.cli import main\n"
            "try:\n    main(['--resume', 'auto'])\nexcept SystemExit as e:\n"
            "    print('textual' in sys.modules, 'hvtui.tui.app' in sys.modules); sys.exit(e.code)")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 2, r.stderr
    assert r.stdout.split() == ["False", "False"]
