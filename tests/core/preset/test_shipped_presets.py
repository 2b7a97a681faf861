"""Every preset shipped in presets/ passes `hvtui check` (warnings allowed)."""
from __future__ import annotations

import pytest

from hvtui.cli import main
from hvtui.core.preset.check import validate_file
from tests.helpers.repo_paths import PRESETS

SHIPPED = sorted(PRESETS.rglob("*.toml"))


def test_the_required_presets_are_shipped():
    names = {p.name for p in SHIPPED}
    assert {"demo.toml", "t2v-480p-24gb.toml", "t2v-480p-80gb.toml", "t2v-720p-80gb.toml", "i2v-480p.toml"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_preset_passes_check(path, capsys):
    v = validate_file(path, env={})   # no HUNYUANVIDEO_* variables: the presets must stand on their own
    assert v.ok, "\n".join(map(str, v.errors))
    assert main(["check", str(path)]) == 0
    assert "OK:" in capsys.readouterr().out


def test_presets_match_their_names():
    from hvtui.core.preset.schema import load_preset
    p24 = load_preset(PRESETS / "t2v-480p-24gb.toml")
    assert p24.enable_group_offload and not p24.enable_model_cpu_offload and p24.model_flavour == "t2v-480p"
    assert not load_preset(PRESETS / "t2v-480p-80gb.toml").enable_group_offload
    int8 = load_preset(PRESETS / "t2v-480p-24gb-int8.toml")
    assert int8.base_model_precision == "int8-torchao" and not int8.enable_group_offload
    from hvtui.core.env.fit import estimate_memory
    # a 24 GB card (RTX 4090: 24564 MiB), with room to spare: the attention cache only fills what is left
    assert estimate_memory(int8, (848, 480, 61), card_gib=24564 / 1024).required_gib < 0.92 * 24564 / 1024
    p720 = load_preset(PRESETS / "t2v-720p-80gb.toml")
    assert p720.model_flavour == "t2v-720p" and p720.validation_resolution == "1280x720"
    i2v = load_preset(PRESETS / "i2v-480p.toml")
    assert i2v.is_i2v and i2v.vision_encoder_path
