"""TUI building blocks without a screen: themes, keymap, settings, form parsing, the loss chart's plot,
the train state, the launcher's argument checks, and what the TUI imports before its first paint."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from argparse import Namespace
from pathlib import Path

import pytest

from hvtui.core.preset.schema import load_preset  # noqa: E402
from hvtui.core.run.events import Event  # noqa: E402
from hvtui.tui import keymap  # noqa: E402
from hvtui.tui.app_launcher import plan  # noqa: E402
from hvtui.tui.form import FieldError, form_fields, parse_text, to_text  # noqa: E402
from hvtui.tui.settings import config_dir, load_settings  # noqa: E402
from hvtui.tui.themes import REPO_THEMES, ThemeError, load_theme_file, load_themes  # noqa: E402
from hvtui.tui.train_state import TrainState, format_bytes, format_duration  # noqa: E402
from hvtui.tui.widgets.loss_chart import BRAILLE_BASE, plot_layers  # noqa: E402
from tests.helpers.repo_paths import REPO
from tests.helpers.tui_fakes import write_presets

# ------------------------------------------------------------------ themes

def test_shipped_themes_load():
    loaded = load_themes([REPO_THEMES])
    assert loaded.problems == []
    names = {t.name for t in loaded.themes}
    assert {"hvtui-dark", "hvtui-light", "hvtui-high-contrast"} <= names
    dark = next(t for t in loaded.themes if t.name == "hvtui-dark")
    light = next(t for t in loaded.themes if t.name == "hvtui-light")
    assert dark.dark and not light.dark
    hc = next(t for t in loaded.themes if t.name == "hvtui-high-contrast")
    # a basic 16-colour terminal: every colour is an ANSI name, and Textual keeps them as ANSI
    assert hc.ansi
    colours = [v for v in (hc.primary, hc.secondary, hc.accent, hc.warning, hc.error, hc.success, hc.foreground,
                           hc.background) if v] + [v for k, v in hc.variables.items() if not k.endswith("style")]
    assert all(c.startswith("ansi_") for c in colours), colours


@pytest.mark.parametrize("text, message", [
    ('name = "x"\n', "primary colour is required"),
    ('name = "x"\nprimary = "#12345"\n', "is not a colour"),
    ('name = "x"\nprimary = "#123456"\ndark = "yes"\n', "dark must be true or false"),
    ('name = "x"\nprimary = "#123456"\nprimery = "#000000"\n', "unknown key(s) primery"),
    ('name = "x"\nprimary = "#123456"\n[variables]\nhvtui-ok = "greenish"\n', "hvtui-ok"),
    ('name = "x"\nprimary = "#123456"\n[variables]\nblock-cursor-text-style = "shiny"\n', "not a text style"),
    ('name = "x\n', "not valid TOML"),
])
def test_broken_theme_files_say_what_is_wrong(tmp_path, text, message):
    path = tmp_path / "t.toml"
    path.write_text(text)
    with pytest.raises(ThemeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_theme_file(path)


def test_load_themes_skips_broken_and_user_theme_overrides(tmp_path):
    repo, user = tmp_path / "repo", tmp_path / "user"
    repo.mkdir()
    user.mkdir()
    (repo / "a.toml").write_text('name = "a"\nprimary = "#112233"\n')
    (repo / "b.toml").write_text('name = "b"\nprimary = 3\n')
    (user / "a.toml").write_text('name = "a"\nprimary = "#445566"\n')
    loaded = load_themes([repo, user, tmp_path / "missing"])
    assert [(t.name, t.primary) for t in loaded.themes] == [("a", "#445566")]
    assert len(loaded.problems) == 1 and "b.toml" in loaded.problems[0] and "skipped" in loaded.problems[0]


# ------------------------------------------------------------------ keys and settings

def test_binding_ids_are_unique_and_keys_avoid_fragile_chords():
    ids = [k.id for k in keymap.ALL_KEYS]
    assert len(ids) == len(set(ids))
    for k in keymap.ALL_KEYS:
        for key in k.keys.split(","):
            assert "ctrl+enter" not in key and "shift+" not in key, k


def test_pane_keys_and_preset_digits_do_not_clash():
    app_keys = [key for k in keymap.APP_KEYS for key in k.keys.split(",")]
    assert len(app_keys) == len(set(app_keys))
    panes = {k.keys for k in keymap.APP_KEYS if k.id.startswith("pane.")}
    assert panes == {"f1", "f2", "f3", "f4", "greater_than_sign", "less_than_sign"}
    assert {k.keys for k in keymap.APP_KEYS if k.id.startswith("preset.") and k.id[-1].isdigit()} == \
        {str(n) for n in range(1, 10)}


def test_settings_and_keymap_file(tmp_path):
    (tmp_path / "settings.toml").write_text('theme = "hvtui-light"\n')
    (tmp_path / "keys.toml").write_text(textwrap.dedent('''
        [keys]
        "run.start" = "g"
        "pane.train" = "f9, ctrl+t"
        "no.such" = "z"
        "run.stop" = 5
    '''))
    s = load_settings(tmp_path)
    assert s.theme == "hvtui-light"
    assert s.keys == {"run.start": "g", "pane.train": "f9,ctrl+t"}
    assert any("no.such" in p for p in s.problems) and any("run.stop" in p for p in s.problems)
    assert keymap.key_for("run.start", s.keys) == "g" and keymap.key_for("run.stop", s.keys) == "x"


def test_broken_settings_file_is_reported_not_fatal(tmp_path):
    (tmp_path / "settings.toml").write_text("theme = \n")
    s = load_settings(tmp_path)
    assert s.theme == "hvtui-dark" and "not valid TOML" in s.problems[0]


def test_config_dir_env():
    assert config_dir({"HVTUI_CONFIG_DIR": "/x/y"}) == Path("/x/y")
    assert config_dir({"XDG_CONFIG_HOME": "/cfg"}) == Path("/cfg/hvtui")


# ------------------------------------------------------------------ form

def test_form_fields_follow_sections_and_datasets(tmp_path):
    preset = load_preset(write_presets(tmp_path)[0])
    fields = form_fields(preset)
    sections = [f.section for f in fields]
    firsts = list(dict.fromkeys(sections))
    assert firsts[:7] == ["model", "lora", "training", "memory", "validation", "logging", "data"]
    assert firsts[7] == "dataset clips"
    keys = {f.key for f in fields}
    assert {"learning_rate", "datasets.0.instance_data_dir", "datasets.0.video.num_frames"} <= keys
    nf = next(f for f in fields if f.key == "datasets.0.video.num_frames")
    assert nf.display_key == "datasets[0].video.num_frames"


def test_parse_text_types(tmp_path):
    fields = {f.key: f for f in form_fields(load_preset(write_presets(tmp_path)[0]))}
    assert parse_text(fields["learning_rate"], "5e-5") == 5e-5
    assert parse_text(fields["lora_rank"], " 16 ") == 16
    assert parse_text(fields["lora_alpha"], "") is None                 # optional: empty = default
    assert parse_text(fields["validation_prompts"], "a cat | a dog") == ["a cat", "a dog"]
    assert to_text(["a cat", "a dog"]) == "a cat | a dog"
    with pytest.raises(FieldError, match="whole number"):
        parse_text(fields["lora_rank"], "16.5")
    with pytest.raises(FieldError, match="number"):
        parse_text(fields["learning_rate"], "fast")


# ------------------------------------------------------------------ chart and state

def test_loss_chart_plot_has_raw_dots_and_a_connected_smooth_line():
    steps = list(range(1, 201))
    raw = [1.0 / s ** 0.5 + (0.05 if s % 2 else -0.05) for s in steps]
    smooth = [1.0 / s ** 0.5 for s in steps]
    raw_layer, smooth_layer, lo, hi = plot_layers(steps, raw, smooth, width=40, height=6)
    assert lo == pytest.approx(min(raw)) and hi == pytest.approx(max(raw))
    # the smoothed line is drawn in every cell column (no gaps), top-left to bottom-right
    for col in range(40):
        assert any(smooth_layer.cells[row][col] for row in range(6)), col
    top = [min(row for row in range(6) if smooth_layer.cells[row][col]) for col in (0, 39)]
    assert top[0] <= 1 and top[1] == 5                     # falls from the top rows to the bottom one
    assert sum(bin(c).count("1") for row in raw_layer.cells for c in row) > 100
    assert chr(BRAILLE_BASE | smooth_layer.cells[0][0]) != " "


def test_loss_chart_survives_flat_and_non_finite_losses():
    raw_layer, smooth_layer, lo, hi = plot_layers([1, 2, 3], [0.5, float("nan"), 0.5], [0.5, 0.5, 0.5], 10, 3)
    assert lo < 0.5 < hi
    plot_layers([7], [float("inf")], [float("nan")], 10, 3)


def test_train_state_folds_events():
    st = TrainState()
    st.apply([Event("run_started", {"max_steps": 10, "device": "cpu"}), Event("state", {"state": "running"}),
              Event("phase", {"phase": "caching"}), Event("progress", {"phase": "caching", "done": 3, "total": 9})])
    assert st.active and st.progress["caching"] == (3, 9, "")
    st.apply([Event("step", {"step": s, "max_steps": 10, "loss": 1.0 / s}) for s in range(1, 6)])
    assert st.steps == [1, 2, 3, 4, 5] and st.smooth[0] == 1.0 and 0.2 < st.smooth[-1] < 1.0
    st.apply([Event("gpu", {"gpus": [], "error": "no GPU: no driver"}),
              Event("checkpoint", {"step": 5, "path": "/o/checkpoints/checkpoint-000005"}),
              Event("log", {"level": "warning", "message": "hello"}),
              Event("finished", {"status": "stopped", "exit_code": 0, "step": 5})])
    assert st.gpus == [] and st.gpu_note == "no GPU: no driver"
    assert st.state == "stopped" and not st.active and st.checkpoints == [(5, "/o/checkpoints/checkpoint-000005")]
    assert [m for _, _, _, m in st.new_logs(0)] == ["hello", "run stopped (exit code 0)"]
    st.reset()
    assert st.steps == [] and st.gpus == [] and st.state == "idle"    # GPU readings survive a new run


def test_train_state_thins_long_histories():
    st = TrainState()
    st.apply([Event("step", {"step": s, "loss": 1.0}) for s in range(1, 10001)])
    assert len(st.steps) <= 4000 and st.steps[0] == 1 and st.steps[-1] > 9000


def test_formatting():
    assert format_duration(59) == "59s" and format_duration(61) == "1m01s" and format_duration(7300) == "2h01m"
    assert format_duration(None) == "--"
    assert format_bytes(3 << 30) == "3.0 GiB" and format_bytes(512) == "512 B"


# ------------------------------------------------------------------ launcher

def test_plan_finds_presets_and_the_named_one(tmp_path):
    presets = write_presets(tmp_path / "p")
    found, active, error = plan(Namespace(presets=str(tmp_path / "p"), preset="beta", attach=None))
    assert error is None and found == presets and active == 1
    other = tmp_path / "elsewhere.toml"
    other.write_text(presets[0].read_text())
    found, active, error = plan(Namespace(presets=str(tmp_path / "p"), preset=str(other), attach=None))
    assert found[-1] == other and active == 3


def test_plan_errors_are_clear(tmp_path):
    _, _, error = plan(Namespace(presets=str(tmp_path), preset=None, attach=None))
    assert "no presets in" in error and "--presets DIR" in error
    _, _, error = plan(Namespace(presets=str(tmp_path), preset="nope", attach=None))
    assert "'nope' not found" in error


def test_cli_exit_codes_for_bad_arguments(tmp_path):
    r = subprocess.run([sys.executable, "-m", "hvtui", "--presets", str(tmp_path)], capture_output=True, text=True,
                       timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 2 and "no presets in" in r.stderr
    (tmp_path / "a-file").write_text("")
    r = subprocess.run([sys.executable, "-m", "hvtui", "--attach", str(tmp_path / "a-file")], capture_output=True,
                       text=True, timeout=60, stdin=subprocess.DEVNULL, cwd=REPO)
    assert r.returncode == 2 and "a file, not a folder" in r.stderr
    # a folder a run has not made yet is fine (attach waits for it), but not without a terminal
    r = subprocess.run([sys.executable, "-m", "hvtui", "--attach", str(tmp_path / "none")], capture_output=True,
                       text=True, timeout=60, stdin=subprocess.DEVNULL, cwd=REPO)
    assert r.returncode == 2 and "needs a terminal (stdin is not one)" in r.stderr and "hvtui --run" in r.stderr


def test_tui_imports_no_ml_stack_before_paint():
    code = ("import sys; import hvtui.tui.app, hvtui.tui.app_launcher; "
            "bad = [m for m in ('torch', 'diffusers', 'transformers', 'peft', 'accelerate', 'av', 'numpy') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
