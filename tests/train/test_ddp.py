"""DDP on CPU: `torchrun --nproc_per_node 2` with the gloo backend, a real two-process run.

Checks the parts of the multi-GPU path that do not need a GPU: each rank reads a disjoint share of
the shards, the loss is finite on every rank, and all ranks end with identical weights (DDP's
gradient all-reduce, plus the hand-averaged SigLIP bias), of which rank 0 writes the checkpoint.
"""
from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from curate.train.checkpoints import digest, load

from .conftest import write_colour_shards


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("loss", ["clip", "siglip"])
def test_two_rank_gloo_run(loss, tmp_path):
    shards = tmp_path / "shards"
    write_colour_shards(shards, 128, 4)
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "GLOO_SOCKET_IFNAME": "lo"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           str(Path(__file__).with_name("ddp_driver.py")), str(shards), str(out), loss]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    ranks = [json.loads((out / f"rank{i}.json").read_text()) for i in (0, 1)]
    a, b = (set(x["shards"]) for x in ranks)
    assert a and b and not a & b and len(a | b) == 4          # disjoint per-rank shard split
    for x in ranks:
        s = x["summary"]
        assert s["world_size"] == 2 and s["steps"] == 4 and s["samples_seen"] == 4 * 16 * 2
        assert math.isfinite(s["final_loss"])
    assert ranks[0]["summary"]["model_digest"] == ranks[1]["summary"]["model_digest"]
    # one fetch session for both ranks (rank 0's): a shard with no version is one copy per machine
    assert ranks[0]["session"] == ranks[1]["session"]
    ck = load(out / "run" / "checkpoint.pt")                  # written once, by rank 0
    assert digest(ck["state_dict"]) == ranks[0]["summary"]["model_digest"]


def _torchrun(script_or_module: list[str], env_extra: dict | None = None, timeout: int = 240):
    """`torchrun --nproc_per_node 2` on the loopback (gloo): (completed process, wall seconds)."""
    import time

    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "GLOO_SOCKET_IFNAME": "lo",
           **(env_extra or {})}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), *script_or_module]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    return r, time.perf_counter() - t0


def _one_shard(folder: Path, name: str, n: int, seed: int) -> None:
    """A shard of n colour samples as folder/name (write_colour_shards names its shards 000000.tar ...)."""
    tmp = folder / f".{name}"
    write_colour_shards(tmp, n, 1, seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    (tmp / "000000.tar").rename(folder / name)
    tmp.rmdir()


def _failing_shards(root: Path) -> None:
    """uneven: 40 samples and 3 (one rank's share is below a batch of 8); unreadable: 40 samples and a .tar
    that is not one; even: two shards of 24 (for a failure of rank 0's own)."""
    _one_shard(root / "uneven", "000000.tar", 40, 0)
    _one_shard(root / "uneven", "000001.tar", 3, 1)
    _one_shard(root / "unreadable", "000000.tar", 40, 0)
    (root / "unreadable" / "000001.tar").write_bytes(b"this is not a tar archive\n" * 40)
    _one_shard(root / "even", "000000.tar", 24, 0)
    _one_shard(root / "even", "000001.tar", 24, 1)


def test_one_failing_rank_stops_every_rank(tmp_path):
    """A rank that fails alone (too few samples in its share, a shard it cannot read, rank 0's checkpoint
    write) ends every rank at once with the same error, reported by one rank; the others' error is quiet.
    The callers survive their errors, so a rank left in a collective would hang until the timeout."""
    _failing_shards(tmp_path)
    out = tmp_path / "out"
    r, _ = _torchrun([str(Path(__file__).with_name("ddp_fail_driver.py")), str(tmp_path), str(out)],
                     {"CURATE_DIST_TIMEOUT_S": "100"}, timeout=200)
    assert r.returncode == 0, r.stderr[-3000:]
    ranks = [json.loads((out / f"rank{i}.json").read_text()) for i in (0, 1)]
    why = {"uneven": "only 3 usable sample(s) in this rank's share",
           "unreadable": "ran out of usable samples at step 0", "rank0_write": "File exists"}
    for case, reason in why.items():
        got = [x[case] for x in ranks]
        assert all(reason in g["error"] for g in got), got
        assert [g["quiet"] for g in got] == [False, True], got          # rank 0 reports, rank 1 stays quiet
        failed = 0 if case == "rank0_write" else int(got[1]["error"].split(":")[0].split()[-1])
        if failed:  # rank 0 names the rank that failed
            assert got[0]["error"].startswith(f"rank {failed}: ")
        assert all(g["seconds"] < 60 for g in got), got                 # not the 100 s timeout
        files = set(got[0]["files"])
        assert "summary.json" not in files and "checkpoint.pt" not in files, files


def test_one_failing_rank_cli_prints_once(tmp_path):
    """`curate train` under torchrun, one rank's share too small: one error line naming the rank, every rank
    exits non-zero, nothing in the output looks finished."""
    _failing_shards(tmp_path)
    out = tmp_path / "run"
    r, seconds = _torchrun(["-m", "curate.cli", "train", str(tmp_path / "uneven"), "-o", str(out), "--model",
                            "curate-tiny-32", "--samples-seen", "48", "--batch-size", "8", "--workers", "0",
                            "--warmup", "1"], {"CURATE_DIST_TIMEOUT_S": "100"}, timeout=200)
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode != 0 and len(errors) == 1, r.stderr[-3000:]
    assert errors[0].startswith("error: rank 1: only 3 usable sample(s) in this rank's share"), errors
    assert "terminated" not in r.stderr and "Connection closed" not in r.stderr
    assert "exitcode  : 2" in r.stderr                                   # torchrun's report: curate's user-error code
    assert not (out / "summary.json").exists() and not (out / "checkpoint.pt").exists()
    assert seconds < 90
