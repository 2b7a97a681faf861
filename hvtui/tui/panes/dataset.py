"""Dataset pane: the bucket table, the clips of the selected bucket, discarded files grouped by reason.
The scan runs in a worker thread (it probes every clip) and reports progress through messages. Messages are
readable whole: the scan's errors and warnings and the discard reasons wrap in a scrollable panel, and the
selected clip's path and caption are shown in full under the clip table."""
from __future__ import annotations

import time

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import DataTable, Static

from hvtui.tui import keymap
from hvtui.tui.panes.pane import Pane
from hvtui.tui.panes.train import bar
from hvtui.tui.services import guarded


class DatasetPane(Vertical, Pane):
    BINDINGS = keymap.bindings(keymap.DATASET_KEYS)
    DEFAULT_CSS = """
    DatasetPane #dataset-head { height: 2; padding: 0 1; text-wrap: nowrap; text-overflow: ellipsis; }
    DatasetPane #dataset-top { height: 1fr; }
    DatasetPane #bucket-table { width: 1fr; height: 100%; border: round $panel-lighten-2; }
    DatasetPane #discards-scroll { width: 1fr; height: 100%; border: round $panel-lighten-2; padding: 0 1; }
    DatasetPane #clip-table { height: 1fr; border: round $panel-lighten-2; }
    DatasetPane #clip-info { height: auto; max-height: 4; padding: 0 1; }
    """

    class Progress(Message):
        def __init__(self, done: int, total: int, what: str):
            super().__init__()
            self.done, self.total, self.what = done, total, what

    class Done(Message):
        def __init__(self, report=None, error: str = "", elapsed: float = 0.0):
            super().__init__()
            self.report, self.error, self.elapsed = report, error, elapsed

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.report = None
        self._bucket = None       # the bucket whose clips are listed
        self.stale = True
        self.scanning = False
        self.preset = None

    def compose(self) -> ComposeResult:
        yield Static(id="dataset-head")
        with Horizontal(id="dataset-top"):
            yield DataTable(id="bucket-table", cursor_type="row", zebra_stripes=True)
            with VerticalScroll(id="discards-scroll"):
                yield Static(id="discards")
        yield DataTable(id="clip-table", cursor_type="row")
        yield Static(id="clip-info")

    def on_mount(self) -> None:
        buckets = self.query_one("#bucket-table", DataTable)
        buckets.border_title = "buckets"
        buckets.add_columns("bucket", "clips", "samples/epoch", "share")
        clips = self.query_one("#clip-table", DataTable)
        clips.border_title = "clips in bucket"
        clips.add_columns("clip", "source", "frames", "fps", "caption")
        self.query_one("#discards-scroll").border_title = "problems & discarded"
        self._head("not scanned yet")

    def _head(self, line1: str, line2: str = "") -> None:
        key = keymap.key_for("dataset.rescan", getattr(self.app, "keymap", None))
        self.query_one("#dataset-head", Static).update(
            Text(line1 + "\n", no_wrap=True, overflow="ellipsis") + Text(line2 or f"{key}: rescan", style="dim"))

    def set_preset(self, preset) -> None:
        self.preset = preset
        self.stale = True

    focus_target = "#bucket-table"

    def shown(self) -> None:
        self.scan_if_stale()

    def scan_if_stale(self) -> None:
        if self.stale and not self.scanning:
            self.rescan()

    def action_rescan(self) -> None:
        self.rescan(use_cache=False)

    def rescan(self, use_cache: bool = True) -> None:
        if self.preset is None:
            self._head("no valid preset to scan", "fix the preset in the Config pane first")
            return
        if self.scanning:
            return
        self.scanning, self.stale = True, False
        self._head("scanning…")
        self._scan(self.preset, use_cache)

    @work(thread=True, exclusive=True, group="dataset-scan")
    def _scan(self, preset, use_cache: bool) -> None:
        t0 = time.perf_counter()

        def progress(done: int, total: int, what: str = "") -> None:
            self.post_message(self.Progress(done, total, what))   # thread-safe, never waits on the UI
        report, error = guarded(lambda: self.host.services.scan_preset(preset, progress=progress,
                                                                      use_cache=use_cache), "scan")
        self.post_message(self.Done(report, error, time.perf_counter() - t0))

    @on(Progress)
    def _progress(self, m: Progress) -> None:
        if self.scanning and m.total:
            self._head(f"scanning {m.done}/{m.total} {bar(m.done / m.total, 20)}", m.what)

    @on(Done)
    def _done(self, m: Done) -> None:
        self.scanning = False
        if m.error:
            self._head(m.error)
            return
        self.show_report(m.report, m.elapsed)

    def show_report(self, report, elapsed: float = 0.0) -> None:
        self.report = report
        buckets = self.query_one("#bucket-table", DataTable)
        buckets.clear()
        total = report.samples_per_epoch or 1
        for b in report.buckets:
            buckets.add_row(*plain(b.key, len(b.samples), b.samples_per_epoch,
                                   f"{100 * b.samples_per_epoch / total:.0f}%"), key=b.key)
        discards = Text()
        for e in report.errors:
            discards.append(f"✗ {e}\n", style="bold red")
        for w in report.warnings:
            discards.append(f"! {w}\n", style="yellow")
        for category, items in report.discarded.items():
            title = _category_title(category)
            discards.append(f"{title} ({len(items)})\n", style="bold")
            for d in items[:20]:
                discards.append(f"  {d}\n")
            if len(items) > 20:
                discards.append(f"  … {len(items) - 20} more (hvtui buckets PRESET lists every one)\n", style="dim")
        discards.rstrip()
        self.query_one("#discards", Static).update(discards if discards.plain else Text("none", style="dim"))
        line1 = (f"{report.clips_kept} clips kept, {report.clips_discarded} discarded, {len(report.buckets)} "
                 f"buckets, {report.samples_per_epoch} samples/epoch")
        counts = [f"{n} {what}{'s' * (n != 1)}" for n, what in ((len(report.errors), "error"),
                                                                  (len(report.warnings), "warning")) if n]
        self._head(line1, f"{', '.join(counts)}: in full on the right" if counts else "")
        self._show_clips(report.buckets[0].key if report.buckets else None)

    @on(DataTable.RowHighlighted, "#bucket-table")
    def _bucket_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_clips(event.row_key.value if event.row_key else None)

    def _show_clips(self, key: str | None) -> None:
        clips = self.query_one("#clip-table", DataTable)
        clips.clear()
        bucket = self.report.bucket(key) if self.report and key else None
        clips.border_title = f"clips in {key}" if key else "clips in bucket"
        self._bucket = bucket
        self._show_clip(None)
        if bucket is None:
            return
        for s in bucket.samples:
            source = f"{s.source_width}x{s.source_height}" if s.source_width else "?"
            fps = f"{s.fps_in:g}→{s.fps_out:g}" if s.fps_in != s.fps_out else f"{s.fps_out:g}"
            caption = s.captions[0] if s.captions else ""
            clips.add_row(*plain(s.relpath or s.path.name, source, f"{s.frames}/{s.source_frames or '?'}", fps,
                                 caption[:60]), key=s.id)
        if bucket.samples:
            self._show_clip(bucket.samples[0].id)

    @on(DataTable.RowHighlighted, "#clip-table")
    def _clip_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_clip(event.row_key.value if event.row_key else None)

    def _show_clip(self, sample_id: str | None) -> None:
        """The selected clip in full: the table cuts long names and captions."""
        bucket = self._bucket
        sample = next((s for s in bucket.samples if s.id == sample_id), None) if bucket and sample_id else None
        t = Text()
        if sample is not None:
            t.append(str(sample.path), style="bold")
            for caption in sample.captions or ["(no caption)"]:
                t.append("\n" + caption)
        self.query_one("#clip-info", Static).update(t)


def plain(*values) -> list[Text]:
    """DataTable reads str cells as markup; file names and captions are not markup."""
    return [Text(str(v)) for v in values]


def _category_title(category: str) -> str:
    from hvtui.core.dataset.model import CATEGORIES  # here: the dataset package loads the scanner

    return CATEGORIES.get(category, category)
