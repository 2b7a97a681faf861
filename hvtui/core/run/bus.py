"""The event bus: the trainer publishes, views pull. Publishing never blocks on a reader.

`publish` appends to a bounded ring under a lock and updates a latest-value snapshot per kind (and per
phase for progress). Readers keep a cursor (`seq`) and call `since(seq)`; a reader that falls behind
the ring loses the oldest events, never the trainer's time. Sinks (the JSONL writer, the console line)
are called in the publisher's thread and must be quick (a buffered write, a flush).
"""
from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from hvtui.core.run.events import Event

Sink = Callable[[Event], None]


class Bus:
    def __init__(self, capacity: int = 20000):
        self._lock = threading.Lock()
        self._ring: deque[tuple[int, Event]] = deque(maxlen=capacity)
        self._seq = 0
        self._latest: dict[str, Event] = {}
        self._sinks: list[Sink] = []

    def add_sink(self, sink: Sink) -> None:
        with self._lock:
            self._sinks.append(sink)

    def remove_sink(self, sink: Sink) -> None:
        with self._lock:
            if sink in self._sinks:
                self._sinks.remove(sink)

    def publish(self, event: Event) -> None:
        with self._lock:
            self._seq += 1
            self._ring.append((self._seq, event))
            self._latest[event.kind] = event
            if event.kind == "progress":
                self._latest[f"progress:{event.get('phase')}"] = event
            sinks = list(self._sinks)
        for sink in sinks:
            try:
                sink(event)
            except Exception:  # a broken view must not stop training
                pass

    def since(self, seq: int) -> tuple[list[Event], int]:
        """Events published after `seq`, and the new cursor."""
        with self._lock:
            events = [e for s, e in self._ring if s > seq]
            return events, self._seq

    def latest(self, kind: str) -> Event | None:
        with self._lock:
            return self._latest.get(kind)

    def snapshot(self) -> dict[str, Event]:
        with self._lock:
            return dict(self._latest)

    @property
    def seq(self) -> int:
        with self._lock:
            return self._seq
