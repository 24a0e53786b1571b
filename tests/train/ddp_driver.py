"""Run by tests/train/test_ddp.py under `torchrun --nproc_per_node 2` (gloo on CPU): one rank's view.

Writes OUT/rank{R}.json with the shards this rank reads in one pass (curate's data pipeline, split
per node), its training summary (loss, model digest) and the fetch session it trained in, so the test can
compare the ranks.
"""
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from curate.io import storage
from curate.train.data import SkipCounter, expand_shards, raw_samples
from curate.train.loop import TrainConfig, _dist, train


def main(shards_dir: str, out: str, loss: str) -> None:
    torch.set_num_threads(1)
    rank, world, _ = _dist()
    shards = expand_shards([shards_dir])
    seen = sorted({s["__url__"] for s in raw_samples(shards, SkipCounter())})
    with storage.fetch_session():  # each rank's own, as each torchrun process opens one; train joins rank 0's
        summary = train(TrainConfig(shards=[shards_dir], output=str(Path(out) / "run"), samples_seen=4 * 16 * world,
                                    batch_size=16, lr=1e-3, warmup=1, workers=0, log_every=1, loss=loss,
                                    shuffle_buffer=16))
        session = os.environ[storage.FETCH_SESSION_ENV]
    Path(out, f"rank{rank}.json").write_text(json.dumps({"rank": rank, "world": world, "shards": seen,
                                                        "summary": summary, "session": session}))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
