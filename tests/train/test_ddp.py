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
    ck = load(out / "run" / "checkpoint.pt")                  # written once, by rank 0
    assert digest(ck["state_dict"]) == ranks[0]["summary"]["model_digest"]
