"""The README's key-remap example works as written: the ```toml block after "keys.toml" in README.md is
written to a keys.toml, loaded as at start-up, and its keys drive the app. Every binding id the README's
key table names exists."""
from __future__ import annotations

import asyncio
import re
import textwrap
import tomllib

from hvtui.tui import keymap  # noqa: E402
from hvtui.tui.settings import load_settings  # noqa: E402
from tests.helpers.repo_paths import README
from tests.helpers.tui_fakes import FakeBackend, wait_for


def readme_keys_example() -> str:
    text = README.read_text(encoding="utf-8")
    after = text[text.index("keys.toml"):]
    match = re.search(r"```toml\n(.*?)```", after, re.S)
    assert match, "README.md: no ```toml example after the keys.toml sentence"
    return match.group(1)


def test_readme_example_loads_without_problems(tmp_path):
    example = readme_keys_example()
    (tmp_path / "keys.toml").write_text(example)
    settings = load_settings(tmp_path)
    assert settings.problems == []
    data = tomllib.loads(example)
    flat = {k: v for k, v in data.items() if k != "keys"}
    assert flat, "the README example should show the flat form"
    assert data.get("keys"), "the README example should show the [keys] table form"
    assert settings.keys == {**flat, **data["keys"]}


def test_dotted_keys_and_both_forms_mean_the_same(tmp_path):
    (tmp_path / "keys.toml").write_text(textwrap.dedent('''
        run.start = "g"          # TOML reads this as a table run = {start = "g"}
        "run.pause" = "o"
        [keys]
        "run.stop" = "k"
        theme.next = "y"
    '''))
    settings = load_settings(tmp_path)
    assert settings.problems == []
    assert settings.keys == {"run.start": "g", "run.pause": "o", "run.stop": "k", "theme.next": "y"}


def test_unknown_flat_id_is_reported(tmp_path):
    (tmp_path / "keys.toml").write_text('"run.begin" = "g"\n')
    settings = load_settings(tmp_path)
    assert settings.keys == {} and "unknown binding id 'run.begin'" in settings.problems[0]


def test_readme_key_table_names_real_binding_ids():
    text = README.read_text(encoding="utf-8")
    table = text[text.index("| where | keys (binding id) |"):text.index("```toml")]
    ids = set(re.findall(r"`([a-z]+\.[a-z0-9]+)`", table))
    assert ids and ids <= keymap.KEY_IDS, ids - keymap.KEY_IDS      # no id the app does not know
    ids |= {name for name in keymap.KEY_IDS if "." not in name and f"`{name}`" in table}
    shown = {i for i in keymap.KEY_IDS if not re.fullmatch(r"preset\.[2-8]", i)}   # "preset.1 ... preset.9"
    assert shown <= ids, shown - ids                                 # and every id the app has is named


def test_readme_example_drives_the_app(tmp_path):
    from tests.tui.test_tui_app import make_app, ready

    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "keys.toml").write_text(readme_keys_example())
    settings = load_settings(cfg)
    start, stop = settings.keys["run.start"], settings.keys["run.stop"]

    async def go():
        app = make_app(tmp_path, backend=FakeBackend(max_steps=100000, step_time=0.01), settings=settings)
        async with app.run_test(size=(100, 32)) as pilot:
            await ready(pilot)
            await pilot.press("s")                     # the default key no longer starts
            await pilot.pause(0.1)
            assert app.train_state.state == "idle"
            await pilot.press(start)
            assert await wait_for(pilot, lambda: app.train_state.state == "running")
            await pilot.press(stop)
            assert await wait_for(pilot, lambda: app.train_state.state == "stopped")
    asyncio.run(go())
