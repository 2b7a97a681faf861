"""A fake trainer backend for the headless tests: steps quickly, honours stop, "saves" slowly on request.

Run as a script: python -m tests.helpers.headless_fake PRESET  (prints like `hvtui --run`, exits with its code).
Env: FAKE_STEPS (default 10000), FAKE_STEP_S (0.02), FAKE_SAVE_S (seconds the final save takes).
"""
import os
import sys
import time

from hvtui.core.run import events, exitcodes
from hvtui.core.run.events import Event


def fake_backend(preset, bus, control, options):
    out = preset.resolve_path(preset.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    steps = int(os.environ.get("FAKE_STEPS", "10000"))
    bus.publish(Event("run_started", {"max_steps": steps, "flavour": "t2v-480p", "device": "cpu",
                                      "output_dir": str(out)}))
    bus.publish(events.phase("training", "fake"))
    bus.publish(events.log("a warning from the fake", "warning"))
    step = 0
    while step < steps:
        control.take()
        if control.stop_requested:
            break
        step += 1
        bus.publish(Event("step", {"step": step, "max_steps": steps, "loss": 1.0 / step, "loss_smooth": 1.0,
                                   "lr": 1e-4, "step_time": 0.02, "eta_s": 5.0}))
        (out / "step").write_text(str(step))
        time.sleep(float(os.environ.get("FAKE_STEP_S", "0.02")))
    time.sleep(float(os.environ.get("FAKE_SAVE_S", "0")))
    (out / "saved").write_text(f"{step} {control.stop_reason}")
    code = exitcodes.SIGNAL_EXIT.get(control.stop_reason, 0)
    bus.publish(Event("finished", {"status": "interrupted" if code else "completed", "exit_code": code,
                                   "step": step}))
    return code


if __name__ == "__main__":
    from hvtui.core.run.headless import run_headless

    sys.exit(run_headless(sys.argv[1], backend=fake_backend))
