"""Run by tests/train/test_ddp.py under `torchrun --nproc_per_node 2` (gloo on CPU): trainings in which one
rank fails alone, each called in-process on every rank by a caller that survives the error (as `curate
experiment`'s ranks and a notebook do).

Cases (folders under ROOT): `uneven` (one rank's shard holds fewer samples than a batch), `unreadable` (one
rank's shard is not a tar: it runs out at step 0), `rank0_write` (rank 0 cannot write its step checkpoint:
OUT/rank0_write/checkpoints is a file). Writes OUT/rank{R}.json: per case the error each rank got, whether
it is quiet (reported by the other rank), its seconds and the files left in the output folder. A rank left
waiting in a training collective would hang the next case (and the final barrier) until the timeout.
"""
import json
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from curate.train.loop import TrainConfig, _dist, train


def main(root: str, out: str) -> None:
    torch.set_num_threads(1)
    rank, world, _ = _dist()
    record = {}
    for case, folder, every in (("uneven", "uneven", 0), ("unreadable", "unreadable", 0), ("rank0_write", "even", 1)):
        output = Path(out) / case
        if case == "rank0_write" and rank == 0:
            output.mkdir(parents=True)
            (output / "checkpoints").write_text("not a folder")
        t0 = time.perf_counter()
        try:
            train(TrainConfig(shards=[str(Path(root) / folder)], output=str(output), model="curate-tiny-32",
                              samples_seen=3 * 8 * world, batch_size=8, warmup=1, workers=0, log_every=1,
                              shuffle_buffer=8, checkpoint_every=every))
            got = {"error": None}
        except Exception as err:  # noqa: BLE001 - recorded for the test
            got = {"error": str(err), "type": type(err).__name__, "quiet": getattr(err, "quiet", False)}
        got["seconds"] = time.perf_counter() - t0
        got["files"] = sorted(str(p.relative_to(output)) for p in output.rglob("*")) if output.is_dir() else []
        record[case] = got
    Path(out, f"rank{rank}.json").write_text(json.dumps(record))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
