"""A training run as the faces see it: the session that owns the trainer thread (session.py), commands to it
(control.py), the events it publishes (events.py) on the bus (bus.py), written to OUTPUT_DIR/events.jsonl
(runlog.py) and read back (history.py), the remaining-time estimate (eta.py), experiment trackers (trackers.py,
tracker_backends.py), `hvtui --run` without a UI (headless.py) and the exit codes (exitcodes.py)."""
