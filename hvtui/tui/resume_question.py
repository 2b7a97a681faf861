"""What the start key asks when the preset's output_dir already holds a run: what that run is ("finished at
step 120 of 120"), the checkpoint a resume would continue from, and what a fresh start does with the earlier
run. No widgets here, so the wording is testable on its own."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from hvtui.tui.train_state import TrainState


@dataclass
class Question:
    title: str
    message: str
    choices: list[tuple[str, str, object]]     # (key, label, value): a checkpoint path, "" (fresh), None


def short_path(path: Path) -> str:
    """A path as the user would type it: relative to the working folder when it lies below it."""
    try:
        return os.path.relpath(path) if Path(path).resolve().is_relative_to(Path.cwd().resolve()) else str(path)
    except (OSError, ValueError):
        return str(path)


def describe_run(st: TrainState | None) -> str:
    """'that finished at step 120 of 120', ... or '' when nothing is known about the run."""
    if st is None or not (st.started or st.steps or st.finished):
        return ""
    done = st.finished or {}
    step = done.get("step") if done.get("step") is not None else st.step.get("step", st.steps[-1] if st.steps else None)
    total = st.step.get("max_steps") or st.started.get("max_steps")
    at = f" at step {step}" + (f" of {total}" if total else "") if step is not None else ""
    if st.state == "finished":
        return f"that finished{at}"
    if st.state == "failed":
        why = (st.error or {}).get("message", "")
        return f"that failed{at}" + (f": {why}" if why else "")
    if st.state == "interrupted":
        return f"whose process ended{at} without a final event (killed?)"
    if st.state in ("stopped", "stopping"):
        return f"that was stopped{at}"
    return f"that is {st.state}{at} in another process" if st.active else f"that stopped{at}"


def resume_question(output_dir: Path, checkpoint_path: Path, checkpoint_step: int, max_train_steps: int,
                    shown: TrainState | None) -> Question:
    where = short_path(output_dir)
    what = describe_run(shown)
    lines = [f"{where} holds an earlier run of this preset" + (f" {what}." if what else ".")]
    left = max_train_steps - checkpoint_step
    resume = []
    if left > 0:
        lines.append(f"Resume continues from its newest complete checkpoint, {checkpoint_path.name} (step "
                     f"{checkpoint_step}), and trains {left} more step{'s' * (left != 1)} to {max_train_steps}.")
        resume = [("r", f"Resume from step {checkpoint_step}", str(checkpoint_path))]
    else:
        lines.append(f"Its newest checkpoint, {checkpoint_path.name}, is at step {checkpoint_step}: with "
                     f"max_train_steps = {max_train_steps} a resume trains nothing more. To train longer, raise "
                     "max_train_steps in the Config pane, save, and start again.")
    lines.append(f"Start fresh moves the earlier run (checkpoints, LoRA, samples, log) to {where}/previous-TIME/; "
                 "nothing is deleted.")
    return Question("Resume the earlier run?" if resume else "Start a new run?", "\n".join(lines),
                    resume + [("f", "Start fresh", ""), ("n", "Cancel", None)])
