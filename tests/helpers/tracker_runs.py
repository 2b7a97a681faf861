"""Short runs of the shipped demo preset (presets/demo.toml: the builtin tiny model, the demo clips) with
report_to set, and readers of what the trackers wrote: TensorBoard's own EventAccumulator and W&B's run file."""
from __future__ import annotations

import glob
from pathlib import Path

import tomlkit

from tests.helpers.repo_paths import REPO

DEMO = REPO / "presets" / "demo.toml"


def demo_preset(folder: Path, **overrides) -> Path:
    """presets/demo.toml with its paths pointed into `folder` (the clips stay the shipped ones) and `overrides`;
    8 steps, a checkpoint and a validation sample every 4 unless overridden."""
    doc = tomlkit.parse(DEMO.read_text(encoding="utf-8"))
    settings = {"output_dir": str(folder / "out"), "max_train_steps": 8, "checkpointing_steps": 4,
                "validation_steps": 4, **overrides}
    for key, value in settings.items():
        doc[key] = value
    for table in doc["datasets"]:
        if table.get("instance_data_dir"):
            table["instance_data_dir"] = str(REPO / "presets" / table["instance_data_dir"])
        if table.get("cache_dir"):
            table["cache_dir"] = str(folder / "cache" / table["id"])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "demo.toml"
    path.write_text(tomlkit.dumps(doc), encoding="utf-8")
    return path


def run_in_process(preset_path: Path, **options):
    """(exit code, events) of a Session running the real trainer in this process."""
    from hvtui.core.preset.schema import load_preset
    from hvtui.core.run.bus import Bus
    from hvtui.core.run.history import read_events
    from hvtui.core.run.session import RunOptions, Session

    preset = load_preset(preset_path)
    session = Session(preset, options=RunOptions(**options), bus=Bus())
    session.start()
    session.join()
    return session.exit_code, read_events(preset.resolve_path(preset.output_dir) / "events.jsonl")


def step_losses(events) -> dict[int, float]:
    """The loss of each step as the run published it (a resumed step: its last value)."""
    return {e.get("step"): e.get("loss") for e in events if e.kind == "step"}


def scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of a TensorBoard scalar, read with TensorBoard's own EventAccumulator."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def accumulator(run_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def wandb_run_file(out: Path) -> Path:
    """The one offline run file under out/wandb, once W&B's service has written all of it (see wait_written)."""
    from tests.helpers.wandb_records import wait_written

    files = glob.glob(str(out / "wandb" / "offline-run-*" / "run-*.wandb"))
    assert len(files) == 1, f"expected one offline W&B run in {out / 'wandb'}, found {files}"
    return wait_written(Path(files[0]))
