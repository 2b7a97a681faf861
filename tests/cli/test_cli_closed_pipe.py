"""Output into a closed pipe (`hvtui doctor PRESET | head -1`) ends quietly: no traceback, exit 141 (128 + SIGPIPE,
as a shell reports for Unix tools)."""
import os
import subprocess
import sys

import pytest

from tests.helpers.repo_paths import REPO

DEMO = str(REPO / "presets" / "demo.toml")


@pytest.mark.parametrize("args", [["doctor", DEMO], ["buckets", DEMO], ["buckets", DEMO, "--json"], ["check", DEMO],
                                  ["check", str(REPO / "no-such-preset.toml")]])
def test_a_closed_pipe_ends_quietly(args, tmp_path):
    r, w = os.pipe()
    os.close(r)                         # the reader is gone before hvtui writes its first line
    env = dict(os.environ, PYTHONPATH=str(REPO), XDG_CACHE_HOME=str(tmp_path))
    try:
        p = subprocess.run([sys.executable, "-m", "hvtui", *args], stdout=w, stderr=subprocess.PIPE, env=env,
                           timeout=300)
    finally:
        os.close(w)
    assert p.returncode == 141, p.stderr.decode()[-2000:]
    assert p.stderr == b""              # nothing at all: not a traceback, not "Exception ignored"
