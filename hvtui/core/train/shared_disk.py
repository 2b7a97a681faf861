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
    and folder it does not see rank 0's marker in, or cannot look into; [] with one process. A folder rank 0
    cannot write (a read-only, already filled cache) is not checked: nothing will be written there. Every
    process must call this; no error on one process stops the others from reaching the collectives."""
    if not coll.distributed:
        return []
    folders = [Path(f) for f in dict.fromkeys(folders)]
    shared = None
    if coll.rank == 0:
        token, written = secrets.token_hex(8), []
        for i, folder in enumerate(folders):
            try:
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f"{MARK}{token}").write_text(socket.gethostname())
                written.append(i)
            except OSError:
                pass
        shared = (token, written)
    token, written = coll.broadcast_object(shared)
    problems = []
    for i in written:
        folder = folders[i]
        try:
            if not (folder / f"{MARK}{token}").is_file():
                problems.append(f"does not see {folder}")
        except OSError as e:   # a stale NFS handle, EIO: reported, not raised past the gather below
            problems.append(f"cannot look into {folder} ({e.strerror or e})")
    seen = coll.gather_objects((socket.gethostname(), problems))
    coll.barrier()   # everyone has looked: the markers can go
    if coll.rank == 0:
        for i in written:
            try:
                os.unlink(folders[i] / f"{MARK}{token}")
            except OSError:
                pass
    return [f"process {rank} on {host} {what}" for rank, (host, lines) in enumerate(seen) for what in lines]
