"""`hvtui --run`'s headless driver: signals become a stop + save + the signal's exit code; a second SIGINT
quits at once; progress lines without a TTY; a broken preset exits 2. Uses a fake backend (no torch)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.repo_paths import REPO


def _preset(tmp_path) -> Path:
    p = tmp_path / "p.toml"
    p.write_text('output_dir = "out"\n')
    return p


def _start(tmp_path, **env):
    e = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", **env}
    return subprocess.Popen([sys.executable, "-m", "tests.helpers.headless_fake", str(_preset(tmp_path))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e)


def _wait_for(path: Path, timeout=20.0):
    end = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > end:
            raise AssertionError(f"{path} never appeared")
        time.sleep(0.05)


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGHUP, 129)])
def test_signal_stops_saves_and_exits_with_its_code(tmp_path, sig, code):
    proc = _start(tmp_path)
    _wait_for(tmp_path / "out" / "step")
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == code, err
    step, reason = (tmp_path / "out" / "saved").read_text().split()
    assert reason == signal.Signals(sig).name and int(step) >= 1
    assert f"{reason}: stopping after the current step" in err
    assert "finished: interrupted" in out


def test_second_sigint_exits_at_once(tmp_path):
    proc = _start(tmp_path, FAKE_SAVE_S="60")
    _wait_for(tmp_path / "out" / "step")
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=20)
    assert proc.returncode == 130
    assert not (tmp_path / "out" / "saved").exists()   # quit without the (slow) save


def test_completed_run_prints_phases_progress_and_warnings(tmp_path):
    proc = _start(tmp_path, FAKE_STEPS="5")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "[training] fake" in out
    assert "step 5/5 (100%)" in out            # the last progress line, printed without a TTY
    assert "warning: a warning from the fake" in err
    assert "finished: completed at step 5 (exit 0)" in out


def test_unreadable_preset_exits_2(tmp_path, capsys):
    from hvtui.cli import main

    bad = tmp_path / "bad.toml"
    bad.write_text("learning_rate = = 1\n")
    assert main(["--run", str(bad)]) == 2
    assert "not valid TOML" in capsys.readouterr().err
    assert main(["--run", str(tmp_path / "missing.toml")]) == 2
