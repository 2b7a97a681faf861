"""Reading a run's events.jsonl whole (tests, benches, the trackers' checks)."""
import json


def test_read_events_is_the_followers_whole_file_without_headers(tmp_path):
    """read_events (tests, benches, the trackers' checks) reads through the one follower: every slice, the
    header lines (a run and its resume) left out, a half-written last line not yet."""
    from hvtui.core.run.history import read_events

    path = tmp_path / "events.jsonl"
    header = '{"schema": 1, "hvtui_events": true, "pid": 42, "time": 1.0}\n'
    lines = [json.dumps({"kind": "log", "time": float(i), "level": "info", "message": f"m{i}"}) for i in range(200)]
    path.write_text(header + "\n".join(lines[:100]) + "\n" + header + "\n".join(lines[100:]) + '\n{"kind": "st')
    got = read_events(path, max_read=257)
    assert [e.get("message") for e in got] == [f"m{i}" for i in range(200)] and {e.kind for e in got} == {"log"}
    assert read_events(tmp_path / "missing.jsonl") == []
