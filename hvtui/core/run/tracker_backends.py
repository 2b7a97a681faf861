"""The two trackers behind trackers.TrackerSink, each a thin layer over accelerate's tracker class
(`accelerate.tracking.TensorBoardTracker`, `WandBTracker`) that adds what accelerate leaves out: where the
run logs, validation media, W&B's offline fallback. Runs in the sink's worker thread only.

accelerate's trackers check "main process" through its PartialState; hvtui adds the sink on rank 0 only and
starts the trackers after the trainer's Accelerator exists (at run_started), so the check is turned off per
instance (`main_process_only = False`) instead of consulting a state a test or a second run may have reset.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from hvtui.core.formatting import first_line

if TYPE_CHECKING:
    from accelerate.tracking import TensorBoardTracker, WandBTracker

GIF_MAX_SIDE = 256          # TensorBoard shows validation videos as animated GIFs this size at most
WANDB_OFFLINE_MODES = ("offline", "dryrun")


class TrackerUnavailable(Exception):
    """A tracker that cannot log here (the message says why and what to do)."""


def run_config(preset, started: dict) -> dict:
    """The run's config for the trackers: every preset key (datasets included) plus how this run started."""
    values = {f.name: getattr(preset, f.name) for f in dataclasses.fields(preset) if f.name != "source"}
    values["datasets"] = [dataclasses.asdict(d) for d in preset.datasets]
    values["hvtui"] = {k: started.get(k) for k in ("preset", "device", "num_processes", "global_batch",
                                                  "mixed_precision", "resume_from") if started.get(k) is not None}
    return json.loads(json.dumps(values, default=str))


def flat_config(values: dict, prefix: str = "") -> dict:
    """Nested config -> {"a.b": scalar}: TensorBoard's hparams take bool / int / float / str only."""
    out = {}
    for k, v in values.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_config(v, key + "."))
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            for i, x in enumerate(v):
                out.update(flat_config(x, f"{key}.{i}."))
        elif isinstance(v, list):
            out[key] = ", ".join(map(str, v))
        elif v is None:
            out[key] = ""
        else:
            out[key] = v
    return out


def _ensure_accelerate_state() -> None:
    """accelerate's tracker methods log through its logger, which needs a PartialState. The trainer has one
    by run_started; a sink used alone (tests, bench) in a single process gets a plain local one."""
    from accelerate.state import PartialState

    if not PartialState._shared_state and os.environ.get("WORLD_SIZE", "1") == "1":
        PartialState(cpu=True)


def read_video(path: str | Path, max_side: int = GIF_MAX_SIDE):
    """The mp4's frames as PIL images no larger than max_side, and its frame rate."""
    import av
    from PIL import Image

    frames, fps = [], 24.0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if stream.average_rate:
            fps = float(stream.average_rate)
        for frame in container.decode(video=0):
            img = frame.to_image()
            scale = min(1.0, max_side / max(img.size))
            if scale < 1.0:
                img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                                 Image.Resampling.LANCZOS)
            frames.append(img)
    return frames, fps


def gif_bytes(frames, fps: float) -> bytes:
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=max(20, round(1000 / fps)),
                   loop=0)
    return buf.getvalue()


def _sample_key(d: dict) -> str:
    return f"validation/{int(d.get('index') or 0)}"


class TensorBoard:
    """OUTPUT_DIR/tensorboard/RUN_NAME; `tensorboard --logdir OUTPUT_DIR/tensorboard` shows it."""
    name = "tensorboard"
    fell_back = False

    def __init__(self, preset, output_dir: Path, run_name: str):
        self.preset = preset
        self.root = Path(output_dir) / "tensorboard"
        self.run_name = run_name.replace(os.sep, "_")
        self.tracker: TensorBoardTracker | None = None     # set by start()

    @property
    def where(self) -> Path:
        return self.root / self.run_name

    def _started(self) -> TensorBoardTracker:
        if self.tracker is None:
            raise RuntimeError("tensorboard: not started")
        return self.tracker

    def start(self, config: dict, resume_step: int | None = None) -> tuple[str, str, str]:
        _ensure_accelerate_state()
        from accelerate.tracking import TensorBoardTracker

        # a resumed run continues the same folder: purge what was logged after its checkpoint, so each step
        # has one point (SummaryWriter's purge_step)
        kwargs = {"purge_step": int(resume_step) + 1} if resume_step is not None else {}
        t = TensorBoardTracker(self.run_name, str(self.root), **kwargs)
        t.main_process_only = False
        t.start()
        self.tracker = t
        t.store_init_configuration(flat_config(config))
        if self.preset.source is not None and Path(self.preset.source).is_file():
            text = Path(self.preset.source).read_text(encoding="utf-8", errors="replace")
            t.log({"preset": "```\n" + text + "\n```"}, step=int(resume_step or 0))
        return "logging", str(self.where), f"logging to {self.where} (view: tensorboard --logdir {self.root})"

    def log(self, values: dict, step: int) -> None:
        self._started().log(values, step=step)

    def log_sample(self, d: dict) -> None:
        """The contact sheet as an image and the video as an animated GIF (what SummaryWriter.add_video
        writes, encoded with Pillow instead of moviepy)."""
        import numpy as np
        from tensorboard.compat.proto.summary_pb2 import Summary

        tracker = self._started()
        step, key = int(d.get("step") or 0), _sample_key(d)
        if d.get("sheet") and Path(d["sheet"]).is_file():
            from hvtui.core.samples.contact_sheet import read_sheet

            sheet, _ = read_sheet(d["sheet"])
            tracker.log_images({f"{key}/sheet": np.asarray(sheet)[None]}, step=step, dataformats="NHWC")
        frames, fps = read_video(d["path"])
        if frames:
            image = Summary.Image(height=frames[0].height, width=frames[0].width, colorspace=3,
                                  encoded_image_string=gif_bytes(frames, fps))
            writer = tracker.tracker
            writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=f"{key}/video", image=image)]),
                                                  step)
        if d.get("prompt"):
            tracker.log({f"{key}/prompt": str(d["prompt"])}, step=step)
        tracker.tracker.flush()

    def finish(self, exit_code) -> tuple[str, str]:
        self._started().finish()
        return str(self.where), ""


def wandb_logged_in(wandb) -> bool:
    """Credentials without asking: wandb.login(prompt=False) never prompts (a prompt would hang a headless run
    and break the TUI's terminal); older wandb without `prompt` only counts WANDB_API_KEY."""
    try:
        return bool(wandb.login(prompt=False, verify=False))
    except Exception:   # TypeError: an older wandb; else a broken netrc or settings file
        return bool(os.environ.get("WANDB_API_KEY"))


class WandB:
    """A W&B run in project tracker_project_name, named tracker_run_name; its files under OUTPUT_DIR/wandb/.
    No login, or no network: logs offline with a warning (`wandb sync DIR` uploads it later)."""
    name = "wandb"

    def __init__(self, preset, output_dir: Path, run_name: str):
        self.preset, self.output_dir, self.run_name = preset, Path(output_dir), run_name
        self.tracker: WandBTracker | None = None     # set by start()
        self.mode = "online"
        self.fell_back = False

    def _started(self) -> WandBTracker:
        if self.tracker is None:
            raise RuntimeError("wandb: not started")
        return self.tracker

    def _init(self, config: dict, mode: str) -> WandBTracker:
        import wandb
        from accelerate.tracking import WandBTracker

        settings = wandb.Settings(console="off", silent=True)
        t = WandBTracker(self.preset.tracker_project_name or "hvtui", name=self.run_name, dir=str(self.output_dir),
                         mode=mode, config=config, settings=settings)
        t.main_process_only = False
        t.start()
        return t

    def start(self, config: dict, resume_step: int | None = None) -> tuple[str, str, str]:
        _ensure_accelerate_state()
        import wandb

        try:   # hvtui's console and TUI own the terminal: no banners, no login chatter, no stdout capture
            wandb.setup(wandb.Settings(silent=True, console="off"))
        except Exception:
            pass
        env_mode = os.environ.get("WANDB_MODE", "").strip().lower()
        if env_mode == "disabled":
            raise TrackerUnavailable("WANDB_MODE=disabled")
        self.mode = "offline" if env_mode in WANDB_OFFLINE_MODES else "online"
        why = ""
        if self.mode == "online" and not wandb_logged_in(wandb):
            self.mode, self.fell_back = "offline", True
            why = "no W&B login (run `wandb login` or set WANDB_API_KEY)"
        self.output_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.tracker = self._init(config, self.mode)
        except Exception as e:
            if self.mode == "offline":
                raise
            self.mode, self.fell_back = "offline", True
            why = f"W&B unreachable ({type(e).__name__}: {first_line(e)})"
            self.tracker = self._init(config, self.mode)
        run = self._started().run
        if self.mode == "offline":
            folder = Path(run.dir).parent   # OUTPUT_DIR/wandb/offline-run-DATE-ID (run.dir is its files/)
            note = f"offline run in {folder} (upload it later: wandb sync {folder})"
            return "offline", str(folder), (f"{why}; " if why else "") + note
        url = getattr(run, "url", None) or ""
        return "logging", url or str(run.dir), f"logging to {url or run.dir}"

    def log(self, values: dict, step: int) -> None:
        self._started().log(values, step=step)

    def log_sample(self, d: dict) -> None:
        import wandb

        step, key, prompt = int(d.get("step") or 0), _sample_key(d), str(d.get("prompt") or "")
        values: dict[str, wandb.Video | wandb.Image] = {
            f"{key}/video": wandb.Video(str(d["path"]), caption=prompt, format="mp4")}
        if d.get("sheet") and Path(d["sheet"]).is_file():
            values[f"{key}/sheet"] = wandb.Image(str(d["sheet"]), caption=prompt)
        self._started().log(values, step=step)

    def finish(self, exit_code) -> tuple[str, str]:
        run = self._started().run
        folder = str(Path(run.dir).parent)
        run.finish(exit_code=int(exit_code) if exit_code else None)
        if self.mode == "offline":
            return folder, f"offline run saved in {folder}; upload it with: wandb sync {folder}"
        return getattr(run, "url", "") or folder, ""


BACKENDS: dict[str, type[TensorBoard] | type[WandB]] = {"tensorboard": TensorBoard, "wandb": WandB}
