"""`curate experiment` under a real `torchrun --nproc_per_node 2` (gloo on CPU), at tiny scale.

Checks what breaks when every rank runs an experiment: rank 0 alone decides reuse, draws the random-subset
control, writes run folders and results, and evaluates; every rank joins each training (DDP, identical
weights); all ranks return the same results; a rerun reuses on every rank (no rank trains); an error on
rank 0 ends the other rank with the same message instead of a hang, and so does a training that fails on
one rank only.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from curate.train.subsets import usable_keys

from .conftest import write_classes, write_colour_shards
from .test_ddp import _free_port, _one_shard


def test_experiment_under_torchrun_two_ranks(tmp_path):
    write_colour_shards(tmp_path / "full", 64, 4)
    write_colour_shards(tmp_path / "half", 32, 2, seed=2)
    write_colour_shards(tmp_path / "eval", 24, 1, seed=1)
    write_classes(tmp_path / "eval")
    _one_shard(tmp_path / "uneven", "000000.tar", 24, 3)
    _one_shard(tmp_path / "uneven", "000001.tar", 3, 4)  # one rank's share is below a batch of 8
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "GLOO_SOCKET_IFNAME": "lo",
           "CURATE_DIST_TIMEOUT_S": "300"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           str(Path(__file__).with_name("experiment_ddp_driver.py")),
           *(str(tmp_path / d) for d in ("full", "half", "eval", "uneven")), str(out)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    lead, other = (json.loads((out / f"rank{i}.json").read_text()) for i in (0, 1))
    first, again, bad, uneven = zip(lead["calls"], other["calls"])

    # 1. every rank joined the same three trainings; only rank 0 ran the experiment (its log) and all agree
    assert sorted(first[0]["trained"]) == sorted(first[1]["trained"]) and len(first[0]["trained"]) == 3
    assert first[0]["logs"] and not first[1]["logs"]
    assert first[0]["results"] == first[1]["results"]
    exp = out / "exp"
    assert json.loads((exp / "results.json").read_text()) == first[0]["results"]
    for run in first[0]["results"]["runs"]:
        rdir = Path(run["dir"])
        assert json.loads((rdir / "config.json").read_text())["world_size"] == 2
        assert run["train"]["world_size"] == 2 and (rdir / "eval.json").is_file()
    subset = sorted((exp / "subsets" / "random" / "seed0").glob("*.tar"))
    assert len(subset) >= 2 and len(usable_keys([str(p) for p in subset])) == 32  # a tar per rank, half's size

    # 2. the same experiment again: reused on every rank, nobody trains
    assert again[0]["trained"] == again[1]["trained"] == []
    assert sum("reusing" in x for x in again[0]["logs"]) == 3
    assert again[0]["results"]["runs"] == again[1]["results"]["runs"] == first[0]["results"]["runs"]

    # 3. rank 0's error reaches the other rank as the same one-line error
    assert "no_such_metric" in bad[0]["error"] and bad[1]["error"] == f"rank 0: {bad[0]['error']}"

    # 4. a training that fails on one rank fails on both, printed once: rank 1's error is rank 0's, quiet
    assert "usable sample(s) in this rank's share" in uneven[0]["error"] and not uneven[0]["quiet"]
    assert uneven[1]["error"] == f"rank 0: {uneven[0]['error']}" and uneven[1]["quiet"]
