"""Resume with lora_alpha != lora_rank: the user LoRA file has alpha/rank folded into lora_B, the checkpoint
also keeps the PEFT tensors as trained (lora_state.safetensors), and resume loads those: the resumed run
repeats the uninterrupted one exactly. A checkpoint without that file (an older one) resumes through
lora.load_lora_file (unfolding the scale; 1.5 here, not a power of two, so only to rounding)."""
import shutil

import pytest

from hvtui.core.preset.schema import load_preset
from hvtui.core.run.session import RunOptions, Session
from hvtui.core.train import checkpoint as ckpt
from tests.helpers import loop_presets as L

pytestmark = pytest.mark.slow
STEPS, CUT = 6, 3


def _run(path, resume=None):
    s = Session(load_preset(path), options=RunOptions(resume=resume))
    s.start()
    s.join()
    return s.exit_code


def test_resume_with_alpha_not_rank_repeats_the_uninterrupted_run(tmp_path):
    data = L.write_clips(tmp_path / "data", 2)
    kw = dict(lora_rank=4, lora_alpha=6, max_train_steps=STEPS, checkpointing_steps=CUT, checkpoints_total_limit=3)
    full = L.write_preset(tmp_path / "full.toml", data, tmp_path / "cache", tmp_path / "full", **kw)
    assert _run(full) == 0
    expected = L.losses(L.read_events(tmp_path / "full"))
    cut = ckpt.root(tmp_path / "full") / ckpt.name_for(CUT)
    assert (cut / ckpt.LORA_STATE_FILE).is_file()

    for name, exact in (("exact", True), ("folded", False)):
        out = tmp_path / name
        shutil.copytree(cut, ckpt.root(out) / cut.name)   # as if that run had stopped at step CUT
        if not exact:   # as hvtui wrote checkpoints before: no exact LoRA state, a marker without a manifest
            (ckpt.root(out) / cut.name / ckpt.LORA_STATE_FILE).unlink()
            (ckpt.root(out) / cut.name / ckpt.MARKER).write_text(f"{CUT}\n")
        p = L.write_preset(tmp_path / f"{name}.toml", data, tmp_path / "cache", out, **kw)
        assert _run(p, resume="auto") == 0
        got = L.losses(L.read_events(out))
        assert sorted(got) == list(range(CUT + 1, STEPS + 1))
        for step, loss in got.items():
            if exact:
                assert loss == expected[step], step
            else:
                assert loss == pytest.approx(expected[step], abs=1e-5), step
