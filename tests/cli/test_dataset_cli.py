"""`hvtui buckets`: the demo's report, JSON for scripts, exit 2 for a missing folder or an invalid preset."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.dataset_builders import clip
from tests.helpers.repo_paths import REPO

DEMO_BUCKETS = {"80x80@9": 4, "64x112@9": 2, "112x64@9": 4}


def hvtui(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "hvtui", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or REPO, timeout=120)


@pytest.fixture()
def demo(tmp_path):
    """The shipped demo preset and clips, copied so the scan's cache lands in tmp."""
    shutil.copy(REPO / "presets" / "demo.toml", tmp_path / "demo.toml")
    shutil.copytree(REPO / "presets" / "demo-data", tmp_path / "demo-data")
    return tmp_path / "demo.toml"


def write_preset(path: Path, data_dir: str, num_frames: int = 9) -> Path:
    path.write_text(f"""
pretrained_model_name_or_path = "builtin:tiny"
output_dir = "out"
mixed_precision = "no"
base_model_precision = "no_change"
max_train_steps = 10

[[datasets]]
id = "clips"
dataset_type = "video"
instance_data_dir = "{data_dir}"
resolution = 64

[datasets.video]
num_frames = {num_frames}

[[datasets]]
id = "text-embeds"
dataset_type = "text_embeds"
default = true
cache_dir = "out/cache/text"
""", encoding="utf-8")
    return path


def test_shipped_demo_data_all_in_buckets():
    data = REPO / "presets" / "demo-data"
    clips = sorted(data.glob("*.mp4"))
    assert 8 <= len(clips) <= 12
    assert all(c.stat().st_size < 8_000 for c in clips)
    assert all((c.with_suffix(".txt")).read_text().startswith(("a ", "an ")) for c in clips)


def test_buckets_demo_report(demo):
    r = hvtui("buckets", demo)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    for key, n in DEMO_BUCKETS.items():
        assert any(line.split()[:3] == [key, str(n), str(n)] for line in out.splitlines()), out
    assert "Discarded" not in out
    assert "10 files found, 10 kept in 3 buckets, 0 discarded; 10 samples per epoch" in out
    assert "repeats 0 (each clip once per epoch)" in out


def test_buckets_demo_json(demo):
    r = hvtui("buckets", demo, "--json", "--no-cache")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["ok"] is True and data["discarded"] == {} and data["errors"] == []
    assert {b["key"]: b["samples_per_epoch"] for b in data["buckets"]} == DEMO_BUCKETS
    sample = data["buckets"][0]["samples"][0]
    assert sample["frame_indices"] == list(range(9)) and sample["captions"][0].startswith(("a ", "an "))
    assert data["totals"]["samples_per_epoch"] == 10


def test_missing_dataset_dir_exits_2(tmp_path):
    preset = write_preset(tmp_path / "p.toml", "no-such-folder")
    r = hvtui("buckets", preset)
    assert r.returncode == 2
    assert "no-such-folder" in r.stdout + r.stderr
    assert "Traceback" not in r.stderr


def test_invalid_preset_exits_2(tmp_path):
    clip(tmp_path / "clips", "a.mp4", fps=12, frames=9)
    preset = write_preset(tmp_path / "p.toml", "clips", num_frames=60)
    r = hvtui("buckets", preset)
    assert r.returncode == 2 and "num_frames" in r.stdout + r.stderr and "Traceback" not in r.stderr
    r = hvtui("buckets", preset, "--json")
    assert r.returncode == 2 and json.loads(r.stdout)["ok"] is False
    r = hvtui("buckets", tmp_path / "missing.toml")
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_nothing_to_train_on_exits_2(tmp_path):
    clip(tmp_path / "clips", "a.mp4", fps=12, frames=5)
    preset = write_preset(tmp_path / "p.toml", "clips")
    r = hvtui("buckets", preset)
    assert r.returncode == 2
    assert "a.mp4: 5 frames at 12 fps, needs >= 9 (num_frames)" in r.stdout
    assert "no buckets: nothing to train on" in r.stdout
