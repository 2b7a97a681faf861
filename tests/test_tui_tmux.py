"""End to end in a real terminal: tmux runs `hvtui` on a copy of the presets; keys switch presets, start the
demo training (the real tiny-model trainer), the captured pane shows the step counter and loss moving, and
the stop key ends the run with a complete checkpoint on disk."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)")]


class Tmux:
    def __init__(self, tmp: Path, width: int = 80, height: int = 24):
        self.socket = f"hvtui-test-{uuid.uuid4().hex[:8]}"
        self.width, self.height = width, height
        self.env = {**os.environ, "HVTUI_CONFIG_DIR": str(tmp / "config"), "XDG_CACHE_HOME": str(tmp / "cache"),
                    "TERM": "xterm-256color"}
        for k in ("SSH_CONNECTION", "SSH_CLIENT", "SSH_TTY", "TMUX"):
            self.env.pop(k, None)

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, "-f", "/dev/null", *args], env=self.env, check=True,
                              capture_output=True, text=True, timeout=30).stdout

    def start(self, command: str) -> None:
        self.tmux("new-session", "-d", "-s", "hv", "-x", str(self.width), "-y", str(self.height), command)

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "hv", *keys)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "hv")

    def wait_for(self, predicate, timeout: float, what: str) -> str:
        end = time.monotonic() + timeout
        text = ""
        while time.monotonic() < end:
            text = self.screen()
            if predicate(text):
                return text
            time.sleep(0.25)
        raise AssertionError(f"timed out waiting for {what}; screen:\n{text}")

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], env=self.env, capture_output=True)


def step_and_loss(text: str) -> tuple[int, float] | None:
    step = re.search(r"step (\d+)/(\d+)", text)
    loss = re.search(r"loss\s+([0-9.]+)", text)
    return (int(step.group(1)), float(loss.group(1))) if step and loss else None


def test_demo_training_in_tmux(tmp_path):
    presets = tmp_path / "presets"
    shutil.copytree(REPO / "presets", presets)
    out = tmp_path / "output" / "demo"          # demo.toml: output_dir = "../output/demo"
    names = sorted(p.stem for p in presets.glob("*.toml"))
    assert names[0] == "demo" and len(names) >= 2
    status = tmp_path / "exit-status"
    t = Tmux(tmp_path)
    t.start(f"cd {tmp_path} && {sys.executable} -m hvtui --presets {presets}; echo $? > {status}; sleep 600")
    try:
        t.wait_for(lambda s: "preset demo 1/" in s and "F4 Train" in s, 30, "the first screen")
        t.keys("]")
        t.wait_for(lambda s: f"preset {names[1]} 2/" in s, 10, "] to switch to the second preset")
        t.keys("[")
        t.wait_for(lambda s: "preset demo 1/" in s, 10, "[ to switch back to the demo preset")
        t.keys("F4")
        t.wait_for(lambda s: "IDLE" in s, 10, "the Train pane")
        t.keys("s")
        first = t.wait_for(lambda s: (step_and_loss(s) or (0, 0))[0] >= 2, 300, "training steps")
        step1, loss1 = step_and_loss(first)
        later = t.wait_for(lambda s: (step_and_loss(s) or (0, 0))[0] >= step1 + 3, 120, "more steps")
        step2, loss2 = step_and_loss(later)
        assert step2 > step1 and loss2 != loss1
        assert "●" in later and "RUNNING" in later
        t.keys("x")
        final = t.wait_for(lambda s: "STOPPED" in s, 120, "the run to stop")
        assert "checkpoint-" in final                     # listed under "written"
        complete = list((out / "checkpoints").glob("checkpoint-*/COMPLETE"))
        assert complete, f"no complete checkpoint in {out}"
        assert (complete[-1].parent / "pytorch_lora_weights.safetensors").is_file()
        stopped_at = max(int(p.parent.name.split("-")[1]) for p in complete)

        # A dropped SSH connection: resume the run, then kill the terminal under it (SIGHUP). hvtui must
        # stop the run, save a checkpoint and end with the SIGHUP exit code in events.jsonl.
        t.keys("s")
        t.wait_for(lambda s: "Resume from it" in s, 10, "the resume question")
        t.keys("r")
        t.wait_for(lambda s: (step_and_loss(s) or (0, 0))[0] > stopped_at + 1, 300, "resumed training steps")
        t.tmux("kill-session", "-t", "hv")
        events = out / "events.jsonl"
        deadline = time.monotonic() + 180
        finished = []
        while time.monotonic() < deadline and len(finished) < 2:
            finished = [json.loads(line) for line in events.read_text().splitlines() if '"finished"' in line]
            time.sleep(0.5)
        assert len(finished) == 2, "the interrupted run never finished"
        assert finished[-1]["status"] == "interrupted" and finished[-1]["exit_code"] == 129
        steps = sorted(int(p.parent.name.split("-")[1]) for p in (out / "checkpoints").glob("checkpoint-*/COMPLETE"))
        assert steps[-1] > stopped_at and steps[-1] == finished[-1]["step"]
    finally:
        t.close()
