"""The Train pane's sample preview (half blocks drawn from the contact sheet) and its tracker line: snapshots
at 80x24 and 120x40 of an attached finished run, the colours the preview draws, and the whole path from the
TUI starting the demo preset to the preview of its validation sample.

Regenerate the snapshots after an intended change:
HVTUI_UPDATE_SNAPSHOTS=1 python -m pytest tests/tui/test_tui_preview.py
"""
from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from hvtui.core.dataset.read import decode_frames  # noqa: E402
from hvtui.core.samples.contact_sheet import read_sheet, write_contact_sheet  # noqa: E402
from hvtui.tui.train_state import TrainState  # noqa: E402
from hvtui.tui.widgets.sample_preview import SamplePreview, choose_grid, compose, half_block_strips  # noqa: E402
from hvtui.tui.widgets.tracker_line import TrackerLine  # noqa: E402
from tests.helpers.repo_paths import REPO
from tests.helpers.tui_fakes import screen_text, wait_for
from tests.tui.test_tui_snapshots import compare, fixed_clock_zone, make_app, settle, write_run  # noqa: F401

CLIP = REPO / "presets" / "demo-data" / "red-square-right.mp4"   # 80x80, 9 frames: a red square moving right
RED = (200, 40, 40)


def clip_frames() -> np.ndarray:
    return np.stack(decode_frames(CLIP, list(range(9))))


def attached_run_with_sample(root: Path) -> Path:
    """write_run's finished run plus a tracker event and a sample whose contact sheet is the demo clip's."""
    out = root / "run"
    write_run(out)
    sheet = write_contact_sheet(clip_frames(), out / "samples" / "step-000060-0.png")
    lines = []
    for line in (out / "events.jsonl").read_text().splitlines():
        d = json.loads(line)
        if d.get("kind") == "sample":
            d["sheet"] = str(sheet)
        lines.append(json.dumps(d))
        if d.get("kind") == "run_started":
            lines.append(json.dumps({"kind": "tracker", "time": d["time"], "name": "tensorboard", "status": "logging",
                                     "where": str(out / "tensorboard" / "run")}))
    (out / "events.jsonl").write_text("\n".join(lines) + "\n")
    return out


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
def test_snapshot_train_pane_with_sample_preview(tmp_path, monkeypatch, size):
    attached_run_with_sample(tmp_path)
    monkeypatch.chdir(tmp_path)

    async def go():
        app = make_app([], tmp_path, telemetry=None, attach=Path("run"))
        async with app.run_test(size=size) as pilot:
            assert await wait_for(pilot, lambda: app.train_state.state == "finished")
            preview = app.query_one(SamplePreview)
            assert await wait_for(pilot, lambda: preview.ready)
            await settle(pilot)
            assert preview.display and preview.border_title == "sample 60"
            assert app.query_one(TrackerLine).display
            text = screen_text(app)
            assert "logs to tensorboard run/tensorboard/run" in text
            compare(f"train_preview_{size[0]}x{size[1]}", text)
    asyncio.run(go())


def test_half_blocks_draw_the_frames_colours_where_they_are():
    """Compose the demo clip's sheet into a 10x5-cell box (one frame) and read the colours back from the
    strips: the red square is at the left of frame 0, the rest is the clip's dark background."""
    frames = clip_frames()
    from hvtui.core.samples.contact_sheet import make_sheet

    sheet, layout = make_sheet(frames)
    assert (layout.cols, layout.rows, len(layout.frames)) == (4, 2, 8)
    canvas, mask = compose(sheet, layout, 10, 10)
    assert mask.all()                                   # a square frame fills the square box
    strips = half_block_strips(canvas, mask)
    assert len(strips) == 5 and all(s.cell_length == 10 for s in strips)
    cells = [[(ch, seg.style) for seg in s for ch in seg.text] for s in strips]
    # frame 0 of red-square-right: the square's left edge at x=0, vertically centred
    def rgb(style, which):
        c = getattr(style, which)
        return c.triplet if c else None
    mid = cells[2]
    left_top = rgb(mid[0][1], "color")
    right_top = rgb(mid[-1][1], "color")
    assert left_top.red > 150 and left_top.green < 90 and left_top.blue < 90, left_top
    assert max(right_top) < 60, right_top
    assert all(text == "▀" for text, _ in mid)


def test_grid_shows_more_frames_only_while_they_stay_readable():
    assert choose_grid(8, 106, 60, 15, 10)[:2] == (1, 1)        # 80x24: one frame
    assert choose_grid(8, 64, 64, 47, 42)[:2] == (2, 2)         # 120x40, square frames: four
    assert choose_grid(1, 64, 64, 47, 42)[:2] == (1, 1)         # a one-frame sheet
    assert choose_grid(8, 106, 60, 200, 8)[:2] == (4, 1)        # wide and short: a strip of frames
    assert choose_grid(8, 106, 60, 200, 6)[:2] == (1, 1)        # tiles under MIN_TILE_PX: just one


def test_unreadable_sheet_says_so_instead_of_drawing(tmp_path, monkeypatch):
    (tmp_path / "run").mkdir()
    bad = tmp_path / "run" / "sheet.png"
    bad.write_bytes(b"not a png")
    st = TrainState()
    st.apply([])
    from hvtui.core.run.events import Event

    st.apply([Event("sample", {"step": 3, "path": "x.mp4", "prompt": "p", "sheet": str(bad)})])
    assert st.preview == (3, str(bad), "p")

    async def go():
        from textual.app import App

        class Host(App):
            def compose(self):
                yield SamplePreview()

        app = Host()
        async with app.run_test(size=(60, 12)) as pilot:
            preview = app.query_one(SamplePreview)
            preview.show(st.preview)
            assert await wait_for(pilot, lambda: preview.ready)
            await pilot.pause(0.1)
            text = "".join(line.strip("│ ") for line in screen_text(app).splitlines()[1:-1])
            assert "".join(text.split()) == "cannotshowsheet.png:UnidentifiedImageError"   # wrapped in the box
    asyncio.run(go())


def test_sheet_round_trip_keeps_layout_and_tiles():
    frames = clip_frames()
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = write_contact_sheet(frames, Path(d) / "s.png")
        img, layout = read_sheet(path)
    assert layout.frames == (0, 1, 2, 3, 5, 6, 7, 8) and (layout.tile_w, layout.tile_h) == (80, 80)
    assert img.size == layout.size == (2 + 4 * 82, 2 + 2 * 82)
    for i, index in enumerate(layout.frames):   # each tile is its frame (PNG is lossless, no scaling at 80 px)
        tile = np.asarray(img.crop(layout.tile_box(i)))
        assert np.array_equal(tile, frames[index])


@pytest.mark.slow
def test_tui_starts_the_demo_and_previews_its_validation_sample(tmp_path):
    """The real trainer (no fake backend) started from the Train pane on the demo preset: after its validation
    step the preview shows the sample's sheet, read from the file the validator wrote."""
    from hvtui.tui.app import HvtuiApp
    from hvtui.tui.panes.config import ConfigPane
    from hvtui.tui.services import Services
    from hvtui.tui.settings import Settings
    from tests.helpers import tracker_runs as R
    from tests.helpers.tui_fakes import no_gpu

    preset = R.demo_preset(tmp_path / "presets", max_train_steps=4, validation_steps=4, checkpointing_steps=0)

    async def go():
        app = HvtuiApp([preset], 0, services=Services(telemetry=no_gpu), settings=Settings(directory=tmp_path / "cfg"),
                       env={})
        async with app.run_test(size=(100, 30)) as pilot:
            assert await wait_for(pilot, lambda: app.query_one(ConfigPane).preset is not None)
            await pilot.press("s")
            assert await wait_for(pilot, lambda: app.train_state.state in ("finished", "failed"), timeout=300)
            assert app.train_state.state == "finished", list(app.train_state.logs)
            preview = app.query_one(SamplePreview)
            assert await wait_for(pilot, lambda: preview.ready)
            await settle(pilot)
            step, sheet, prompt = app.train_state.preview
            assert step == 4 and Path(sheet).is_file() and prompt == "a red square moves right"
            assert Path(sheet).with_suffix(".mp4").is_file()
            assert preview.display and preview.border_title == "sample 4" and not preview._failed
            width, height = preview.content_size
            drawn = [seg for y in range(height) for seg in preview.render_line(y) if seg.text.strip()]
            assert drawn and all(seg.text.strip() in ("▀", "▄") or set(seg.text) <= {"▀", "▄", " "} for seg in drawn)
            assert any(seg.style and seg.style.color for seg in drawn)
    asyncio.run(go())


def test_train_pane_imports_no_tracker_or_image_library():
    """The preview reads sheets in a worker when one arrives: the Train pane (the first paint under --attach)
    imports neither the trackers nor Pillow / numpy."""
    import subprocess

    code = ("import sys; import hvtui.tui.app, hvtui.tui.panes.train; "
            "bad = [m for m in ('wandb', 'tensorboard', 'accelerate', 'torch', 'PIL', 'numpy', "
            "'hvtui.core.run.trackers') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


# ------------------------------------------------------------ kitty's graphics protocol (where the terminal has it)

def test_kitty_diacritics_follow_kittys_rule():
    """kitty's rowcolumn-diacritics.txt is every Unicode 6.0 mark of class 230 without decomposition, less a few
    that normalisation may fuse; the first 100 are the same under Python's (newer) Unicode database."""
    import unicodedata

    from hvtui.tui.kitty_graphics import DIACRITICS

    fused = {0x0300, 0x0301, 0x0302, 0x0303, 0x0304, 0x0306, 0x0307, 0x0308, 0x0309, 0x030A, 0x030B, 0x030C, 0x030F,
             0x0311, 0x0313, 0x0314, 0x0342, 0x0653, 0x0654}
    derived = [chr(c) for c in range(0x0300, 0x0750) if unicodedata.category(chr(c)) == "Mn"
               and unicodedata.combining(chr(c)) == 230 and not unicodedata.decomposition(chr(c)) and c not in fused]
    assert list(DIACRITICS) == derived[:100] and len(DIACRITICS) == 100


@pytest.mark.parametrize("env,expected", [
    ({"TERM": "xterm-kitty", "COLORTERM": "truecolor"}, True),
    ({"TERM": "xterm-256color", "KITTY_WINDOW_ID": "3", "COLORTERM": "24bit"}, True),
    ({"TERM": "xterm-kitty"}, False),                                               # no truecolor: ids would change
    ({"TERM": "xterm-kitty", "COLORTERM": "truecolor", "TMUX": "/tmp/tmux-0/default,1,0"}, False),   # tmux eats it
    ({"TERM": "screen-256color", "KITTY_WINDOW_ID": "1", "COLORTERM": "truecolor"}, False),
    ({"TERM": "xterm-256color", "COLORTERM": "truecolor"}, False),
    ({"TERM": "xterm-kitty", "COLORTERM": "truecolor", "HVTUI_PREVIEW": "halfblock"}, False),
    ({"TERM": "xterm-ghostty", "HVTUI_PREVIEW": "kitty"}, True),
])
def test_kitty_protocol_only_where_the_terminal_has_it(env, expected):
    from hvtui.tui.kitty_graphics import supported

    assert supported(env) is expected


def parse_kitty(written: str) -> list[tuple[dict, str]]:
    """APC graphics commands in terminal output: [(keys, payload)]."""
    out = []
    for part in written.split("\x1b_G")[1:]:
        body = part.split("\x1b\\", 1)[0]
        keys, _, payload = body.partition(";")
        out.append((dict(kv.split("=", 1) for kv in keys.split(",")), payload))
    return out


def test_kitty_preview_sends_the_picture_once_and_draws_placeholders():
    """In kitty mode the widget writes one transmission (PNG in <= 4096-byte base64 chunks, a virtual placement
    over the box) and fills the box with U+10EEEE cells that name their row and column in the image's colour."""
    import base64
    import io

    from PIL import Image
    from textual.app import App

    from hvtui.tui import kitty_graphics as K

    with pytest.MonkeyPatch.context() as mp:
        import tempfile

        d = Path(tempfile.mkdtemp())
        sheet = write_contact_sheet(clip_frames(), d / "s.png")

        class Host(App):
            env = {"HVTUI_PREVIEW": "kitty"}

            def compose(self):
                yield SamplePreview()

        async def go():
            app = Host()
            async with app.run_test(size=(60, 14)) as pilot:
                written: list[str] = []
                real = app._driver.write
                mp.setattr(app._driver, "write", lambda data: (written.append(data), real(data)))
                preview = app.query_one(SamplePreview)
                assert preview.kitty
                preview.show((5, str(sheet), "p"))
                assert await wait_for(pilot, lambda: preview.ready)
                await pilot.pause(0.2)
                cols, rows = preview.content_size
                commands = parse_kitty("".join(written))
                assert commands, "nothing was transmitted"
                first, *rest = commands
                keys = first[0]
                assert (keys["a"], keys["U"], keys["f"], keys["q"]) == ("T", "1", "100", "2")
                assert (int(keys["c"]), int(keys["r"]), int(keys["i"])) == (cols, rows, preview.kitty_id)
                assert [k.get("m") for k, _ in commands] == ["1"] * (len(commands) - 1) + ["0"]
                assert all(len(p) <= K.CHUNK for _, p in commands)
                png = base64.b64decode("".join(p for _, p in commands))
                img = Image.open(io.BytesIO(png))
                assert img.mode == "RGBA" and img.size == (cols * 10, rows * 20)
                # the composed frames: opaque where drawn, transparent around them
                pixels = np.asarray(img)
                alpha = pixels[..., 3]
                assert alpha.max() == 255 and alpha.min() == 0
                red = (pixels[..., 0] > 150) & (pixels[..., 1] < 90) & (pixels[..., 2] < 90) & (alpha == 255)
                dark = (pixels[..., :3].max(axis=-1) < 60) & (alpha == 255)
                assert red.sum() > 0 and dark.sum() > red.sum()       # the clip: a red square on a dark ground
                text = screen_text(app)
                lines = [line for line in text.splitlines() if K.PLACEHOLDER in line]
                assert len(lines) == rows
                cells = lines[0].split(K.PLACEHOLDER)[1:]
                assert len(cells) == cols
                assert [c[:2] for c in cells[:3]] == [K.DIACRITICS[0] + K.DIACRITICS[i] for i in range(3)]
                last_row = lines[-1].split(K.PLACEHOLDER)[1:]
                assert last_row[0][:1] == K.DIACRITICS[rows - 1]
                strip = preview.render_line(0)
                colour = next(seg.style.color for seg in strip if K.PLACEHOLDER in seg.text)
                r, g, b = colour.triplet
                assert (r << 16) | (g << 8) | b == preview.kitty_id
        asyncio.run(go())
