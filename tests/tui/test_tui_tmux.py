"""End to end in a real terminal (tmux at 80x24), the path a newcomer takes with the shipped demo and the
real tiny-model trainer: switch presets, start the demo in the TUI, pause / resume / checkpoint / sample /
stop, start again (the Resume dialog, whole at 80x24), Start fresh, lose the terminal under a parent that
traps SIGHUP (the run is saved, the TUI exits 129), then attach to a headless run started a moment earlier
and stop it from there. Each screen is checked as a user would read it (tmux capture-pane)."""
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

from tests.helpers.repo_paths import REPO

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)")]

# the TUI's parent shell traps SIGHUP and never passes it on: only the TUI's own terminal watch ends it
TRAPPING_PARENT = "bash -c 'trap \"echo hup\" HUP; {command}; echo $? > {status}; sleep 600'"


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

    def start(self, command: str, name: str = "hv") -> None:
        self.tmux("new-session", "-d", "-s", name, "-x", str(self.width), "-y", str(self.height), command)

    def keys(self, *keys: str, name: str = "hv") -> None:
        self.tmux("send-keys", "-t", name, *keys)

    def screen(self, name: str = "hv") -> str:
        return self.tmux("capture-pane", "-p", "-t", name)

    def pane_pid(self, name: str = "hv") -> int:
        return int(self.tmux("list-panes", "-t", name, "-F", "#{pane_pid}").split()[0])

    def wait_for(self, predicate, timeout: float, what: str, name: str = "hv") -> str:
        end = time.monotonic() + timeout
        text = ""
        while time.monotonic() < end:
            text = self.screen(name)
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


def at_step(n: int):
    return lambda s: (step_and_loss(s) or (0, 0.0))[0] >= n


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def kill_tree(pid: int) -> None:
    """The pane's shell outlives its terminal (it traps SIGHUP, then sleeps): end it and its children."""
    for child in children(pid):
        kill_tree(child)
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass


def exit_status(path: Path, timeout: float = 10) -> str:
    """What the pane's shell wrote as the TUI's exit status."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and not path.is_file():
        time.sleep(0.2)
    return path.read_text().strip() if path.is_file() else "(none written)"


def session_gone(t: Tmux, name: str, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if subprocess.run(["tmux", "-L", t.socket, "has-session", "-t", name], env=t.env,
                          capture_output=True).returncode != 0:
            return True
        time.sleep(0.25)
    return False


def finished_events(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if '"kind": "finished"' in line]


def complete_steps(out: Path) -> list[int]:
    return sorted(int(p.parent.name.split("-")[1]) for p in (out / "checkpoints").glob("checkpoint-*/COMPLETE"))


def test_a_newcomers_first_hour_in_tmux(tmp_path):
    presets = tmp_path / "presets"
    shutil.copytree(REPO / "presets", presets)
    out = tmp_path / "output" / "demo"          # demo.toml: output_dir = "../output/demo"
    names = sorted(p.stem for p in presets.glob("*.toml"))
    assert names[0] == "demo" and len(names) >= 2
    status = tmp_path / "exit-status"
    t = Tmux(tmp_path)
    command = f"cd {tmp_path} && {sys.executable} -m hvtui --presets {presets}"
    t.start(TRAPPING_PARENT.format(command=command, status=status))
    headless = shell = None
    try:
        # --- the first screen; presets switch with [ and ]
        shell = t.pane_pid()
        t.wait_for(lambda s: "preset demo 1/" in s and "F4 Train" in s, 30, "the first screen")
        t.keys("]")
        t.wait_for(lambda s: f"preset {names[1]} 2/" in s, 10, "] to switch to the second preset")
        t.keys("[")
        t.wait_for(lambda s: "preset demo 1/" in s, 10, "[ to switch back to the demo preset")

        # --- the Train pane: nothing has run here yet
        t.keys("F4")
        t.wait_for(lambda s: "IDLE" in s and "s: start" in s and "none yet" in s, 10, "an idle Train pane")

        # --- start the demo: steps count up, the loss moves, the ETA shows
        t.keys("s")
        first = t.wait_for(at_step(3), 300, "training steps")
        step1, loss1 = step_and_loss(first)
        later = t.wait_for(at_step(step1 + 3), 120, "more steps")
        step2, loss2 = step_and_loss(later)
        assert step2 > step1 and loss2 != loss1
        assert "RUNNING" in later and "ETA" in later and "p: pause/resume" in later, later

        # --- pause: the run holds still; resume: it goes on
        t.keys("p")
        paused = t.wait_for(lambda s: "PAUSED" in s, 30, "the run to pause")
        held = step_and_loss(paused)[0]
        time.sleep(1.0)
        assert step_and_loss(t.screen())[0] == held, "steps went on while paused"
        t.keys("p")
        t.wait_for(lambda s: "RUNNING" in s and at_step(held + 2)(s), 60, "the run to resume")

        # --- checkpoint now, sample now: listed on the screen and written to disk
        t.keys("c")
        saved = t.wait_for(lambda s: re.search(r"ckpt (\d+) checkpoint-", s), 60, "the checkpoint on screen")
        ckpt_step = int(re.search(r"ckpt (\d+) checkpoint-", saved).group(1))
        assert ckpt_step in complete_steps(out)
        t.keys("v")
        sampled = t.wait_for(lambda s: re.search(r"sample (\d+) ", s), 120, "the sample on screen")
        sample_step = int(re.search(r"sample (\d+) ", sampled).group(1))
        assert list((out / "samples").glob(f"*{sample_step:06d}*.mp4")), sorted((out / "samples").iterdir())

        # --- stop: a complete checkpoint with the LoRA; the pane offers resume / start fresh
        t.wait_for(at_step(12), 120, "a dozen steps")
        t.keys("x")
        stopped = t.wait_for(lambda s: "STOPPED" in s and "s: start (resume it or start fresh)" in s, 120,
                             "the run to stop")
        stopped_at = complete_steps(out)[-1]
        assert f"ckpt {stopped_at} checkpoint-{stopped_at:06d}" in stopped, stopped    # the stop's checkpoint
        assert (out / "checkpoints" / f"checkpoint-{stopped_at:06d}" / "pytorch_lora_weights.safetensors").is_file()

        # --- start again: the Resume dialog says what it resumes, every button visible at 80x24
        t.keys("s")
        dialog = t.wait_for(lambda s: "n: Cancel" in s, 15, "the resume question")
        inside = [row[row.index("█") + 1:row.rindex("█")] for row in dialog.splitlines() if row.count("█") >= 2]
        flat = " ".join(" ".join(inside).split())       # the dialog's own text, its wrapped lines joined
        for text in ("Resume the earlier run?", f"was stopped at step {stopped_at} of 300",
                     f"checkpoint-{stopped_at:06d} (step {stopped_at})", f"r: Resume from step {stopped_at}",
                     "f: Start fresh", "n: Cancel"):
            assert text in flat, f"{text!r} not on the screen:\n{dialog}"
        rows = dialog.splitlines()
        assert len(rows) <= 24 and any("▄▄▄" in row for row in rows), "the dialog's bottom edge is off screen"

        # --- Start fresh: the earlier run moves aside, the new one counts from step 1
        t.keys("f")
        t.wait_for(lambda s: "STARTING" in s or "no steps yet" in s, 30, "the Train pane cleared for a new run")
        fresh = t.wait_for(lambda s: "RUNNING" in s and at_step(1)(s), 300, "the fresh run's steps")
        assert step_and_loss(fresh)[0] < stopped_at, "the new run did not count from step 1"
        previous = list(out.glob("previous-*/checkpoints/checkpoint-*/COMPLETE"))
        assert previous, f"the earlier run was not moved aside: {sorted(p.name for p in out.iterdir())}"
        t.wait_for(at_step(5), 120, "the fresh run going on")

        # --- the terminal goes away (its parent ignores that): the run is saved, the TUI exits 129
        (tui,) = children(shell)
        t.tmux("kill-session", "-t", "hv")

        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and (Path(f"/proc/{tui}").exists()):
            time.sleep(0.5)
        assert not Path(f"/proc/{tui}").exists(), "the TUI outlived its terminal"
        last = finished_events(out / "events.jsonl")[-1]
        assert last["status"] == "interrupted" and last["exit_code"] == 129
        assert complete_steps(out)[-1] == last["step"] >= 5
        assert exit_status(status) == "129"

        # --- attach to a headless run started a moment earlier
        headless_preset = presets / "headless.toml"
        headless_preset.write_text((presets / "demo.toml").read_text().replace(
            'output_dir = "../output/demo"', 'output_dir = "../output/headless"'))
        run_out = tmp_path / "output" / "headless"
        env = {**t.env, "PYTHONUNBUFFERED": "1"}
        with open(tmp_path / "headless.log", "wb") as log:
            headless = subprocess.Popen([sys.executable, "-m", "hvtui", "--run", str(headless_preset)],
                                        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
        t.start(f"cd {tmp_path} && {sys.executable} -m hvtui --attach {run_out}", name="attach")
        t.wait_for(lambda s: "attached " in s and "F4 Train" in s, 30, "the attached Train pane", name="attach")
        attached = t.wait_for(at_step(3), 300, "the headless run's steps, attached", name="attach")
        assert "RUNNING" in attached and "x: stop" in attached
        t.keys("x", name="attach")                   # stop reaches the other process through control files
        t.wait_for(lambda s: "STOPPED" in s, 120, "the headless run to stop", name="attach")
        assert headless.wait(timeout=120) == 0
        assert finished_events(run_out / "events.jsonl")[-1]["status"] == "stopped"
        t.keys("q", name="attach")                   # not our run: quits without asking
        assert session_gone(t, "attach", 20), "q did not quit the attached view"
    finally:
        if headless is not None and headless.poll() is None:
            headless.kill()
        if shell is not None:
            kill_tree(shell)
        t.close()


def test_an_idle_tui_leaves_with_its_terminal_under_a_parent_that_traps_sighup(tmp_path):
    presets = tmp_path / "presets"
    shutil.copytree(REPO / "presets", presets, ignore=shutil.ignore_patterns("demo-data"))
    status = tmp_path / "exit-status"
    t = Tmux(tmp_path)
    t.start(TRAPPING_PARENT.format(command=f"{sys.executable} -m hvtui --presets {presets}", status=status))
    shell = t.pane_pid()
    try:
        t.wait_for(lambda s: "F4 Train" in s and "preset " in s, 30, "the first screen")
        (tui,) = children(shell)
        t.tmux("kill-session", "-t", "hv")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and Path(f"/proc/{tui}").exists():
            time.sleep(0.2)
        assert not Path(f"/proc/{tui}").exists(), "an idle TUI outlived its terminal"
        assert exit_status(status) == "129"
    finally:
        if shell is not None:
            kill_tree(shell)
        t.close()
