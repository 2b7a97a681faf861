"""What a resume does to the learning-rate schedule. The schedule is rebuilt from the preset on resume (a
LambdaLR's state holds only its position), so a changed max_train_steps, scheduler, warmup or peak LR
reshapes it: raising max_train_steps on a cosine run moved the LR from 0 to 1.54e-3 at the resumed step.
`changes` says so in numbers, and the trainer treats those lines like a changed batch size (refused without
--allow-changed).
"""
from __future__ import annotations

LR_KEYS = ("learning_rate", "lr_scheduler", "lr_warmup_steps", "max_train_steps")


def lr_at(settings: dict, step: int) -> float:
    """The learning rate the schedule of `settings` (run_summary keys) gives at optimizer step `step`."""
    import torch

    from hvtui.core.train.optim import build_scheduler

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=float(settings["learning_rate"]))
    sched = build_scheduler(settings["lr_scheduler"], opt, int(settings["lr_warmup_steps"]),
                            int(settings["max_train_steps"]))
    return float(settings["learning_rate"]) * float(sched.lr_lambdas[0](step))


def changes(saved: dict, current: dict, step: int) -> list[str]:
    """Lines for the schedule a resume at `step` would change (none when the LR there and at the end stay the
    same): max_train_steps when it reshapes the schedule, then the LR at the resumed step, old -> new."""
    if any(k not in saved or k not in current for k in LR_KEYS):
        return []   # a checkpoint from before these were recorded
    if all(saved[k] == current[k] for k in LR_KEYS):
        return []
    try:
        before = [lr_at(saved, s) for s in (step, int(saved["max_train_steps"]))]
        after = [lr_at(current, s) for s in (step, int(current["max_train_steps"]))]
    except (ValueError, KeyError, TypeError):   # a scheduler name this version cannot build: compare_summary says it
        return []
    out = []
    if saved["max_train_steps"] != current["max_train_steps"] and (
            lr_at({**saved, "max_train_steps": current["max_train_steps"]}, step) != before[0]):
        out.append(f"max_train_steps: {saved['max_train_steps']} -> {current['max_train_steps']} reshapes the "
                   f"{current['lr_scheduler']} schedule (it decays over max_train_steps)")
    if before[0] != after[0]:
        out.append(f"learning rate at the resumed step {step}: {before[0]:.3g} -> {after[0]:.3g}"
                   f" (at the last step: {before[1]:.3g} -> {after[1]:.3g})")
    return out
