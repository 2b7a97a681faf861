"""Data-parallel runs: `hvtui --run PRESET --gpus N` starts N worker processes through torchrun
(`python -m torch.distributed.run --standalone --nproc_per_node N -m hvtui --run PRESET ...`), the launcher
accelerate uses underneath; each worker is a plain `hvtui --run` that learns its rank from the environment
(RANK / WORLD_SIZE / LOCAL_RANK, set by torchrun or `accelerate launch`). Without CUDA the workers use gloo
on the CPU.

The launcher process never joins the process group. It only forwards signals and reports the run's exit code:
- torchrun gets its own session, so a terminal's Ctrl-C reaches it once, through the launcher (not twice);
  torchrun forwards each signal to every worker, which stop together at the next step boundary and save one
  checkpoint. TORCH_ELASTIC_SHUTDOWN_TIMEOUT (how long torchrun waits for that before SIGKILL) defaults to
  SHUTDOWN_TIMEOUT_S here; torchrun's own default (30 s) is shorter than a large model's last step + save.
- a second SIGINT goes straight to the workers, which then quit at once without saving (as single-process).
- the exit code is the one rank 0 wrote into OUTPUT_DIR/events.jsonl (torchrun itself only says 0 or 1).
The same workers run when started directly with `torchrun --nproc_per_node N -m hvtui -- --run PRESET` (the
`--` keeps torchrun's parser from reading `--run` as its `--run-path`) or `accelerate launch -m hvtui --run
PRESET` (set TORCH_ELASTIC_SHUTDOWN_TIMEOUT yourself there).

Nothing here imports torch: the launcher stays light.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from hvtui.core.run import exitcodes

SHUTDOWN_TIMEOUT_S = 600
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in a torchrun / accelerate launch job (1 process when not launched so)."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_env(env=os.environ) -> DistEnv:
    def get(name: str, default: int) -> int:
        try:
            return int(env.get(name, "") or default)
        except ValueError:
            return default
    world = get("WORLD_SIZE", 1)
    return DistEnv(get("RANK", 0), world, get("LOCAL_RANK", 0), get("LOCAL_WORLD_SIZE", world))


def gpu_count(env=os.environ) -> int:
    """CUDA GPUs this process may use (NVML, honouring CUDA_VISIBLE_DEVICES); 0 without a GPU or driver."""
    try:
        from hvtui.core.env.nvml import query

        return len(query(env).visible_gpus)
    except Exception:   # no NVML library, a broken driver: no GPU as far as the launcher can tell
        return 0


def gpus_problem(n: int, available: int) -> str | None:
    if n < 1:
        return f"--gpus {n}: give the number of GPUs to train on (1 or more)"
    if available and n > available:
        return (f"--gpus {n}: this machine has {available} usable GPU(s) (CUDA_VISIBLE_DEVICES counts); "
                f"use --gpus {available} or fewer")
    return None


def worker_args(preset_path: str, options) -> list[str]:
    """`options`: session.RunOptions (its resume / allow-changed / fresh flags go to every worker)."""
    # "--": torchrun's parser would read hvtui's --run as an abbreviation of its own --run-path
    return ["-m", "hvtui", "--", "--run", str(preset_path), *options.cli_flags()]


def torchrun_command(n: int, preset_path: str, options) -> list[str]:
    """torchrun (through hvtui.core.train.torchrun: the same, with a short error report)."""
    return [sys.executable, "-m", "hvtui.core.train.torchrun", "--standalone", f"--nproc_per_node={n}",
            *worker_args(preset_path, options)]


def launch_env(n: int, env=os.environ) -> dict[str, str]:
    e = dict(env)
    e.setdefault("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", str(SHUTDOWN_TIMEOUT_S))
    # torchrun would set 1 and warn about it; share the cores instead (data loading is light, the GPU works)
    e.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // n)))
    e.setdefault("PYTHONUNBUFFERED", "1")
    return e


def _die_with_parent() -> None:
    """In torchrun (Linux): SIGTERM when the launcher dies, even by SIGKILL, so workers stop and save."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
    except Exception:
        pass


def children(pid: int) -> list[int]:
    """Direct children of `pid` (Linux /proc): torchrun's workers, for the second-SIGINT fast exit."""
    out = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            out.append(int(entry))
    return out


def finished_code(events_path: Path, offset: int, inode: int | None = None) -> int | None:
    """The exit code in the last `finished` event written after `offset` (this launch's run), or None.
    `inode`: the file's when `offset` was taken; another file there (--fresh moved the earlier run's
    events aside and this run began a new one) is read from its start."""
    from hvtui.core.run.runlog import parse_line

    try:
        with open(events_path, encoding="utf-8") as f:
            if inode is not None and os.fstat(f.fileno()).st_ino != inode:
                offset = 0
            f.seek(offset)
            lines = f.read().splitlines()
    except OSError:
        return None
    code = None
    for line in lines:
        try:
            e = parse_line(line)
        except ValueError:
            continue
        if e is not None and e.kind == "finished":
            code = e.get("exit_code")
    return code


def launch(preset_path: str, n: int, options, out=sys.stdout, err=sys.stderr) -> int:
    """`hvtui --run PRESET --gpus N` with N > 1: checks, torchrun, signal forwarding; the run's exit code."""
    from hvtui.core.preset.schema import PresetError, load_preset
    from hvtui.core.run.runlog import FILENAME

    try:
        preset = load_preset(preset_path)
    except PresetError as e:
        print(f"error: {e}", file=err)
        return exitcodes.INVALID
    from hvtui.core.preset.check import validate_preset

    problems = [q for q in validate_preset(preset) if q.is_error]
    if problems:   # once here, not once per worker
        for q in problems:
            print(f"error: {q}", file=err)
        print(f"error: the preset has {len(problems)} problem(s); nothing was trained\n"
              "  hint: fix them (hvtui check PRESET lists them) and run again", file=err)
        return exitcodes.INVALID
    available = gpu_count()
    problem = gpus_problem(n, available)
    if problem:
        print(f"error: {problem}", file=err)
        return exitcodes.INVALID
    where = f"{n} GPUs" if available else f"{n} CPU processes (no CUDA GPU: gloo backend)"
    cmd = torchrun_command(n, preset_path, options)
    print(f"hvtui: data-parallel on {where} through torchrun: torchrun {' '.join(cmd[3:])}", file=out, flush=True)

    out_dir = preset.resolve_path(preset.output_dir)
    assert out_dir is not None   # output_dir is a string field, never None
    events_path = out_dir / FILENAME
    try:
        st = events_path.stat()
        offset, inode = st.st_size, st.st_ino
    except OSError:
        offset, inode = 0, None
    proc = subprocess.Popen(cmd, env=launch_env(n), start_new_session=True, preexec_fn=_die_with_parent)
    got: list[int] = []

    def on_signal(signum, frame):
        got.append(signum)
        try:
            if len(got) == 1:
                proc.send_signal(signum)          # torchrun forwards it to every worker
            elif signum == signal.SIGINT:
                for pid in children(proc.pid):    # the user insists: the workers quit at once
                    os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            pass
    previous = {s: signal.signal(s, on_signal) for s in SIGNALS}
    try:
        while True:
            try:
                rc = proc.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                continue
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    code = finished_code(events_path, offset, inode)
    if code is not None:
        return int(code)
    if got:
        return 128 + int(got[0])
    from hvtui.core.train.torchrun import KNOWN

    if rc in KNOWN and rc != exitcodes.UNEXPECTED:   # rank 0's own code: a start refused before any event
        return rc
    if rc != 0:
        print(f"error: the worker processes failed (torchrun exit {rc}) before the run finished; their "
              "output is above", file=err)
        return exitcodes.UNEXPECTED
    return exitcodes.OK
