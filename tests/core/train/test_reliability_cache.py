"""Damaged cache entries (issue 18): found before they are trusted, named, and encoded again, instead of an
"unexpected error" when the sample is drawn (and again on every resume) or a NaN loss that blames the clips.

- at the start of a run: an empty, truncated or garbled file, a tensor of another shape, another entry's
  file under this name -> a warning with the path and why, the entry deleted and encoded again;
- while training (damage the start cannot see without reading every tensor): NaN values, bytes changed in
  place -> that batch is skipped with the path named, the entry deleted, and the next start encodes it.
"""
import shutil

import pytest
from safetensors import safe_open
from safetensors.torch import save_file

from hvtui.core.train.cache_verify import CacheEntryDamaged, check_latent, check_text
from tests.helpers import loop_presets as L
from tests.helpers import reliability_kit as K

pytestmark = pytest.mark.slow
STEPS = 6


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A cache written by a real run (the clips, their latents and text entries)."""
    root = tmp_path_factory.mktemp("cache")
    data = L.write_clips(root / "data", 2)
    r = K.run(L.write_preset(root / "p.toml", data, root / "cache", root / "out", max_train_steps=1))
    assert r.session.exit_code == 0
    return data, root / "cache"


def _copy(built, tmp_path):
    data, cache = built
    shutil.copytree(cache, tmp_path / "cache")
    return data, tmp_path / "cache"


def _latent(cache):
    return sorted((cache / "latents").glob("*.safetensors"))[0]


def _caption_entry(cache):
    for f in sorted((cache / "text").glob("*.safetensors")):
        with safe_open(str(f), "pt") as g:
            if (g.metadata() or {}).get("caption"):
                return f
    raise AssertionError("no caption entry")


def _rewrite(path, change):
    with safe_open(str(path), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    save_file(change(tensors), str(path), metadata=meta)


def _shrink(t):
    return {k: (v[:, :1].contiguous() if k in ("mean", "std") else v) for k, v in t.items()}


START_DAMAGE = {
    "empty": lambda p: p.write_bytes(b""),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[:-40]),
    "garbled header":
        lambda p: p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all" + p.read_bytes()[24:]),
    "another shape": lambda p: _rewrite(p, _shrink),
}


# (a text entry's length is its caption's: it has no fixed shape to compare)
@pytest.mark.parametrize("which, damage", [("latent", d) for d in sorted(START_DAMAGE)]
                         + [("text", d) for d in sorted(START_DAMAGE) if d != "another shape"])
def test_an_entry_damaged_on_disk_is_named_and_encoded_again_at_the_start(built, tmp_path, damage, which):
    data, cache = _copy(built, tmp_path)
    entry = _latent(cache) if which == "latent" else _caption_entry(cache)
    START_DAMAGE[damage](entry)
    run = K.run(L.write_preset(tmp_path / "p.toml", data, cache, tmp_path / "out", max_train_steps=STEPS))
    assert run.session.exit_code == 0, run.errors()
    said = [w for w in run.warnings() if str(entry) in w]
    assert said and "is damaged" in said[0] and "encoding it again" in said[0], run.warnings()
    (check_latent(entry, "80x80@9", False) if which == "latent" else check_text(entry))   # rebuilt, whole
    assert sorted(L.losses(run.events())) == list(range(1, STEPS + 1))


def test_another_entrys_file_under_this_name_is_found_by_its_key(built, tmp_path):
    data, cache = _copy(built, tmp_path)
    a, b = sorted((cache / "latents").glob("*.safetensors"))[:2]
    shutil.copy(b, a)                                       # a well-formed file, for the wrong clip
    with pytest.raises(CacheEntryDamaged, match="copied or renamed"):
        check_latent(a, "80x80@9", False)
    run = K.run(L.write_preset(tmp_path / "p.toml", data, cache, tmp_path / "out", max_train_steps=2))
    assert run.session.exit_code == 0 and any(str(a) in w for w in run.warnings())
    check_latent(a, "80x80@9", False)


def _nan(t):
    t = dict(t)
    t["mean"] = t["mean"].clone()
    t["mean"].view(-1)[0] = float("nan")
    return t


def _flip(path):
    raw = bytearray(path.read_bytes())
    for i in range(len(raw) - 64, len(raw) - 32):   # inside the tensor data: the header stays valid
        raw[i] ^= 0x21
    path.write_bytes(bytes(raw))


LOAD_DAMAGE = {"NaN values": lambda p: _rewrite(p, _nan), "bytes changed in place": _flip}


@pytest.mark.parametrize("damage", sorted(LOAD_DAMAGE))
def test_damage_only_the_tensors_show_skips_the_batch_names_the_file_and_the_next_start_rebuilds_it(
        built, tmp_path, damage):
    data, cache = _copy(built, tmp_path)
    entry = _latent(cache)
    LOAD_DAMAGE[damage](entry)
    check_latent(entry, "80x80@9", False)                    # nothing the start-time check can see
    preset = L.write_preset(tmp_path / "p.toml", data, cache, tmp_path / "out", max_train_steps=STEPS)
    run = K.run(preset)
    assert run.session.exit_code == 0, run.errors()
    skipped = [w for w in run.warnings() if str(entry) in w and "batch skipped" in w]
    why = "non-finite" if damage == "NaN values" else "checksum mismatch"
    assert skipped and why in skipped[0], run.warnings()
    assert not any("non-finite loss" in w for w in run.warnings())   # not blamed on the clips
    assert sorted(L.losses(run.events())) == list(range(1, STEPS + 1))
    assert not entry.exists()                                # deleted: the next start encodes it again
    again = K.run(preset, resume="auto", allow_changed=True)
    assert again.session.exit_code == 0, again.errors()
    check_latent(entry, "80x80@9", False)
    assert any("latents encoded 1" in m for m in (e.get("message") or "" for e in again.events()))
