"""The shared-folder check of data-parallel runs, with two real gloo processes. A folder given as a relative
path resolves against each process's own working directory: two processes in different directories see
two different folders, as two hosts without a shared disk would."""
import errno
import os
from types import SimpleNamespace

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hvtui.core.train.collectives import Collectives
from hvtui.core.train.shared_disk import MARK, unseen_folders


def _worker(rank, init, workdirs, folders, fail_rank1, results):
    os.chdir(workdirs[rank])
    if fail_rank1 and rank == 1:
        import pathlib

        def broken(self):
            raise OSError(errno.EIO, "Input/output error")
        pathlib.Path.is_file = broken   # this process only: an I/O error where it looks for the marker
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        coll = Collectives(SimpleNamespace(num_processes=2, process_index=rank, device=torch.device("cpu")))
        results.put((rank, unseen_folders(coll, folders)))
    finally:
        dist.destroy_process_group()


def _run(tmp_path, folders, same_dir=False, fail_rank1=False):
    dirs = [tmp_path / "host0", tmp_path / ("host0" if same_dir else "host1")]
    for d in dirs:
        d.mkdir(exist_ok=True)
    results = mp.get_context("spawn").SimpleQueue()
    init = f"file://{tmp_path / 'store'}"
    mp.start_processes(_worker, args=(init, [str(d) for d in dirs], folders, fail_rank1, results), nprocs=2,
                       start_method="spawn")
    got = dict(results.get() for _ in range(2))
    (tmp_path / "store").unlink(missing_ok=True)
    return got, dirs


def test_a_folder_every_process_sees_passes_and_leaves_no_marker(tmp_path):
    got, dirs = _run(tmp_path, [str(tmp_path / "out")])
    assert got == {0: [], 1: []}
    assert (tmp_path / "out").is_dir() and not list((tmp_path / "out").glob(MARK + "*"))


def test_a_folder_another_host_does_not_see_is_named_with_the_process(tmp_path):
    got, dirs = _run(tmp_path, ["out"])
    assert got[0] == got[1]                      # every process gets the whole report
    assert len(got[0]) == 1
    line = got[0][0]
    assert line.startswith("process 1 on ") and line.endswith("does not see out")
    assert (dirs[0] / "out").is_dir() and not list((dirs[0] / "out").glob(MARK + "*"))


def test_a_folder_rank0_cannot_write_is_not_checked_and_an_error_on_one_process_is_reported(tmp_path):
    (tmp_path / "a-file").write_text("x")
    unwritable = str(tmp_path / "a-file" / "cache")    # a read-only cache stands in: mkdir fails on rank 0
    got, _ = _run(tmp_path, [unwritable], same_dir=True)
    assert got == {0: [], 1: []}
    got, _ = _run(tmp_path, [str(tmp_path / "out")], same_dir=True, fail_rank1=True)
    assert got[0] == got[1] and len(got[0]) == 1
    assert got[0][0].startswith("process 1 on ") and "cannot look into" in got[0][0] and "Input/output" in got[0][0]
