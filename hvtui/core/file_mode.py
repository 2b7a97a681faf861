"""Files hvtui writes get the mode the user's umask gives (0644 under the usual 022), so others on a shared
box can read a LoRA. Writers that go through a private temp file do not: mkstemp and safetensors' own temp
file (Rust's tempfile crate) create 0600, and a rename keeps that. `follow_umask` sets it right before the
rename. The umask is read from /proc (os.umask can only be read by setting it, which races with other threads
creating files)."""
from __future__ import annotations

import os
from pathlib import Path


def umask() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)   # no /proc (not Linux): the racy way, once
    os.umask(old)
    return old


def follow_umask(path: Path | str, directory: bool = False) -> None:
    """chmod `path` to what creating it would have given (0666 or 0777, less the umask)."""
    try:
        os.chmod(path, (0o777 if directory else 0o666) & ~umask())
    except OSError:
        pass   # not ours to change (another owner): leave it
