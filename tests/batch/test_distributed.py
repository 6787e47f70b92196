"""``mmcam batch`` under ``torchrun --nproc-per-node 2`` (gloo, CPU), and killed mid-run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import torch.multiprocessing as mp
from batch_runs import N_IMAGES, SETTINGS, assert_no_temp_files, assert_same_run, child_env, free_port, load_run, run_cli

from mmcam.batch import all_reduce_sums


def test_torchrun_two_processes_explain_every_image_once_and_equal_one_process(coco, reference, tmp_path):
    out = tmp_path / "out"
    launcher = ["-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "-m"]
    done = run_cli([str(coco), *SETTINGS, "--out", str(out)], launcher=launcher)
    assert done.returncode == 0, done.stderr[-3000:]
    rows, maps = load_run(out)
    assert sorted(r["index"] for r in rows) == list(range(N_IMAGES))  # each image exactly once
    assert_same_run(out, reference)  # rows and uint8 maps identical to one process
    summary, ref = (json.loads((o / "summary.json").read_text()) for o in (out, reference))
    assert summary["world_size"] == 2 and ref["world_size"] == 1
    assert summary["written_shards"] == 5  # rank 0 wrote shards 0, 2, 4, 6, 8; rank 1 the others
    for key in ("images", "explained", "failed", "items", "shards"):
        assert summary[key] == ref[key]
    for key, value in ref["stats"].items():  # all_reduce'd means, as in one process
        assert summary["stats"][key] == pytest.approx(value, rel=1e-9)
    assert_no_temp_files(out)


def _reduce_worker(rank: int, init_file: str, results) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        local = {"pointing": (3.0, 4.0), ("gradcam", "mass"): (0.25, 1.0)} if rank == 0 else {"pointing": (1.0, 2.0), "auroc": (0.5, 1.0)}
        results[rank] = all_reduce_sums(local)
    finally:
        dist.destroy_process_group()


def test_all_reduce_sums_over_two_gloo_processes_with_different_names(tmp_path):
    results = mp.Manager().dict()
    mp.spawn(_reduce_worker, args=(str(tmp_path / "init"), results), nprocs=2)
    expected = {"auroc": (0.5, 1.0), ("gradcam", "mass"): (0.25, 1.0), "pointing": (4.0, 6.0)}
    assert results[0] == results[1] == expected


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_killed_run_resumes_to_the_uninterrupted_result(coco, reference, tmp_path, sig):
    out = tmp_path / "out"
    args = [str(coco), *SETTINGS, "--out", str(out)]  # the reference's settings: 10 shards of 4 images
    with open(tmp_path / "log", "wb") as log:  # not a pipe: an orphaned worker would hold it open
        proc = subprocess.Popen([sys.executable, "-m", "mmcam.cli", "batch", *args], env=child_env(), stdout=log, stderr=log)
    deadline = time.monotonic() + 120
    while not list((out / "shards").glob("shard-0000[1-9].jsonl")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    deadline = time.monotonic() + 5
    while _processes_writing(out) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processes_writing(out) == []  # its DataLoader worker died with it (PR_SET_PDEATHSIG)
    assert proc.returncode == (-9 if sig == signal.SIGKILL else 128 + signal.SIGTERM)
    assert not (out / "index.jsonl").exists()  # killed midway: never merged
    finished = len(list((out / "shards").glob("*.jsonl")))
    assert 1 <= finished < 10
    if sig == signal.SIGTERM:
        assert_no_temp_files(out)  # SIGTERM unwinds: the temp file being written is removed

    done = run_cli(args)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_shards"] == finished and summary["written_shards"] == 10 - finished
    assert_same_run(out, reference)
    assert_no_temp_files(out)


def _processes_writing(out) -> list[str]:
    return subprocess.run(["pgrep", "-f", str(out)], capture_output=True, text=True).stdout.split()
