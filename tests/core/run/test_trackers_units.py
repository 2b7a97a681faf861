"""The tracker sink's parts without a training run: what a step logs, the offload stall, the sink's queue,
failures that become warnings, W&B credentials, the doctor's check, import-simpletuner's tracker keys."""
from __future__ import annotations

import sys

import pytest

from hvtui.core.env import doctor as D
from hvtui.core.preset.schema import Preset
from hvtui.core.run.bus import Bus
from hvtui.core.run.events import Event
from hvtui.core.run.trackers import OffloadStall, TrackerSink, missing_packages, step_values, wandb_credentials, wanted


def test_wanted_and_missing_packages(monkeypatch):
    assert wanted("none") == [] and wanted(None) == [] and wanted("all") == ["tensorboard", "wandb"]
    assert wanted("wandb") == ["wandb"] and wanted(" TensorBoard ") == ["tensorboard"]
    assert missing_packages("all") == []
    monkeypatch.setitem(sys.modules, "wandb", None)          # how Python sees a package that is not installed
    assert missing_packages("all") == [("wandb", "hvtui[wandb]")] and missing_packages("tensorboard") == []


def test_step_values_and_offload_stall():
    d = {"step": 3, "loss": 0.5, "loss_smooth": 0.6, "lr": 1e-4, "grad_norm": 0.2, "step_time": 3.0,
         "samples_per_s": 0.33, "eta_s": 100, "mem_peak": 3 * 2 ** 30, "sample_ids": [1], "epoch": 1}
    assert step_values(d) == {"train/loss": 0.5, "train/loss_smooth": 0.6, "train/lr": 1e-4, "train/grad_norm": 0.2,
                              "train/step_time_s": 3.0, "train/samples_per_s": 0.33, "memory/peak_allocated_gib": 3.0}
    assert step_values({"step": 1, "loss": None, "lr": True}) == {}
    stall = OffloadStall()
    assert stall.per_step(1) is None                          # no reading yet
    stall.reading({"wait_s": 0.5})
    assert stall.per_step(2) is None                          # the first reading is the baseline
    stall.reading({"wait_s": 0.9})
    stall.reading({"wait_s": 1.1})
    assert stall.per_step(4) == pytest.approx(0.3)            # (1.1 - 0.5) s over steps 3 and 4
    assert stall.per_step(5) is None                          # no new reading since step 4
    stall.reading({"error": "no counters"})
    assert stall.per_step(6) is None


def _collect(bus: Bus) -> list[Event]:
    seen: list[Event] = []
    bus.add_sink(lambda e: seen.append(e) if e.kind in ("log", "tracker") else None)
    return seen


def _started(tmp_path, report_to: str, steps: int):
    """A sink on a bus that has seen run_started and `steps` step events: (sink, bus, the log/tracker events)."""
    bus = Bus()
    seen = _collect(bus)
    sink = TrackerSink(Preset(report_to=report_to, output_dir=str(tmp_path)), tmp_path, bus.publish)
    bus.add_sink(sink)
    bus.publish(Event("run_started", {"device": "cpu"}))
    for s in range(1, steps + 1):
        bus.publish(Event("step", {"step": s, "loss": 1.0 / s}))
    return sink, bus, seen


def _logged_steps(out) -> list[int]:
    from tests.helpers import tracker_runs as R
    from tests.helpers import wandb_records as W

    return [r["_step"] for r in W.history(R.wandb_run_file(out)) if "train/loss" in r]


def test_a_full_queue_drops_and_says_so(tmp_path):
    bus = Bus()
    seen = _collect(bus)
    sink = TrackerSink(Preset(report_to="tensorboard", output_dir=str(tmp_path)), tmp_path, bus.publish, max_queued=0)
    bus.add_sink(sink)
    for s in range(1, 6):
        bus.publish(Event("step", {"step": s, "loss": 1.0}))
    bus.publish(log_event := Event("log", {"level": "info", "message": "not for trackers"}))
    assert sink.close(10)
    assert sink.dropped == 5
    assert [e.get("message") for e in seen if e is not log_event] == [
        "experiment trackers fell behind: 5 event(s) were not logged"]
    assert not (tmp_path / "tensorboard").exists()     # run_started never got through: nothing was started


def test_a_tracker_that_cannot_start_is_a_warning_and_the_other_logs(tmp_path, monkeypatch):
    """output_dir/tensorboard is a file (a user's mistake): TensorBoard cannot start, W&B (offline) still logs
    every step, and nothing reaches the publisher as an exception."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    (tmp_path / "tensorboard").write_text("not a folder")
    sink, bus, seen = _started(tmp_path, "all", 3)
    bus.publish(Event("finished", {"status": "completed", "exit_code": 0}))
    assert sink.close(60)
    tracker = [(e.get("name"), e.get("status")) for e in seen if e.kind == "tracker"]
    assert tracker == [("tensorboard", "failed"), ("wandb", "offline"), ("wandb", "finished")]
    warning = next(e.get("message") for e in seen if e.kind == "log" and e.get("level") == "warning")
    assert warning.startswith("tensorboard: could not start (") and warning.endswith("training goes on without it")
    assert _logged_steps(tmp_path) == [1, 2, 3]


@pytest.mark.slow
def test_publishing_never_waits_for_a_tracker_that_is_still_connecting(tmp_path, monkeypatch):
    """W&B with a key but no server: wandb.init keeps the worker busy for seconds (WANDB_INIT_TIMEOUT), while
    every publish returns at once and the events wait in the queue; then the run logs offline, every step."""
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "a" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "4")
    import wandb

    wandb.teardown()   # wandb keeps settings per process: an earlier test's WANDB_MODE=offline would skip the server
    sink, bus, seen = _started(tmp_path, "wandb", 20)
    assert not [e for e in seen if e.kind == "tracker"]       # still connecting: init cannot fail before 4 s
    assert sink._q.qsize() >= 20                              # ... and the steps wait for it, not the publisher
    bus.publish(Event("finished", {"status": "completed", "exit_code": 0}))
    assert sink.close(120)
    assert [e.get("status") for e in seen if e.kind == "tracker"] == ["offline", "finished"]
    assert next(e.get("message") for e in seen if e.kind == "tracker").startswith("W&B unreachable (")
    assert _logged_steps(tmp_path) == list(range(1, 21))


def test_wandb_credentials_without_importing_wandb(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    assert not wandb_credentials({"HOME": str(home)})
    assert wandb_credentials({"HOME": str(home), "WANDB_API_KEY": "x" * 40})
    (home / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    (home / ".netrc").chmod(0o600)
    assert wandb_credentials({"HOME": str(home)})
    assert not wandb_credentials({"HOME": str(home), "WANDB_BASE_URL": "https://wandb.example.com"})


def test_doctor_names_a_tracker_that_is_not_installed_or_not_logged_in(tmp_path, monkeypatch):
    env = {"HOME": str(tmp_path)}
    assert D.check_trackers(Preset(report_to="none"), env) == []
    ok = D.check_trackers(Preset(report_to="tensorboard"), env)
    assert [(c.status, c.detail) for c in ok] == [("ok", "tensorboard")]
    nologin = D.check_trackers(Preset(report_to="all"), env)[0]
    assert nologin.status == "warn" and "no W&B login: the run logs to wandb offline" in nologin.detail
    assert "wandb login" in nologin.hint
    assert D.check_trackers(Preset(report_to="wandb"), {**env, "WANDB_MODE": "offline"})[0].status == "ok"
    monkeypatch.setitem(sys.modules, "wandb", None)
    missing = D.check_trackers(Preset(report_to="all"), env)[0]
    assert (missing.status, missing.group) == ("warn", "system")
    assert missing.detail == "report_to = all: wandb not installed; the run trains without it"
    assert missing.hint == "pip install 'hvtui[wandb]'"
    # in the whole report (exit code unchanged: a missing tracker never fails the doctor)
    from hvtui.core.env.nvml import NvmlInfo

    report = D.run_doctor(Preset(report_to="wandb", pretrained_model_name_or_path="builtin:tiny",
                                 output_dir=str(tmp_path / "out")), env=env, gpu=NvmlInfo(False, reason="no GPU"),
                          scan=False)
    assert report.get("trackers").status == "warn"


def test_import_simpletuner_maps_tracker_keys(tmp_path):
    import json
    import tomllib

    from hvtui.core.preset.simpletuner_import import convert

    def imported(**keys):
        cfg = tmp_path / "config.json"
        cfg.write_text(json.dumps({"--model_family": "hunyuanvideo", **{f"--{k}": v for k, v in keys.items()}}))
        result = convert(cfg, None, tmp_path / "p.toml", cwd=tmp_path)
        return tomllib.loads(result.text), result

    data, result = imported(report_to="wandb,tensorboard", tracker_project_name="hv", tracker_run_name="run-1",
                            logging_dir="logs")
    assert (data["report_to"], data["tracker_project_name"], data["tracker_run_name"]) == ("all", "hv", "run-1")
    assert "logging_dir: hvtui writes TensorBoard logs to OUTPUT_DIR/tensorboard" in result.dropped
    assert "# --- logging" in result.text
    data, result = imported(report_to="comet_ml,tensorboard")
    assert data["report_to"] == "tensorboard"
    assert result.notes == [
        'report_to: comet_ml not supported by hvtui (tensorboard and wandb are); using "tensorboard"']
    data, result = imported(report_to="comet_ml")
    assert data["report_to"] == "none" and "comet_ml" in result.notes[0]
    data, _ = imported(report_to="none")
    assert data["report_to"] == "none"


def test_train_state_keeps_latest_preview_and_each_tracker():
    from hvtui.tui.train_state import TrainState

    st = TrainState()
    st.apply([Event("sample", {"step": 4, "path": "a.mp4", "prompt": "p"})])
    assert st.preview is None                                 # no sheet (an older run's events): no preview
    st.apply([Event("sample", {"step": 8, "path": "b.mp4", "prompt": "p", "sheet": "b.png"}),
              Event("tracker", {"name": "wandb", "status": "offline", "where": "w"}),
              Event("tracker", {"name": "wandb", "status": "finished", "where": "w2"})])
    assert st.preview == (8, "b.png", "p") and st.trackers == {"wandb": {"name": "wandb", "status": "finished",
                                                                         "where": "w2"}}
