"""report_to end to end: short runs of the shipped demo preset (real tiny HunyuanVideo 1.5, real validation
samples) write what TensorBoard's own reader and W&B's offline run format hold, and a tracker can neither fail
nor stall a run (not installed, W&B unreachable, Ctrl-C to the whole process group)."""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import tracker_runs as R
from tests.helpers import wandb_records as W

pytestmark = pytest.mark.slow


def _messages(events, level=None) -> str:
    return "\n".join(e.get("message", "") for e in events if e.kind in ("log", "error")
                     and (level is None or e.get("level", "error") == level))


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-7)   # TensorBoard stores float32


def test_tensorboard_one_loss_point_per_step_media_config_and_resume(tmp_path, monkeypatch):
    preset = R.demo_preset(tmp_path, report_to="tensorboard")
    code, events = R.run_in_process(preset)
    assert code == 0, _messages(events)
    out = tmp_path / "out"
    run_dir = out / "tensorboard" / "out"          # default run name: the output_dir's folder name
    losses = R.step_losses(events)
    points = R.scalars(run_dir, "train/loss")
    assert [s for s, _ in points] == list(range(1, 9)) == sorted(losses)
    assert all(_close(v, losses[s]) for s, v in points)
    acc = R.accumulator(run_dir)
    tags = acc.Tags()
    assert {"train/loss_smooth", "train/lr", "train/grad_norm", "train/step_time_s", "train/samples_per_s"} <= set(
        tags["scalars"])
    assert "memory/peak_allocated_gib" not in tags["scalars"]          # CPU: no CUDA peak to log
    # the validation samples: the contact sheet (PNG) and the video (an animated GIF, as add_video writes it)
    sheets, videos = acc.Images("validation/0/sheet"), acc.Images("validation/0/video")
    assert [i.step for i in sheets] == [4, 8] and [i.step for i in videos] == [4, 8]
    assert sheets[0].encoded_image_string[:4] == b"\x89PNG" and videos[0].encoded_image_string[:6] == b"GIF89a"
    import io

    from PIL import Image

    gif = Image.open(io.BytesIO(videos[-1].encoded_image_string))
    assert gif.n_frames == 9 and gif.size == (64, 64)                  # every frame of the 64x64x9 sample
    assert "preset/text_summary" in tags["tensors"]
    # the preset as the run's config: accelerate's hparams.yml next to the hparams event
    hparams = list(run_dir.glob("*/hparams.yml"))
    assert len(hparams) == 1
    text = hparams[0].read_text()
    assert "report_to: tensorboard" in text and "lora_rank: 8" in text and "datasets.0.id: demo-clips" in text
    assert not (out / "wandb").exists()
    tracker = [e for e in events if e.kind == "tracker"]
    assert [(e.get("name"), e.get("status")) for e in tracker] == [("tensorboard", "logging"),
                                                                   ("tensorboard", "finished")]
    assert tracker[0].get("where") == str(run_dir)

    # Resume from step 4 with report_to = "all" while wandb is not installed: a warning, the run goes on, and
    # TensorBoard still has one loss point per step (the re-run steps 5-8 replace the first run's).
    monkeypatch.setitem(sys.modules, "wandb", None)        # what `import wandb` sees when it is not installed
    R.demo_preset(tmp_path, report_to="all")
    code, events = R.run_in_process(preset, resume=str(out / "checkpoints" / "checkpoint-000004"))
    assert code == 0, _messages(events)
    warnings = _messages(events, "warning")
    assert "report_to asks for wandb, which is not installed: training goes on without it " \
           "(pip install 'hvtui[wandb]')" in warnings
    points = R.scalars(run_dir, "train/loss")
    assert [s for s, _ in points] == list(range(1, 9))
    assert all(_close(v, R.step_losses(events)[s]) for s, v in points)
    assert not (out / "wandb").exists()


def test_wandb_offline_writes_a_run_folder_with_steps_media_config_and_exit(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    preset = R.demo_preset(tmp_path, report_to="wandb", tracker_project_name="hv-tests", tracker_run_name="demo-a")
    code, events = R.run_in_process(preset)
    assert code == 0, _messages(events)
    out = tmp_path / "out"
    run_file = R.wandb_run_file(out)
    folder = run_file.parent
    rows = W.history(run_file)
    losses = R.step_losses(events)
    logged = {r["_step"]: r["train/loss"] for r in rows if "train/loss" in r}
    assert sorted(logged) == list(range(1, 9)) and all(math.isclose(logged[s], losses[s]) for s in logged)
    videos = [r for r in rows if "validation/0/video/path" in r]
    assert [r["_step"] for r in videos] == [4, 8]
    for r in videos:
        assert r["validation/0/video/_type"] == "video-file" and r["validation/0/sheet/_type"] == "image-file"
        assert r["validation/0/video/caption"] == "a red square moves right"
        assert (folder / "files" / r["validation/0/video/path"]).stat().st_size > 0
        assert (folder / "files" / r["validation/0/sheet/path"]).stat().st_size > 0
    config = W.config(run_file)
    assert config["report_to"] == "wandb" and config["lora_rank"] == 8 and config["max_train_steps"] == 8
    assert config["datasets"][0]["id"] == "demo-clips" and config["hvtui"]["device"] == "cpu"
    assert W.exit_code(run_file) == 0
    run = next(r for r in W.records(run_file) if r.WhichOneof("record_type") == "run").run
    assert (run.project, run.display_name) == ("hv-tests", "demo-a")
    assert not (out / "tensorboard").exists()
    offline = [e for e in events if e.kind == "tracker" and e.get("status") == "offline"]
    assert len(offline) == 1 and offline[0].get("where") == str(folder)
    assert f"wandb sync {folder}" in _messages(events)
    assert not _messages(events, "warning")       # WANDB_MODE=offline is what the user asked for: no warning


def _hvtui(args, env=None, drop=(), **kw) -> subprocess.Popen:
    e = {k: v for k, v in {**os.environ, **(env or {})}.items() if k not in drop}
    return subprocess.Popen([sys.executable, "-m", "hvtui", *map(str, args)], cwd=R.REPO, env=e, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def test_none_writes_neither_and_imports_neither(tmp_path):
    preset = R.demo_preset(tmp_path, report_to="none", max_train_steps=4, validation_steps=4)
    proc = _hvtui(["--run", preset], env={"PYTHONPROFILEIMPORTTIME": "1"})
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    run = tmp_path / "out"
    assert (run / "samples" / "step000004-0.mp4").is_file() and (run / "samples" / "step000004-0.png").is_file()
    assert not (run / "tensorboard").exists() and not (run / "wandb").exists()
    from hvtui.core.run.history import read_events

    assert not [e for e in read_events(run / "events.jsonl") if e.kind == "tracker"]
    imported = {line.rsplit("|", 1)[1].strip().split(".")[0] for line in err.splitlines()
                if line.startswith("import time:") and "|" in line}
    assert "hvtui" in imported and not imported & {"wandb", "tensorboard"}


def test_unreachable_wandb_is_a_warning_and_the_run_logs_offline(tmp_path):
    """A W&B key but no server: wandb.init retries for WANDB_INIT_TIMEOUT seconds, then the run logs offline,
    every step included (queued meanwhile), and the run completes."""
    preset = R.demo_preset(tmp_path, report_to="wandb")
    (tmp_path / "home").mkdir()
    env = {"HOME": str(tmp_path / "home"), "WANDB_API_KEY": "a" * 40, "WANDB_BASE_URL": "http://127.0.0.1:9",
           "WANDB_INIT_TIMEOUT": "4"}
    proc = _hvtui(["--run", preset], env=env, drop=("WANDB_MODE",))
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    from hvtui.core.run.history import read_events

    events = read_events(tmp_path / "out" / "events.jsonl")
    assert [e.get("status") for e in events if e.kind == "tracker"] == ["offline", "finished"]
    assert "warning: wandb: W&B unreachable (CommError" in err and "offline run in" in err
    rows = W.history(R.wandb_run_file(tmp_path / "out"))
    assert sorted(r["_step"] for r in rows if "train/loss" in r) == list(range(1, 9))
    assert "finished: completed at step 8 (exit 0)" in out


def test_ctrl_c_to_the_process_group_stops_saves_and_closes_both_trackers(tmp_path):
    """A terminal's Ctrl-C reaches every process of the group, wandb's service process too: the run still
    exits 130 after saving, and both trackers hold every step it trained."""
    preset = R.demo_preset(tmp_path, report_to="all", max_train_steps=400, validation_steps=0)
    proc = _hvtui(["--run", preset], env={"WANDB_MODE": "offline", "HVTUI_TEST_STEP_SLEEP": "0.2"},
                  start_new_session=True)
    events_path = tmp_path / "out" / "events.jsonl"
    end = time.monotonic() + 240
    while True:
        text = events_path.read_text() if events_path.exists() else ""
        if '"status": "offline"' in text and text.count('"kind": "step"') >= 3:
            break
        assert proc.poll() is None and time.monotonic() < end, proc.communicate()
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    from hvtui.core.run.history import read_events

    events = read_events(events_path)
    last = max(R.step_losses(events))
    assert 3 <= last < 400
    assert [s for s, _ in R.scalars(tmp_path / "out" / "tensorboard" / "out", "train/loss")] == list(range(1, last + 1))
    run_file = R.wandb_run_file(tmp_path / "out")
    assert sorted(r["_step"] for r in W.history(run_file) if "train/loss" in r) == list(range(1, last + 1))
    assert W.exit_code(run_file) == 130                     # marked as the interrupted run it was
    assert "finished: interrupted" in out and "wandb sync" in out


def test_two_processes_log_once_from_rank_0(tmp_path):
    """`hvtui --run --gpus 2` on the CPU (gloo): one TensorBoard run and one W&B run, one point per step."""
    from tests.helpers import loop_presets as L

    data = L.write_clips(tmp_path / "data", 2)
    preset = L.write_preset(tmp_path / "p.toml", data, tmp_path / "cache", tmp_path / "out", max_train_steps=4,
                            report_to="all")
    proc = _hvtui(["--run", preset, "--gpus", "2"], env={"WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"})
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    board = tmp_path / "out" / "tensorboard" / "out"
    assert len(list(board.glob("events.out.tfevents.*"))) == 1
    assert [s for s, _ in R.scalars(board, "train/loss")] == [1, 2, 3, 4]
    run_file = R.wandb_run_file(tmp_path / "out")          # exactly one offline run
    assert sorted(r["_step"] for r in W.history(run_file) if "train/loss" in r) == [1, 2, 3, 4]
