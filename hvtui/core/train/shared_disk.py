"""Several hosts share one run's folders: caching is split across processes and read back by all, and a
checkpoint collects every process's RNG state. That needs output_dir and the cache folders on a disk every
host mounts; checked once at start-up (seconds), not discovered after an hour of caching."""
from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path

MARK = ".hvtui-shared-check-"


def unseen_folders(coll, folders: list[Path]) -> list[str]:
    """Rank 0 writes a marker into each folder; every process looks for them. Returns one line per process
    and folder it does not see rank 0's marker in (or rank 0 could not write); [] with one process. Every
    process must call this."""
    if not coll.distributed:
        return []
    token = coll.broadcast_object(secrets.token_hex(8) if coll.rank == 0 else None)
    marks = [Path(f) / f"{MARK}{token}" for f in dict.fromkeys(folders)]
    problems = []
    if coll.rank == 0:
        for m in marks:
            try:
                m.parent.mkdir(parents=True, exist_ok=True)
                m.write_text(socket.gethostname())
            except OSError as e:   # reported like the rest, after the barrier the others wait in
                problems.append(f"cannot write to {m.parent} ({e.strerror or e})")
    coll.barrier()
    if not problems:
        problems = [f"does not see {m.parent}" for m in marks if not m.is_file()]
    seen = coll.gather_objects((socket.gethostname(), problems))
    coll.barrier()   # everyone has looked: the markers can go
    if coll.rank == 0:
        for m in marks:
            try:
                os.unlink(m)
            except OSError:
                pass
    return [f"process {rank} on {host} {what}" for rank, (host, lines) in enumerate(seen) for what in lines]
