"""The trainer loop end to end on the builtin tiny model (CPU, in-process): loss falls, outputs land where they
should, control requests are honoured, failures take their exit codes.

Test hooks used here (documented in hvtui/core/train/loop.py): HVTUI_INJECT_NAN_AT_STEP / _NAN_TIMES,
HVTUI_INJECT_OOM_AT_STEP / _OOM_TIMES, HVTUI_TEST_STEP_SLEEP.
"""
import math

import pytest

from hvtui.core.preset.schema import load_preset
from hvtui.core.run import exitcodes
from hvtui.core.run.bus import Bus
from hvtui.core.run.session import RunOptions, Session
from hvtui.core.train import checkpoint as ckpt
from tests.helpers import loop_presets as L

pytestmark = pytest.mark.slow



def _run(tmp_path, clips, name="p", resume=None, allow_changed=False, **overrides):
    data, cache = clips
    preset = load_preset(L.write_preset(tmp_path / f"{name}.toml", data, cache, tmp_path / "out", **overrides))
    global _last
    _last = s = Session(preset, options=RunOptions(resume=resume, allow_changed=allow_changed), bus=Bus())
    s.start()
    s.join()
    return s.exit_code, L.read_events(tmp_path / "out")


def _errors(events):
    return "\n".join(e.get("message", "") for e in events if e.kind == "error")


def test_overfit_loss_falls_and_writes_lora_checkpoints_sample_and_events(tmp_path, clips):
    data, cache = clips
    one = L.write_clips(tmp_path / "one", 1)
    code, events = _run(tmp_path, (one, cache), max_train_steps=24, learning_rate=1e-2, checkpointing_steps=8,
                        checkpoints_total_limit=2, validation_steps=24, validation_prompt="a red square moves right",
                        validation_resolution="64x64", validation_num_video_frames=5,
                        validation_num_inference_steps=2, validation_guidance=1.0, export_comfyui=True)
    assert code == 0, _errors(events)
    losses = [v for _, v in sorted(L.losses(events).items())]
    assert len(losses) == 24 and all(math.isfinite(v) for v in losses)
    assert sum(losses[-6:]) / 6 < 0.9 * sum(losses[:6]) / 6      # the loss clearly falls
    kinds = [e.kind for e in events]
    assert kinds[0] == "state" and kinds[-1] == "finished" and "run_started" in kinds
    assert events[-1].get("status") == "completed" and events[-1].get("exit_code") == 0
    step = [e for e in events if e.kind == "step"][-1]
    for key in ("loss_smooth", "lr", "grad_norm", "step_time", "samples_per_s", "eta_s", "sample_ids"):
        assert step.get(key) is not None, key
    etas = [e.get("eta_s") for e in events if e.kind == "step"]
    assert etas[-1] == 0 and all(v > 0 for v in etas[:-1])     # hvtui.core.run.eta: nothing left at the end
    out = tmp_path / "out"
    assert (out / "pytorch_lora_weights.safetensors").is_file()
    assert (out / "pytorch_lora_weights_comfy.safetensors").is_file()
    assert [c.step for c in ckpt.list_complete(out)] == [16, 24]          # keep last 2
    samples = [e for e in events if e.kind == "sample"]
    assert samples and samples[0].get("step") == 24 and (out / "samples" / "step000024-0.mp4").stat().st_size > 0

    # the final LoRA loads into a fresh tiny transformer the diffusers way
    from hvtui.core.train.tiny import tiny_transformer

    fresh = tiny_transformer()
    fresh.load_lora_adapter(str(out / "pytorch_lora_weights.safetensors"), prefix="transformer")
    assert any("lora_B" in n and p.abs().sum() > 0 for n, p in fresh.named_parameters())


def test_nan_loss_is_skipped_then_stops_with_sample_ids(tmp_path, clips, monkeypatch):
    monkeypatch.setenv("HVTUI_INJECT_NAN_AT_STEP", "2")
    code, events = _run(tmp_path, clips, max_nonfinite_steps=3)
    assert code == exitcodes.TRAINING_FAILED == 4
    assert sorted(L.losses(events)) == [1]                  # no step after the non-finite ones
    err = _errors(events)
    assert "non-finite loss 3 times in a row" in err and "clips/clip" in err
    warnings = [e.get("message") for e in events if e.kind == "log" and e.get("level") == "warning"]
    assert sum("non-finite loss" in w for w in warnings) == 3
    assert events[-1].get("exit_code") == 4 and ckpt.find_newest(tmp_path / "out").step == 1


def test_one_nan_is_skipped_and_training_goes_on(tmp_path, clips, monkeypatch):
    monkeypatch.setenv("HVTUI_INJECT_NAN_AT_STEP", "2")
    monkeypatch.setenv("HVTUI_INJECT_NAN_TIMES", "1")
    code, events = _run(tmp_path, clips, max_train_steps=4)
    assert code == 0, _errors(events)
    assert sorted(L.losses(events)) == [1, 2, 3, 4]


def test_repeated_oom_stops_with_advice(tmp_path, clips, monkeypatch):
    monkeypatch.setenv("HVTUI_INJECT_OOM_AT_STEP", "3")
    code, events = _run(tmp_path, clips)
    assert code == exitcodes.TRAINING_FAILED
    assert sorted(L.losses(events)) == [1, 2]
    err = [e for e in events if e.kind == "error"][-1]
    assert "out of memory 3 times in a row" in err.get("message") and "enable_group_offload" in err.get("hint")


def test_one_oom_skips_the_batch(tmp_path, clips, monkeypatch):
    monkeypatch.setenv("HVTUI_INJECT_OOM_AT_STEP", "2")
    monkeypatch.setenv("HVTUI_INJECT_OOM_TIMES", "1")
    code, events = _run(tmp_path, clips, max_train_steps=3)
    assert code == 0, _errors(events)
    assert sorted(L.losses(events)) == [1, 2, 3]
    assert any("out of memory" in e.get("message", "") for e in events if e.kind == "log")


def test_resume_with_changed_batch_size_needs_the_flag(tmp_path, clips):
    code, _ = _run(tmp_path, clips, max_train_steps=2)
    assert code == 0
    code, _ = _run(tmp_path, clips, name="q", resume="auto", max_train_steps=4, train_batch_size=2)
    assert code == exitcodes.RESUME_MISMATCH == 5
    assert "train_batch_size: 1 -> 2" in _errors(_last.bus.since(0)[0])   # a refused start: console only
    code, _ = _run(tmp_path, clips, name="q", resume=str(tmp_path / "nowhere"), max_train_steps=4)
    assert code == exitcodes.INVALID and "no such checkpoint folder" in _errors(_last.bus.since(0)[0])
    path = ckpt.find_newest(tmp_path / "out").path      # --resume PATH
    code, events = _run(tmp_path, clips, name="q", resume=str(path), allow_changed=True, max_train_steps=4,
                        train_batch_size=2)
    assert code == 0, _errors(events)
    resumed = events[max(i for i, e in enumerate(events) if e.kind == "run_started"):]
    assert sorted(L.losses(resumed)) == [3, 4]
    assert [e for e in resumed if e.kind == "step"][0].get("sample_ids").__len__() == 2


def test_i2v_trains_on_the_demo_data_with_first_frame_condition(tmp_path):
    code, events = _run(tmp_path, (L.DEMO_DATA, tmp_path / "cache"), model_flavour="i2v-480p", max_train_steps=3)
    assert code == 0, _errors(events)
    assert len(L.losses(events)) == 3 and all(math.isfinite(v) for v in L.losses(events).values())
    from safetensors.torch import load_file

    entry = load_file(str(next((tmp_path / "cache" / "latents").glob("*.safetensors"))))
    cond = entry["cond"]                       # [33, T, h, w]: first-frame latent + mask at latent frame 0
    assert cond[32, 0].eq(1).all() and cond[32, 1:].eq(0).all() and cond[:32, 0].abs().sum() > 0
    assert entry["image"].shape[0] > 0         # SigLIP tokens of the first frame


def test_control_save_now_pause_and_stop(tmp_path, clips, monkeypatch):
    monkeypatch.setenv("HVTUI_TEST_STEP_SLEEP", "0.2")
    data, cache = clips
    preset = load_preset(L.write_preset(tmp_path / "p.toml", data, cache, tmp_path / "out", max_train_steps=200))
    s = Session(preset, options=RunOptions(file_control=False))
    s.start()
    step = lambda: (s.bus.latest("step").get("step") if s.bus.latest("step") else 0)   # noqa: E731
    L.wait_for(lambda: step() >= 2)
    s.control.request("save")
    L.wait_for(lambda: s.bus.latest("checkpoint") is not None)
    s.control.request("pause")
    L.wait_for(lambda: s.bus.latest("state").get("state") == "paused")
    paused_at = step()
    import time

    time.sleep(0.6)
    assert step() == paused_at                 # nothing trains while paused
    s.control.request("resume")
    L.wait_for(lambda: step() > paused_at)
    s.control.request("stop")
    assert s.join(timeout=120)
    assert s.exit_code == 0
    fin = s.bus.latest("finished")
    assert fin.get("status") == "stopped" and fin.get("step") < 200
    assert ckpt.find_newest(tmp_path / "out").step == fin.get("step")    # the state was saved at the stop


def test_gradient_accumulation_takes_several_batches_per_step(tmp_path, clips):
    code, events = _run(tmp_path, clips, max_train_steps=3, gradient_accumulation_steps=2,
                        lr_scheduler="linear", lr_warmup_steps=0)
    assert code == 0, _errors(events)
    steps = [e for e in events if e.kind == "step"]
    assert [len(e.get("sample_ids")) for e in steps] == [2, 2, 2]
    lrs = [e.get("lr") for e in steps]             # the schedule moves once per optimizer step
    assert lrs == pytest.approx([2e-3 * 2 / 3, 2e-3 / 3, 0.0])
    assert [e.get("global_batch") for e in events if e.kind == "run_started"] == [2]


def test_bf16_mixed_precision_runs_on_cpu(tmp_path, clips):
    code, events = _run(tmp_path, clips, max_train_steps=2, mixed_precision="bf16", base_model_precision="bf16")
    assert code == 0, _errors(events)
    assert all(math.isfinite(v) for v in L.losses(events).values())


def test_invalid_preset_exits_2_and_failing_doctor_exits_3(tmp_path, clips):
    code, _ = _run(tmp_path, clips, name="bad", learning_rate=-1.0)
    assert code == exitcodes.INVALID
    assert not (tmp_path / "out").exists()                # nothing written before the preset is valid
    code, _ = _run(tmp_path, clips, name="doc", pretrained_model_name_or_path=str(tmp_path / "no-model"))
    assert code == exitcodes.DOCTOR_FAILED
    events = _last.bus.since(0)[0]
    assert "does not exist" in _errors(events) and not L.losses(events)
    assert not (tmp_path / "out").exists()                # a refused start leaves nothing (not even the lock)
