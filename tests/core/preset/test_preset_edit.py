"""PresetDocument: edits through tomlkit keep comments and key order; only the changed lines change."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from hvtui.core.preset.edit import PresetDocument, parse_key_path
from hvtui.core.preset.schema import PresetError, load_preset
from tests.helpers.repo_paths import REPO

SHIPPED = REPO / "presets" / "t2v-480p-24gb.toml"   # many comments, inline and on their own lines


@pytest.fixture
def preset_copy(tmp_path) -> Path:
    path = tmp_path / "mine.toml"
    shutil.copy(SHIPPED, path)
    (tmp_path / "clips").mkdir()
    return path


def test_two_edits_change_exactly_two_lines(preset_copy):
    before = preset_copy.read_text().splitlines()
    doc = PresetDocument.open(preset_copy)
    doc.set("learning_rate", 5e-5)
    doc.set("datasets.0.video.num_frames", 33)
    diff = doc.diff()
    changed = [ln for ln in diff.splitlines() if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
    lr = next(line for line in before if line.startswith("learning_rate = 1e-4"))   # inline comment kept
    assert changed == ["-" + lr, "+" + lr.replace("1e-4", "5e-05", 1),
                       "-num_frames = 61           # (frames - 1) % 4 == 0; 61 frames is 2.5 s at 24 fps",
                       "+num_frames = 33           # (frames - 1) % 4 == 0; 61 frames is 2.5 s at 24 fps"]
    doc.save()
    after = preset_copy.read_text().splitlines()
    assert len(after) == len(before)
    assert [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b] == [
        before.index(lr), next(i for i, ln in enumerate(before) if ln.startswith("num_frames"))]
    # git agrees (when git is around): two lines out, two in
    if shutil.which("git"):
        orig = preset_copy.with_name("orig.toml")
        shutil.copy(SHIPPED, orig)
        out = subprocess.run(["git", "diff", "--no-index", "--numstat", str(orig), str(preset_copy)],
                             capture_output=True, text=True).stdout.split()
        assert out[:2] == ["2", "2"]
    # and tomllib reads the new values
    preset = load_preset(preset_copy)
    assert preset.learning_rate == 5e-5 and preset.datasets[0].video.num_frames == 33
    assert not doc.dirty and doc.diff() == ""



def test_diff_headers_name_the_file_once(preset_copy, monkeypatch):
    # an absolute path used to come out as `--- a//tmp/.../mine.toml`
    doc = PresetDocument.open(preset_copy)
    doc.set("learning_rate", 5e-5)
    head = doc.diff().splitlines()[:2]
    assert preset_copy.is_absolute()
    assert head == [f"--- {preset_copy} (saved)", f"+++ {preset_copy} (edited)"]
    assert "//" not in "".join(head)
    monkeypatch.chdir(preset_copy.parent)                     # a relative path is shown as given
    doc = PresetDocument.open(Path("mine.toml"))
    doc.set("learning_rate", 5e-5)
    assert doc.diff().splitlines()[:2] == ["--- mine.toml (saved)", "+++ mine.toml (edited)"]

def test_get_accepts_both_path_styles(preset_copy):
    doc = PresetDocument.open(preset_copy)
    assert doc.get("datasets.1.id") == doc.get("datasets[1].id") == "text-embeds"
    assert doc.get(("datasets", 0, "video", "frame_rate")) == 24
    assert doc.get("lora_rank") == 16
    assert doc.get("nope", None) is None
    with pytest.raises(KeyError):
        doc.get("nope")
    assert parse_key_path("datasets[0].video.num_frames") == ["datasets", 0, "video", "num_frames"]


def test_new_keys_tables_and_removal(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('# top comment\nlora_rank = 8  # small\n\n[[datasets]]\nid = "a"\n')
    doc = PresetDocument.open(path)
    doc.set("seed", 7)
    doc.set("datasets.0.video.num_frames", 9)   # creates [datasets.video]
    doc.set("lora_rank", None)                  # None removes (TOML has no null)
    with pytest.raises(KeyError):
        doc.set("datasets.3.id", "x")           # datasets are added explicitly
    assert doc.add_dataset({"id": "b", "dataset_type": "text_embeds"}) == 1
    doc.save()
    text = path.read_text()
    assert text.startswith("# top comment\n") and "lora_rank" not in text
    preset = load_preset(path)
    assert preset.seed == 7 and preset.lora_rank == 16   # back to the default
    assert [d.id for d in preset.datasets] == ["a", "b"] and preset.datasets[0].video.num_frames == 9


def test_validate_unsaved_text_uses_its_own_lines(preset_copy):
    doc = PresetDocument.open(preset_copy)
    doc.set("datasets.0.instance_data_dir", "clips")
    doc.set("datasets.0.video.num_frames", 30)
    v = doc.validate(env={})
    line = doc.text.splitlines().index(next(ln for ln in doc.text.splitlines() if ln.startswith("num_frames"))) + 1
    assert [(p.key, p.line) for p in v.errors] == [("datasets[0].video.num_frames", line)]
    assert doc.to_preset().datasets[0].video.num_frames == 30
    assert "num_frames = 61" in preset_copy.read_text()        # nothing saved yet


def test_save_is_atomic_and_keeps_permissions(preset_copy):
    os.chmod(preset_copy, 0o640)
    doc = PresetDocument.open(preset_copy)
    doc.set("seed", 1)
    doc.save()
    assert (preset_copy.stat().st_mode & 0o777) == 0o640
    assert [p.name for p in preset_copy.parent.iterdir() if p.name.endswith(".tmp")] == []
    other = doc.save(preset_copy.with_name("copy.toml"))
    assert load_preset(other).seed == 1


def test_bad_files_raise_preset_error(tmp_path):
    with pytest.raises(PresetError):
        PresetDocument.open(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("a = \n")
    with pytest.raises(PresetError):
        PresetDocument.open(tmp_path / "bad.toml")
