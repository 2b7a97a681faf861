"""Probe the files a walk found (scan.py's second step).

Probing runs in a process pool (one worker per core) when POOL_MIN or more files need it: fork when this
process has no other threads, else a forkserver (the TUI scans from a thread); if the pool can't start or
breaks, the rest is probed in this process.
"""
from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable

from hvtui.core.dataset.probe import probe_chunk
from hvtui.core.dataset.walk import Found

Progress = Callable[[int, int, str], None]
POOL_MIN = 64          # below this, a pool's start-up costs more than it saves
CHUNK = 32             # files per pool task


def _pool_context():
    """fork when this process has no other threads (fastest); else a clean forkserver, when the main module
    can be re-imported there; else None (probe in this process)."""
    import multiprocessing as mp

    methods = mp.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return mp.get_context("fork")
    main = sys.modules.get("__main__")
    main_file = getattr(main, "__file__", None)
    if getattr(main, "__spec__", None) is None and main_file and not os.path.exists(main_file):
        return None             # e.g. `python - < script`: a forkserver child could not import __main__
    if "forkserver" not in methods:
        return None
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["hvtui.core.dataset.probe", "av"])   # imported once, in the server
    return ctx


def workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def probe_files(todo: list[Found], progress: Progress | None, done: int, total: int) -> None:
    """Fill `probe` of each Found, in a process pool when it pays. A pool that breaks (a worker killed, a
    start method that cannot run here) costs nothing but speed: what is left is probed in this process."""
    items = [(i, f.path, f.kind) for i, f in enumerate(todo)]
    n_workers = min(workers(), 8)
    ctx = _pool_context() if len(items) >= POOL_MIN and n_workers >= 2 else None
    if ctx is not None:
        from concurrent.futures import ProcessPoolExecutor, as_completed

        import av  # noqa: F401  -- imported once here, inherited by forked workers (70 ms each otherwise)

        chunks = [items[k:k + CHUNK] for k in range(0, len(items), CHUNK)]
        try:
            with ProcessPoolExecutor(n_workers, mp_context=ctx) as pool:
                futures = [pool.submit(probe_chunk, c) for c in chunks]
                for fut in as_completed(futures):
                    results = fut.result()
                    for i, probe in results:
                        todo[i].probe = probe
                    done += len(results)
                    if progress:
                        progress(done, total, todo[results[-1][0]].relpath)
        except Exception:
            pass
    tick = max(1, total // 200)
    last = done
    for i, path, kind in items:
        if todo[i].probe is not None:
            continue
        todo[i].probe = probe_chunk([(i, path, kind)])[0][1]
        done += 1
        if progress and (done - last >= tick or done == total):
            progress(done, total, todo[i].relpath)
            last = done

