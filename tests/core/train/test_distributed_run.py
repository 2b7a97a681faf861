"""Data-parallel training on the CPU: the tiny demo model, 2 worker processes (gloo) started by
`hvtui --run --gpus 2` (torchrun underneath) or by torchrun directly.

The equivalent single-process run: 2 processes x train_batch_size 1 compute the same step as 1 process x
train_batch_size 1 x gradient_accumulation_steps 2. Rank r takes batches r, r+2, ... of the epoch plan and
the single process takes them in pairs, micro-batch m of the step being global slot m*W+r, from which
every random draw (posterior sample, sigma, noise) is seeded; the processes average the two ranks' gradients where
accumulation averages the two micro-batches (accelerate divides each loss by 2; scaling by 1/2 is exact in
floating point), and the optimizer then sees the same gradient. train_batch_size 2 would not be equal: it
pads and masks the text of both samples in one forward.
"""
import signal

import pytest

from hvtui.core.preset.schema import load_preset
from hvtui.core.run import exitcodes
from hvtui.core.run.session import RunOptions, Session
from hvtui.core.train import checkpoint as ckpt
from tests.helpers import loop_presets as L

pytestmark = pytest.mark.slow
STEPS = 6
TOL = 1e-5


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    L.write_clips(root / "data", 2)   # even: both runs' epochs hold the same batches
    return root


def _preset(root, name, cache="cache", **kw):
    kw = {"max_train_steps": STEPS, **kw}
    return L.write_preset(root / f"{name}.toml", root / "data", root / cache, root / name, **kw)


def _lora(out, step=STEPS):
    from safetensors.torch import load_file

    return load_file(str(out / "checkpoints" / f"checkpoint-{step:06d}" / ckpt.LORA_STATE_FILE))


def _max_diff(a, b):
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def _errors(events):
    return "\n".join(e.get("message", "") for e in events if e.kind == "error")


@pytest.fixture(scope="module")
def single(root):
    """The equivalent single-process run (in-process), its own cache."""
    p = _preset(root, "single", cache="cache-single", gradient_accumulation_steps=2)
    s = Session(load_preset(p), options=RunOptions())
    s.start()
    s.join()
    events = L.read_events(root / "single")
    assert s.exit_code == 0, _errors(events)
    return L.losses(events), _lora(root / "single")


def test_two_processes_train_the_same_lora_as_one_with_accumulation(root, single):
    expected_losses, expected_lora = single
    run = L.hvtui("--run", _preset(root, "two"), "--gpus", "2")
    out, err = run.communicate(timeout=600)
    assert run.returncode == 0, err
    assert "through torchrun" in out and "x 2 process(es)" in out and "does not scale it" in out
    events = L.read_events(root / "two")
    started = [e for e in events if e.kind == "run_started"]
    assert [(e.get("num_processes"), e.get("global_batch")) for e in started] == [(2, 2)]
    assert (root / "two" / "events.jsonl").read_text().count('"hvtui_events"') == 1   # rank 0 alone writes
    got = L.losses(events)
    assert sorted(got) == list(range(1, STEPS + 1))
    for step, loss in got.items():
        assert loss == pytest.approx(expected_losses[step], abs=TOL), step
    assert _max_diff(_lora(root / "two"), expected_lora) < TOL
    assert max(v.abs().max().item() for k, v in expected_lora.items() if "lora_B" in k) > 1e-3   # it trained
    final = root / "two" / "checkpoints" / f"checkpoint-{STEPS:06d}"
    assert (final / "rng_state_0.pt").is_file() and (final / "rng_state_1.pt").is_file()
    # caching was split: every entry of the shared cache exists once, the log counts both ranks' work
    assert "latents encoded 2" in out and len(list((root / "cache" / "latents").glob("*.safetensors"))) == 2


def test_sigterm_to_the_launcher_leaves_one_checkpoint_and_resume_auto_continues(root, single):
    expected_losses, expected_lora = single
    p = _preset(root, "cut")
    out_dir = root / "cut"
    run = L.hvtui("--run", p, "--gpus", "2", env={"HVTUI_TEST_STEP_SLEEP": "0.4"})
    L.wait_for(lambda: (out_dir / "events.jsonl").exists() and
               any(e.kind == "step" and e.get("step") >= 2 for e in L.read_events(out_dir)), proc=run)
    run.send_signal(signal.SIGTERM)
    out, err = run.communicate(timeout=300)
    assert run.returncode == 143, err
    done = ckpt.list_complete(out_dir)
    assert len(done) == 1 and not list(ckpt.root(out_dir).glob(".tmp-*"))      # exactly one, complete
    k = done[0].step
    assert 2 <= k < STEPS and done[0].state["ranks"] == 2
    assert sorted(x.name for x in done[0].path.glob("rng_state_*.pt")) == ["rng_state_0.pt", "rng_state_1.pt"]
    first = L.read_events(out_dir)
    assert first[-1].get("status") == "interrupted" and first[-1].get("exit_code") == 143

    # one process cannot silently continue a 2-process run
    s = Session(load_preset(p), options=RunOptions(resume="auto"))
    s.start()
    s.join()
    assert s.exit_code == exitcodes.RESUME_MISMATCH
    msg = _errors(s.bus.since(0)[0])          # a refused start writes nothing into output_dir: the console has it
    assert "num_processes: 2 -> 1" in msg and "global batch: 2 -> 1" in msg and "sample order" in msg

    again = L.hvtui("--run", p, "--gpus", "2", "--resume", "auto")
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    events = L.read_events(out_dir)
    resumed = events[max(i for i, e in enumerate(events) if e.kind == "run_started"):]
    assert resumed[0].get("resume_from").endswith(f"checkpoint-{k:06d}")
    got = L.losses(resumed)
    assert sorted(got) == list(range(k + 1, STEPS + 1))
    for step, loss in {**L.losses(first), **got}.items():    # as if never interrupted
        assert loss == pytest.approx(expected_losses[step], abs=TOL), step
    assert _max_diff(_lora(out_dir), expected_lora) < TOL


def test_direct_torchrun_and_a_nan_on_one_rank_is_skipped_by_both(root, single):
    """Started by torchrun itself; rank 1 alone sees a NaN loss at step 2: both ranks skip the step (agreed
    after backward, before any gradient is averaged) and training goes on."""
    import os
    import subprocess
    import sys

    p = _preset(root, "nan", max_train_steps=3)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HVTUI_INJECT_NAN_AT_STEP": "2", "HVTUI_INJECT_NAN_TIMES": "1",
           "HVTUI_INJECT_RANK": "1"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "hvtui", "--", "--run", str(p)], cwd=L.REPO, env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    events = L.read_events(root / "nan")
    assert sorted(L.losses(events)) == [1, 2, 3]
    warnings = [e.get("message") for e in events if e.kind == "log" and e.get("level") == "warning"]
    assert sum("step 2: non-finite loss" in w for w in warnings) == 1
    assert L.losses(events)[1] == pytest.approx(single[0][1], abs=TOL)


def test_an_oom_in_one_ranks_backward_pass_is_skipped_by_both_and_the_step_retried(root, monkeypatch):
    """Rank 1 alone runs out of memory after step 2's backward pass (its gradients made): no process is in an
    all-reduce then, so both agree to drop the step's gradients and retry it (a retry draws new noise). The
    single-process run with accumulation 2 and the same OOM (its first micro-batch, so the step is retried
    too) is the reference: every loss and the final LoRA match, so nothing of the dropped attempt leaked."""
    oom = {"HVTUI_INJECT_OOM_AT_STEP": "2", "HVTUI_INJECT_OOM_TIMES": "1", "HVTUI_INJECT_OOM_WHERE": "backward"}
    for k, v in oom.items():
        monkeypatch.setenv(k, v)
    p1 = _preset(root, "oom-single", cache="cache-single", max_train_steps=3, gradient_accumulation_steps=2)
    s = Session(load_preset(p1), options=RunOptions())
    s.start()
    s.join()
    assert s.exit_code == 0, _errors(L.read_events(root / "oom-single"))
    expected = L.losses(L.read_events(root / "oom-single"))

    run = L.hvtui("--run", _preset(root, "oom", max_train_steps=3), "--gpus", "2",
                  env={**oom, "HVTUI_INJECT_RANK": "1"})
    out, err = run.communicate(timeout=600)
    assert run.returncode == 0, err
    events = L.read_events(root / "oom")
    assert sorted(L.losses(events)) == [1, 2, 3]
    warnings = [e.get("message") for e in events if e.kind == "log" and e.get("level") == "warning"]
    assert sum("out of memory" in w and "step 2" in w for w in warnings) == 1, warnings
    for step, loss in L.losses(events).items():
        assert loss == pytest.approx(expected[step], abs=TOL), step
    assert _max_diff(_lora(root / "oom", 3), _lora(root / "oom-single", 3)) < TOL


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("launcher", ["accelerate launch", "torchrun two hosts", "accelerate two hosts"])
def test_other_launchers_train_the_same_steps(root, single, tmp_path, launcher):
    """`accelerate launch` (2 processes), and torchrun / accelerate launch as two hosts of one process each (two
    launchers meeting at a rendezvous address, as on two machines; each worker is local rank 0 of its host):
    the same losses as the single-process run, and rank 0 alone writes the events."""
    import os
    import subprocess
    import sys

    name = launcher.replace(" ", "-")
    p = _preset(root, name, max_train_steps=3)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HOME": str(tmp_path)}   # no user accelerate config
    hvtui = ["-m", "hvtui", "--run", str(p)]
    accelerate = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                  "--mixed_precision", "no", "--dynamo_backend", "no"]
    port = _free_port()
    if launcher == "accelerate launch":
        cmds = [[*accelerate, "--num_machines", "1", *hvtui]]
    elif launcher == "accelerate two hosts":
        cmds = [[*accelerate, "--num_machines", "2", "--machine_rank", str(r), "--main_process_ip", "127.0.0.1",
                 "--main_process_port", str(port), *hvtui] for r in (0, 1)]
    else:
        cmds = [[sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node_rank={r}",
                 "--nproc_per_node=1", "--master_addr=127.0.0.1", f"--master_port={port}", "-m", "hvtui", "--",
                 "--run", str(p)] for r in (0, 1)]
    procs = [subprocess.Popen(c, cwd=L.REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c in cmds]
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err[-3000:]
    finally:   # one launcher failing leaves the other waiting at the rendezvous
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    events = L.read_events(root / name)
    assert [e.get("num_processes") for e in events if e.kind == "run_started"] == [2]
    assert (root / name / "events.jsonl").read_text().count('"hvtui_events"') == 1
    got = L.losses(events)
    assert sorted(got) == [1, 2, 3]
    for step, loss in got.items():
        assert loss == pytest.approx(single[0][step], abs=TOL), step
