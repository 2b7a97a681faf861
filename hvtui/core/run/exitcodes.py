"""Exit codes are part of hvtui's interface (README: "Exit codes")."""
OK = 0
UNEXPECTED = 1        # a bug: traceback printed, please report
INVALID = 2           # preset / dataset problems (hvtui check, hvtui buckets, --run before loading)
DOCTOR_FAILED = 3     # an environment or model-asset check failed (hvtui doctor, --run before loading)
TRAINING_FAILED = 4   # repeated OOM, repeated non-finite loss, a load error during training
RESUME_MISMATCH = 5   # --resume would change the run's meaning; rerun with --allow-changed
WRITE_FAILED = 6      # a file could not be written (disk full, read-only, quota, I/O): stopped, last checkpoint kept
SIGHUP = 129
SIGINT = 130
SIGTERM = 143

# a stop requested by a signal ends the run with the shell's code for that signal (Control.stop_reason = name)
SIGNAL_EXIT = {"SIGHUP": SIGHUP, "SIGINT": SIGINT, "SIGTERM": SIGTERM}
