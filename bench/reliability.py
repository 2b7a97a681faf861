"""The reliability matrix (issue 18), rerunnable: how hvtui's trainer behaves under faults, counted.

    python bench/reliability.py [--kills 20] [--signals 3] [--pairs 6] [--fuzz 2000] [--no-disk] [--no-damage]
                                [--out bench/results/reliability-DATE.json]

Every run is the builtin tiny model on the CPU (tests/helpers/loop_presets.py: 80x80x9 clips, batch 1, 12 steps,
a checkpoint every 2). Sections:
- kills: `hvtui --run` SIGKILLed at a uniformly random moment (loading, caching, training, checkpoint
  writes), then `--resume auto` (in process): resumed from the newest complete checkpoint, every step's
  loss identical (to 1e-6) to an uninterrupted run's, the run finished.
- signals: SIGINT / SIGTERM / SIGHUP at a random step: the signal's exit code, a checkpoint at the stop step.
- disk (root: a tmpfs; skipped otherwise): a disk that fills mid-training, an output_dir that turns
  read-only mid-run, a cache disk without room while caching, SIGTERM with a full disk, a disk too full for
  the next save: named (path + free space), exit 6 (143 for the signal), last good checkpoint intact
  (manifest verified), the resume loss-identical.
- damage: each kind of damaged cache entry and checkpoint file: named, rebuilt or passed over, exit code.
- pairs: two identical runs started 0-1 s apart: exactly one trains, the other exits 2 naming the holder.
- fuzz: mutated presets through check / buckets / load (tests/helpers/preset_fuzz.py): tracebacks.
Prints one summary line per section and writes the details as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))   # hvtui and its tests.helpers, when run as a script

from tests.helpers import loop_presets as L  # noqa: E402
from tests.helpers import preset_fuzz  # noqa: E402
from tests.helpers import reliability_kit as K  # noqa: E402

STEPS = 12


def preset(root: Path, clips, name: str, out: Path | None = None, **kw) -> Path:
    data, cache = clips
    kw = {"max_train_steps": STEPS, "checkpointing_steps": 2, "checkpoints_total_limit": 2, **kw}
    return L.write_preset(root / f"{name}.toml", data, cache, out or root / name, **kw)


def identical(events, reference, start: int) -> bool:
    got = L.losses(events)
    return sorted(got) == list(range(start + 1, STEPS + 1)) and all(
        abs(v - reference[k]) <= 1e-6 for k, v in got.items())


def resume_check(p: Path, reference, out: Path | None = None) -> dict:
    """`--resume auto` in process: where from, its exit code, and whether every loss matches the reference."""
    from hvtui.core.train import checkpoint as ckpt

    out = out or Path(str(p)[:-5])
    newest = ckpt.find_newest(out) if out.is_dir() else None
    start = newest.step if newest else 0
    r = K.run(p, resume="auto")
    return {"from": start, "exit": r.session.exit_code, "identical": identical(r.events(), reference, start)}


def kills(root: Path, clips, reference, n: int, rng: random.Random) -> dict:
    """Where a kill lands: 20% while starting (imports, loading, caching: 1-10 s after launch), 20% inside a
    checkpoint write (HVTUI_TEST_CHECKPOINT_SLEEP holds one open), the rest at a random moment of training."""
    trials = []
    for i in range(n):
        p = preset(root, clips, f"kill{i}")
        out = Path(str(p)[:-5])
        env = {"HVTUI_TEST_STEP_SLEEP": "0.2"}
        where = rng.choices(["starting", "checkpoint write", "training"], [0.2, 0.2, 0.6])[0]
        if where == "checkpoint write":
            env["HVTUI_TEST_CHECKPOINT_SLEEP"] = f"{2 * rng.randint(1, STEPS // 2 - 1)}:30"
        proc = L.hvtui("--run", p, env=env)
        if where == "starting":
            time.sleep(rng.uniform(1.0, 10.0))
        elif where == "checkpoint write":
            L.wait_for(lambda out=out: list((out / "checkpoints").glob(".tmp-*/state.json")) if out.is_dir() else None,
                       proc=proc)
        else:
            L.wait_for(lambda out=out: (out / "events.jsonl").exists()
                       and any(e.kind == "step" for e in L.read_events(out)), proc=proc)
            time.sleep(rng.uniform(0.0, STEPS * 0.25))
        alive = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        t = {"where": where, "killed_alive": alive, **resume_check(p, reference)}
        trials.append(t)
        print(f"  kill {i}: {t}", flush=True)
    ok = sum(t["exit"] == 0 and t["identical"] for t in trials)
    return {"trials": n, "resumed_identical": ok, "details": trials}


def signals(root: Path, clips, reference, n: int, rng: random.Random) -> dict:
    from hvtui.core.train import checkpoint as ckpt

    trials = []
    for sig, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)):
        for i in range(n):
            p = preset(root, clips, f"sig{sig.name}{i}")
            out = Path(str(p)[:-5])
            k = rng.randint(1, STEPS - 2)
            proc = L.hvtui("--run", p, env={"HVTUI_TEST_STEP_SLEEP": "0.3"})
            L.wait_for(lambda out=out, k=k: (out / "events.jsonl").exists() and any(
                e.kind == "step" and e.get("step") >= k for e in L.read_events(out)), proc=proc)
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=300)
            stop = [e.get("step") for e in L.read_events(out) if e.kind == "finished"]
            newest = ckpt.find_newest(out)
            t = {"signal": sig.name, "at_step": k, "exit": proc.returncode, "want": code,
                 "saved_at_stop": bool(stop and newest and newest.step == stop[-1]),
                 "traceback": "Traceback" in err}
            trials.append(t)
            print(f"  {t}", flush=True)
    ok = sum(t["exit"] == t["want"] and t["saved_at_stop"] and not t["traceback"] for t in trials)
    return {"trials": len(trials), "code_and_saved": ok, "details": trials}


def disk(root: Path, clips, reference) -> dict:
    from hvtui.core.run.control import FileControl
    from hvtui.core.train import checkpoint as ckpt

    problem = K.mount_problem()
    if problem:
        return {"skipped": problem}
    os.environ["HVTUI_TEST_STEP_SLEEP"] = "0.2"
    cases = {}

    def outcome(run, out, p, want=6):
        message, hint = run.errors()[-1] if run.errors() else ("", "")
        newest = ckpt.find_newest(out)
        intact = False
        if newest is not None:
            try:
                ckpt.read_checkpoint(newest.path, verify=True)
                intact = True
            except ckpt.CheckpointError:
                pass
        return {"exit": run.session.exit_code, "want": want, "named": str(out.parent) in message or str(out) in message,
                "free_said": "free" in message, "bug_said": "likely a bug" in hint, "last_good": newest.step if newest
                else None, "intact": intact, "message": message[:200]}

    with K.tmpfs(root / "full") as d:
        p = preset(root, clips, "full", out=d / "out")
        run = K.InProcessRun(p).start()
        at = run.wait_for_step(4)
        filler = K.fill(d)
        run.join()
        cases["disk fills mid-training"] = {**outcome(run, d / "out", p), "steps_after_full": run.step() - at}
        filler.unlink()
        os.environ.pop("HVTUI_TEST_STEP_SLEEP")
        cases["disk fills mid-training"]["resume"] = resume_check(p, reference, d / "out")
        os.environ["HVTUI_TEST_STEP_SLEEP"] = "0.2"
    p = preset(root, clips, "ro")
    run = K.InProcessRun(p).start()
    run.wait_for_step(4)
    with K.read_only_view(root / "ro", root / "stage"):
        run.join()
    cases["output turns read-only"] = outcome(run, root / "ro", p)
    os.environ.pop("HVTUI_TEST_STEP_SLEEP")
    cases["output turns read-only"]["resume"] = resume_check(p, reference)
    with K.tmpfs(root / "cachefs", nr_inodes=5):
        data, _ = clips
        p = L.write_preset(root / "c.toml", data, root / "cachefs", root / "c", max_train_steps=2)
        run = K.run(p)
        cases["cache disk full while caching"] = outcome(run, root / "cachefs", p)
    with K.tmpfs(root / "term") as d:
        p = preset(root, clips, "term", out=d / "out")
        proc = L.hvtui("--run", p, env={"HVTUI_TEST_STEP_SLEEP": "0.2"})
        L.wait_for(lambda: ckpt.find_newest(d / "out") is not None if (d / "out").is_dir() else False, proc=proc)
        FileControl(d / "out" / "control").send("pause")
        L.wait_for(lambda: any(e.kind == "state" and e.get("state") == "paused" for e in L.read_events(d / "out")),
                   proc=proc)
        K.fill(d)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=300)
        newest = ckpt.find_newest(d / "out")
        cases["SIGTERM with a full disk"] = {"exit": proc.returncode, "want": 143, "named": str(d / "out") in err,
                                             "free_said": "free on" in err, "bug_said": "likely a bug" in err,
                                             "last_good": newest.step if newest else None,
                                             "intact": newest is not None}
    os.environ["HVTUI_TEST_STEP_SLEEP"] = "0.2"
    with K.tmpfs(root / "tight") as d:
        p = preset(root, clips, "tight", out=d / "out")
        run = K.InProcessRun(p).start()
        run.wait_for_step(4)
        filler = K.fill(d, leave=1 << 20)
        run.join()
        cases["too full for the next save"] = {**outcome(run, d / "out", p),
                                               "saved_at_stop": ckpt.find_newest(d / "out").step == run.step()}
        filler.unlink()
        os.environ.pop("HVTUI_TEST_STEP_SLEEP")
        cases["too full for the next save"]["resume"] = resume_check(p, reference, d / "out")
    for name, c in cases.items():
        print(f"  {name}: {c}", flush=True)
    return cases


def damage(root: Path, clips, reference) -> dict:
    """Each kind of damaged cache entry / checkpoint file: is it named, and does the run end well?"""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from hvtui.core.train import checkpoint as ckpt

    results = {}
    data, cache = clips

    def flip(path: Path, where: float = 0.5) -> None:
        raw = bytearray(path.read_bytes())
        i = int(len(raw) * where)
        for j in range(i, min(i + 32, len(raw))):
            raw[j] ^= 0x5A
        path.write_bytes(bytes(raw))

    def nan(path: Path) -> None:
        with safe_open(str(path), "pt") as f:
            meta, t = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
        t["mean"] = t["mean"].clone()
        t["mean"].view(-1)[0] = float("nan")
        save_file(t, str(path), metadata=meta)

    cache_kinds = {"zero-byte": lambda p: p.write_bytes(b""),
                   "truncated": lambda p: p.write_bytes(p.read_bytes()[:-50]),
                   "bad header": lambda p: p.write_bytes(b"\xff" * 8 + p.read_bytes()[8:]),
                   "NaN values": nan, "garbled data (same size)": lambda p: flip(p, 0.97)}
    for kind, hurt in cache_kinds.items():
        own = root / f"cache-{len(results)}"
        shutil.copytree(cache, own)
        entry = sorted((own / "latents").glob("*.safetensors"))[0]
        hurt(entry)
        r = K.run(L.write_preset(root / "d.toml", data, own, root / f"d{len(results)}", max_train_steps=6))
        results[f"cache entry: {kind}"] = {"exit": r.session.exit_code,
                                           "named": any(str(entry) in w for w in r.warnings()),
                                           "trained": len(L.losses(r.events()))}
    ckpt_kinds = {"state.json invalid": lambda c: (c / "state.json").write_text("{"),
                  "COMPLETE missing": lambda c: (c / "COMPLETE").unlink(),
                  "optimizer.pt garbled (same size)": lambda c: flip(c / "optimizer.pt"),
                  "lora_state garbled (same size)": lambda c: flip(c / "lora_state.safetensors", 0.9),
                  "scheduler.pt truncated":
                      lambda c: (c / "scheduler.pt").write_bytes((c / "scheduler.pt").read_bytes()[:9]),
                  "rng_state_0.pt deleted": lambda c: (c / "rng_state_0.pt").unlink()}
    for kind, hurt in ckpt_kinds.items():
        name = f"ck{len(results)}"
        p = preset(root, clips, name, max_train_steps=6)
        K.run(p)
        newest = ckpt.find_newest(root / name)
        hurt(newest.path)
        r = K.run(preset(root, clips, name), resume="auto", allow_changed=True)
        started = [e.get("resume_from") for e in r.events() if e.kind == "run_started"]
        results[f"newest checkpoint: {kind}"] = {
            "exit": r.session.exit_code, "said": any(newest.path.name in w for w in r.warnings()),
            "resumed_from": Path(started[0]).name if started and started[0] else None,
            "identical": identical([e for e in r.events()], reference, 4) if r.session.exit_code == 0 else False}
    for name, c in results.items():
        print(f"  {name}: {c}", flush=True)
    return results


def pairs(root: Path, clips, n: int, rng: random.Random) -> dict:
    trials = []
    for i in range(n):
        p = preset(root, clips, f"pair{i}", max_train_steps=6)
        a = L.hvtui("--run", p, env={"HVTUI_TEST_STEP_SLEEP": "0.1"})
        gap = rng.uniform(0, 1.0)
        time.sleep(gap)
        b = L.hvtui("--run", p, env={"HVTUI_TEST_STEP_SLEEP": "0.1"})
        (_, ea), (_, eb) = a.communicate(timeout=600), b.communicate(timeout=600)
        runs = [e.kind for e in L.read_events(Path(str(p)[:-5]))].count("run_started")
        t = {"gap_s": round(gap, 2), "codes": sorted([a.returncode, b.returncode]), "runs_in_events": runs,
             "holder_named": "is in use by a live run" in (ea + eb)}
        trials.append(t)
        print(f"  pair {i}: {t}", flush=True)
    ok = sum(t["codes"] == [0, 2] and t["runs_in_events"] == 1 and t["holder_named"] for t in trials)
    return {"trials": n, "one_trained_other_refused": ok, "details": trials}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--signals", type=int, default=3, help="trials per signal")
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--fuzz", type=int, default=2000)
    ap.add_argument("--no-disk", action="store_true")
    ap.add_argument("--no-damage", action="store_true")
    ap.add_argument("--seed", type=int, default=18)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / time.strftime("reliability-%Y-%m-%d.json")))
    args = ap.parse_args()
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="hvtui-reliability-"))
    clips = (L.write_clips(root / "data", 2), root / "cache")
    t0 = time.monotonic()
    ref = K.run(preset(root, clips, "reference"))
    reference = L.losses(ref.events())
    report = {"date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} CPU cores, no GPU", "steps": STEPS,
              "seed": args.seed}
    sections = [("kills", lambda: kills(root, clips, reference, args.kills, rng)),
                ("signals", lambda: signals(root, clips, reference, args.signals, rng)),
                ("disk", None if args.no_disk else lambda: disk(root, clips, reference)),
                ("damage", None if args.no_damage else lambda: damage(root, clips, reference)),
                ("pairs", lambda: pairs(root, clips, args.pairs, rng)),
                ("fuzz", lambda: preset_fuzz.fuzz(args.fuzz, args.seed, root / "fuzz"))]
    for name, fn in sections:
        if fn is None:
            continue
        print(f"{name}:", flush=True)
        start = time.monotonic()
        report[name] = fn()
        report[name + "_s"] = round(time.monotonic() - start, 1)
        summary = {k: v for k, v in report[name].items() if k not in ("details", "failures")} \
            if name in ("kills", "signals", "pairs", "fuzz") else f"{len(report[name])} cases"
        print(f"{name}: {summary} ({report[name + '_s']} s)", flush=True)
    report["total_s"] = round(time.monotonic() - t0, 1)
    Path(args.out).write_text(json.dumps(report, indent=1, default=str))
    print(f"wrote {args.out}")
    shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
