"""Data-parallel building blocks without starting processes: the launcher's command and checks, the rank
split of caching and of the sample order, resuming the order with another process count, the checkpoint
marker refusing a missing rank's part, and the TUI's launched run."""
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from hvtui.core.train import checkpoint as ckpt
from hvtui.core.train import multi_gpu
from hvtui.core.train.data import BucketBatchSampler
from hvtui.core.train.latent_cache import CachePlan


def test_dist_env_reads_the_launchers_variables():
    assert multi_gpu.dist_env({}) == multi_gpu.DistEnv(0, 1, 0, 1)
    env = multi_gpu.dist_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"})
    assert (env.rank, env.world_size, env.local_rank, env.local_world_size) == (3, 4, 1, 2)
    assert env.distributed and not env.is_main


def test_torchrun_command_keeps_hvtui_options_away_from_torchruns_parser():
    from hvtui.core.run.session import RunOptions

    cmd = multi_gpu.torchrun_command(2, "p.toml", RunOptions(resume="auto", allow_changed=True))
    fresh = multi_gpu.torchrun_command(2, "p.toml", RunOptions(fresh=True))
    assert fresh[fresh.index("hvtui"):] == ["hvtui", "--", "--run", "p.toml", "--fresh"]
    assert cmd[:3] == [sys.executable, "-m", "hvtui.core.train.torchrun"]
    assert "--standalone" in cmd and "--nproc_per_node=2" in cmd
    # torchrun's argparse would read --run as its --run-path without the "--"
    assert cmd[cmd.index("hvtui"):] == ["hvtui", "--", "--run", "p.toml", "--resume", "auto", "--allow-changed"]
    env = multi_gpu.launch_env(2, {})
    assert int(env["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"]) >= 300 and int(env["OMP_NUM_THREADS"]) >= 1
    assert multi_gpu.launch_env(2, {"TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "5"})["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"] == "5"


def test_gpus_problems():
    assert multi_gpu.gpus_problem(2, 0) is None            # no CUDA: CPU processes (gloo)
    assert multi_gpu.gpus_problem(4, 4) is None
    assert "has 2 usable GPU" in multi_gpu.gpus_problem(4, 2)
    assert "1 or more" in multi_gpu.gpus_problem(0, 8)


def test_finished_code_reads_only_this_launchs_events(tmp_path):
    path = tmp_path / "events.jsonl"
    old = json.dumps({"kind": "finished", "exit_code": 0, "time": 1.0})
    path.write_text(json.dumps({"schema": 1}) + "\n" + old + "\n")
    offset = path.stat().st_size
    assert multi_gpu.finished_code(path, offset) is None
    with open(path, "a") as f:
        f.write(json.dumps({"kind": "finished", "exit_code": 143, "time": 2.0}) + "\n")
    assert multi_gpu.finished_code(path, offset) == 143 and multi_gpu.finished_code(path, 0) == 143
    # --fresh: the run moved the earlier events aside and began a new (shorter) file: read from its start
    inode = path.stat().st_ino
    os.replace(path, tmp_path / "earlier.jsonl")
    path.write_text(json.dumps({"kind": "finished", "exit_code": 6, "time": 3.0}) + "\n")
    assert multi_gpu.finished_code(path, offset, inode) == 6


def test_run_command_rejects_impossible_gpu_counts(capsys):
    from hvtui.commands.run import main

    args = SimpleNamespace(run="presets/demo.toml", resume=None, allow_changed=False, fresh=False, gpus=0)
    assert main(args) == 2 and "--gpus 0" in capsys.readouterr().err


def _plan(todo_text, todo_ids, captions=("", "a", "b", "c", "d"), ids=("s0", "s1", "s2", "s3", "s4")):
    samples = [SimpleNamespace(id=i) for i in ids]
    return CachePlan({c: Path(f"{c}.st") for c in captions}, {i: Path(f"{i}.st") for i in ids},
                     list(todo_text), [s for s in samples if s.id in todo_ids], ["", "a"], samples)


@pytest.mark.parametrize("world", [2, 3])
def test_cache_shards_cover_every_missing_entry_once(world):
    plan = _plan(["a", "c", "d"], {"s1", "s2", "s4"})
    shards = [plan.shard(r, world) for r in range(world)]
    assert sorted(c for s in shards for c in s.todo_text) == ["a", "c", "d"]
    assert sorted(x.id for s in shards for x in s.todo_latents) == ["s1", "s2", "s4"]
    # a rank that plans after another wrote its share (s1 done) still gets the same share of what is left
    later = _plan(["c", "d"], {"s2", "s4"})
    for r in range(world):
        assert [x.id for x in later.shard(r, world).todo_latents] == \
               [x.id for x in shards[r].todo_latents if x.id != "s1"]
    assert plan.shard(0, 1) is plan


def _groups(n=6):
    return {"64x64@9|t2v": [f"s{i}" for i in range(n)]}


def test_ranks_take_the_global_batches_in_order():
    """2 ranks x 1 batch per step see the batches 1 rank x 2 micro-batches sees: the basis of the
    2-process == 1-process-with-accumulation equivalence."""
    one = BucketBatchSampler(_groups(), 1, seed=3)
    ranks = [BucketBatchSampler(_groups(), 1, seed=3, rank=r, world_size=2) for r in range(2)]
    for _ in range(9):   # across epoch ends
        assert [one.next().ids, one.next().ids] == [r.next().ids for r in ranks]


def test_resume_with_another_world_size_continues_at_the_same_plan_position():
    two = BucketBatchSampler(_groups(8), 1, seed=5, rank=0, world_size=2)
    for _ in range(3):
        two.next()
    state = two.state_dict()        # 3 batches of each rank's share = 6 of the epoch plan
    one = BucketBatchSampler(_groups(8), 1, seed=5)
    warnings = one.load_state_dict(state)
    assert one.index == 6 and one.epoch == 0
    assert any("2 process(es)" in w and "sample order" in w for w in warnings)
    four = BucketBatchSampler(_groups(8), 1, seed=5, rank=1, world_size=4)
    four.load_state_dict(state)
    assert four.index == 2         # 6 / 4 rounded up: no batch trained twice


def test_commit_refuses_a_checkpoint_without_every_ranks_rng(tmp_path):
    tmp = ckpt.begin(tmp_path, 4)
    (tmp / ckpt.rng_file(0)).write_bytes(b"x")
    with pytest.raises(ckpt.CheckpointError, match="rng_state_1.pt missing"):
        ckpt.commit(tmp_path, tmp, 4, {}, limit=2, ranks=2)
    assert ckpt.find_newest(tmp_path) is None
    (tmp / ckpt.rng_file(1)).write_bytes(b"x")
    info = ckpt.commit(tmp_path, tmp, 4, {}, limit=2, ranks=2)
    assert info.state["ranks"] == 2 and ckpt.find_newest(tmp_path).step == 4


def test_launched_run_command_log_and_gpu_choices(tmp_path):
    from hvtui.core.preset.schema import load_preset
    from hvtui.core.run.session import RunOptions
    from hvtui.tui.runs import LaunchedRun, gpu_choices

    p = tmp_path / "p.toml"
    p.write_text('output_dir = "out"\n')
    run = LaunchedRun(load_preset(p), 4, RunOptions(resume="auto"))
    assert run.command()[1:] == ["-m", "hvtui", "--run", str(p), "--gpus", "4", "--resume", "auto"]
    assert run.log_path == tmp_path / "out" / "hvtui-run.log" and not run.active
    assert gpu_choices(2) == [1, 2] and gpu_choices(8) == [1, 2, 4, 8] and gpu_choices(6) == [1, 2, 4, 6]


def _launch_until_it_ends(preset_path, gpus=2):
    """Start `hvtui --run PRESET --gpus N` as the TUI does and poll it until it ends (60 s at most)."""
    import time

    from hvtui.core.preset.schema import load_preset
    from hvtui.tui.runs import LaunchedRun

    run = LaunchedRun(load_preset(preset_path), gpus)
    run.start()
    events, end = [], time.monotonic() + 60
    while run.active and time.monotonic() < end:
        events += run.poll()
        time.sleep(0.1)
    return run, events + run.poll()


def test_launched_run_that_dies_before_its_first_event_reports_why(tmp_path):
    import time

    from hvtui.tui.runs import LaunchedRun

    p = tmp_path / "p.toml"
    p.write_text('output_dir = "out"\nlearning_rate = -1.0\n')   # the launcher refuses it (exit 2)
    run, events = _launch_until_it_ends(p)
    assert not run.active and run.exit_code == 2
    assert events[-1].kind == "finished" and "exit 2" in events[-2].get("message")
    assert "learning_rate" in run.log_path.read_text()
    # a second start appends under its own header line, and the reason quoted is the newest run's only
    first = run.log_path.read_text()
    p.write_text('output_dir = "out"\nmax_train_steps = -3\n')
    run, events = _launch_until_it_ends(p)
    text = run.log_path.read_text()
    assert text.startswith(first) and text.count(LaunchedRun.LOG_HEADER) == 2
    assert text.splitlines()[first.count("\n")].startswith(LaunchedRun.LOG_HEADER + time.strftime("%Y-"))
    assert "exit 2" in events[-2].get("message") and LaunchedRun.LOG_HEADER not in events[-2].get("message")
    assert "max_train_steps" in text.split(LaunchedRun.LOG_HEADER)[-1]   # the newest run's own lines


def test_lean_nccl_defaults_keep_what_the_user_set():
    from hvtui.core.train.collectives import LEAN_NCCL, lean_nccl_defaults

    env = {"NCCL_PROTO": "LL128", "PATH": "/bin"}
    added = lean_nccl_defaults(env)
    assert env["NCCL_PROTO"] == "LL128" and "NCCL_PROTO" not in added
    assert added == {k: v for k, v in LEAN_NCCL.items() if k != "NCCL_PROTO"}
    assert all(env[k] == v for k, v in added.items())


def test_a_sharded_accelerate_config_is_refused_before_the_model_loads(tmp_path, monkeypatch):
    """accelerate set up for FSDP (its plugin needs GPUs, so the Accelerator is replaced here): hvtui averages
    LoRA gradients itself and never shards the model; the run stops with exit 2 and says how to launch."""
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from hvtui.core.preset.schema import load_preset
    from hvtui.core.run import exitcodes
    from hvtui.core.run.session import RunOptions, Session
    from hvtui.core.train import run_setup
    from tests.helpers import loop_presets as L

    L.write_clips(tmp_path / "data", 1)
    p = L.write_preset(tmp_path / "p.toml", tmp_path / "data", tmp_path / "cache", tmp_path / "out", max_train_steps=1)
    monkeypatch.setattr(run_setup, "fresh_accelerator",
                        lambda *a, **k: SimpleNamespace(distributed_type=DistributedType.FSDP))
    s = Session(load_preset(p), options=RunOptions())
    s.start()
    s.join()
    assert s.exit_code == exitcodes.INVALID
    errors = [e for e in L.read_events(tmp_path / "out") if e.kind == "error"]
    assert any("configured for FSDP" in e.get("message") and "--multi_gpu" in e.get("hint") for e in errors)
    assert not list((tmp_path / "cache").rglob("*.safetensors"))    # stopped before caching anything


def test_fresh_and_resume_together_are_refused(capsys):
    from hvtui.commands.run import main

    args = SimpleNamespace(run="presets/demo.toml", resume="auto", allow_changed=False, fresh=True, gpus=None)
    assert main(args) == 2 and "--fresh" in capsys.readouterr().err


def test_the_quoted_reason_is_the_newest_runs_own(tmp_path):
    """hvtui-run.log keeps every start (--fresh moves the earlier run aside but not the log the child writes to):
    a run that died silently quotes nothing rather than the run before it."""
    from hvtui.tui.runs import LaunchedRun, _tail

    log = tmp_path / LaunchedRun.LOG_FILE
    log.write_text(f"{LaunchedRun.LOG_HEADER}1\nerror: old one\n{LaunchedRun.LOG_HEADER}2\n")
    assert _tail(log, after=LaunchedRun.LOG_HEADER) == "" and "old one" in _tail(log)
    log.write_text(log.read_text() + "error: new one\n")
    assert _tail(log, after=LaunchedRun.LOG_HEADER) == "error: new one"
    assert _tail(tmp_path / "missing.log", after=LaunchedRun.LOG_HEADER) == ""
