"""What the trainer refuses before it can lose work, and how it reports a damaged checkpoint (in-process runs
of the builtin tiny model on the CPU)."""
import os

import pytest

from hvtui.core.preset.schema import load_preset
from hvtui.core.run import exitcodes
from hvtui.core.run.session import RunOptions, Session
from hvtui.core.train import checkpoint as ckpt
from hvtui.core.train.lora import LORA_FILE
from tests.helpers import loop_presets as L

STEPS = 4



def _preset(tmp_path, clips, name="run", **kw):
    data, cache = clips
    kw = {"max_train_steps": STEPS, "checkpointing_steps": 2, **kw}
    return L.write_preset(tmp_path / f"{name}.toml", data, cache, tmp_path / name, **kw)


def _run(preset_path, **options):
    global _last
    _last = s = Session(load_preset(preset_path), options=RunOptions(**options))
    s.start()
    s.join()
    return s.exit_code


def _errors():
    """The last run's error events (a preset refused by validation never opens OUTPUT_DIR/events.jsonl)."""
    events, _ = _last.bus.since(0)
    return [(e.data.get("message") or "", e.data.get("hint") or "") for e in events if e.kind == "error"]


def _finished_run(tmp_path, clips, name="run", **kw):
    p = _preset(tmp_path, clips, name, **kw)
    assert _run(p) == 0
    return p, tmp_path / name


def test_a_new_run_into_an_earlier_runs_output_dir_is_refused_and_fresh_moves_the_earlier_one_aside(tmp_path, clips):
    p, out = _finished_run(tmp_path, clips)
    earlier_lora = (out / LORA_FILE).read_bytes()
    before = {f: (f.stat().st_mtime_ns, f.stat().st_size) for f in out.rglob("*")}
    shorter = _preset(tmp_path, clips, max_train_steps=2)          # same output_dir, a shorter run
    assert _run(shorter) == exitcodes.INVALID
    message, hint = _errors()[0]
    assert "holds an earlier run (checkpoints up to step 4)" in message
    assert "--resume auto" in hint and "--fresh" in hint
    assert [c.step for c in ckpt.list_complete(out)] == [2, 4]     # untouched
    assert (out / LORA_FILE).read_bytes() == earlier_lora
    # a refused start writes nothing into the output dir: not even a "failed" record in the earlier run's log
    assert {f: (f.stat().st_mtime_ns, f.stat().st_size) for f in out.rglob("*")} == before

    assert _run(shorter, fresh=True) == 0
    aside = [d for d in out.iterdir() if d.name.startswith("previous-")]
    assert len(aside) == 1
    assert [c.step for c in ckpt.list_complete(aside[0])] == [2, 4]
    assert (aside[0] / LORA_FILE).read_bytes() == earlier_lora
    assert [c.step for c in ckpt.list_complete(out)] == [2]          # only the new run's, none pruned away
    assert (out / LORA_FILE).read_bytes() != earlier_lora
    assert any("moved to" in e.get("message", "") for e in L.read_events(out) if e.kind == "log")
    # one run per events file: the new run alone here, the earlier one's beside its checkpoints
    here, there = L.read_events(out), L.read_events(aside[0])
    assert [e.get("max_steps") for e in here if e.kind == "run_started"] == [2]
    assert [e.get("max_steps") for e in there if e.kind == "run_started"] == [STEPS]
    assert [e.get("step") for e in there if e.kind == "finished"] == [STEPS]


def test_resume_auto_of_a_finished_run_saves_and_samples_nothing_again(tmp_path, clips):
    p, out = _finished_run(tmp_path, clips, validation_steps=STEPS, validation_prompt="a red square",
                           validation_resolution="64x64", validation_num_video_frames=9,
                           validation_num_inference_steps=2, validation_guidance=1.0)
    ours = ("events.jsonl", "run.lock")   # the run's log and its lock (who holds the folder) are the run's own
    before = {f: f.stat().st_mtime_ns for f in out.rglob("*") if f.is_file() and f.name not in ours}
    assert any(f.suffix == ".mp4" for f in before)
    assert _run(p, resume="auto") == 0
    after = {f: f.stat().st_mtime_ns for f in out.rglob("*") if f.is_file() and f.name not in ours}
    assert after == before
    logs = [e.get("message") for e in L.read_events(out) if e.kind == "log"]
    assert any("nothing trained since the checkpoint of step 4" in m and "raise it" in m for m in logs)


def _damage(target, how):
    if how == "garble":        # same size, other bytes: only the checksum can tell (it may still unpickle)
        data = bytearray(target.read_bytes())
        for i in range(len(data) // 3, len(data) // 3 + 64):
            data[i] ^= 0x5A
        target.write_bytes(bytes(data))
    elif how == "truncate":
        target.write_bytes(target.read_bytes()[:-100])
    else:
        target.unlink()


@pytest.mark.parametrize("how, named", [
    ("garble", ckpt.LORA_STATE_FILE),
    ("garble", "optimizer.pt"),
    ("truncate", "scheduler.pt"),
    ("delete", "rng_state_0.pt"),
])
def test_a_damaged_checkpoint_is_named_and_resume_auto_says_it_takes_the_older_one(tmp_path, clips, how, named):
    p, out = _finished_run(tmp_path, clips)
    newest = ckpt.find_newest(out).path
    target = newest / named
    _damage(target, how)
    longer = _preset(tmp_path, clips, max_train_steps=STEPS + 2)
    assert _run(longer, resume=str(newest)) == exitcodes.INVALID          # by path: refused, the file named
    message, hint = _errors()[0]
    assert str(target) in message and "damaged" in message and "--resume auto" in hint
    assert "weights_only" not in message and "likely a bug" not in hint

    assert _run(longer, resume="auto", allow_changed=True) == 0          # auto: said, then the older one
    events = L.read_events(out)
    warnings = [e.get("message") for e in events if e.kind == "log" and e.get("level") == "warning"]
    assert any(f"skipped {newest.name}" in m and str(target) in m for m in warnings), warnings
    started = [e for e in events if e.kind == "run_started"][-1]
    assert started.get("resume_from").endswith("checkpoint-000002")
    assert sorted(L.losses(events[events.index(started):])) == [3, 4, 5, 6]


def test_a_legacy_checkpoint_without_manifest_still_resumes_and_a_damaged_one_is_named(tmp_path, clips):
    p, out = _finished_run(tmp_path, clips)
    newest = ckpt.find_newest(out).path
    (newest / ckpt.MARKER).write_text(f"{STEPS}\n")                       # as hvtui wrote markers before
    (newest / "optimizer.pt").write_bytes(os.urandom(4096))
    longer = _preset(tmp_path, clips, max_train_steps=STEPS + 2)
    assert _run(longer, resume="auto", allow_changed=True) == exitcodes.INVALID
    message, hint = _errors()[0]
    assert str(newest / "optimizer.pt") in message and "damaged" in message


def test_unknown_keys_stop_a_run_as_check_does(tmp_path, clips):
    p = _preset(tmp_path, clips, "typo")
    p.write_text(p.read_text().replace("lora_rank =", "lora_rnak ="))
    assert _run(p) == exitcodes.INVALID
    assert any("lora_rnak: unknown key" in m and "did you mean lora_rank" in m for m, _ in _errors())
    assert not (tmp_path / "typo").exists()                         # refused before anything was written


def test_an_output_dir_under_a_file_stops_the_run_before_anything_loads(tmp_path, clips):
    (tmp_path / "a-file").write_text("x")
    p = _preset(tmp_path, clips, "blocked", output_dir=str(tmp_path / "a-file" / "out"))
    assert _run(p) == exitcodes.INVALID
    assert any("output_dir" in m and "is a file" in m for m, _ in _errors())
