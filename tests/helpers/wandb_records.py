"""Read an offline W&B run file (`run-ID.wandb`) the way `wandb sync` does: W&B's LevelDB-style log (a 7-byte
':W&B' header, then 32 KiB blocks of records, each with a 7-byte header: CRC32, length, type FULL/FIRST/MIDDLE/
LAST), each record one `wandb_internal_pb2.Record` protobuf (wandb's own message class). wandb 0.31 keeps its
reader in the Go core, so the tests parse the file themselves with wandb's protobuf."""
from __future__ import annotations

import json
import struct
import time
import zlib
from pathlib import Path

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list:
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    out, pos, buf = [], HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:          # block trailer padding
            pos += left
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if length == 0 and kind == 0:
            pos += left
            continue
        chunk = data[pos + HEADER:pos + HEADER + length]
        # the CRC covers the type byte and the payload (LevelDB's log format, as W&B writes it)
        assert zlib.crc32(bytes([kind]) + chunk) & 0xFFFFFFFF == crc, f"bad record checksum at {pos} in {path}"
        pos += HEADER + length
        buf = chunk if kind in (FULL, FIRST) else buf + chunk
        if kind in (FULL, LAST):
            r = pb.Record()
            r.ParseFromString(buf)
            out.append(r)
    return out


def wait_written(path: Path, timeout: float = 60.0) -> Path:
    """`path` once its exit record is on disk. run.finish() returns when it has told W&B's service (a separate
    process) that the run is done; the service writes the file's last blocks a few ms later (measured: the
    suite read a file 13 ms too early and found no history rows). Records are appended in order, so a file that
    holds the exit record holds everything logged before it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if any(r.WhichOneof("record_type") == "exit" for r in records(path)):
                return path
        except AssertionError:   # a record still being written: its checksum does not match yet
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{path}: W&B's service did not finish writing it within {timeout:.0f} s")
        time.sleep(0.05)


def history(path: Path) -> list[dict]:
    """The logged rows: {key: value} with values decoded from JSON (nested keys joined with '/')."""
    rows = []
    for r in records(path):
        if r.WhichOneof("record_type") == "history":
            rows.append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.history.item})
    return rows


def config(path: Path) -> dict:
    """The run's config: what wandb.init got (in the run record) and later config updates."""
    out = {}
    for r in records(path):
        kind = r.WhichOneof("record_type")
        if kind in ("run", "config"):
            for u in (r.run.config if kind == "run" else r.config).update:
                out[u.key or "/".join(u.nested_key)] = json.loads(u.value_json)
    return out


def exit_code(path: Path) -> int | None:
    for r in records(path):
        if r.WhichOneof("record_type") == "exit":
            return r.exit.exit_code
    return None
