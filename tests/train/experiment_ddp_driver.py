"""Run by tests/train/test_experiment_ddp.py under `torchrun --nproc_per_node 2` (gloo on CPU): one rank's view
of `curate experiment` (curate.train.experiment.run_experiment), called three times in the same ranks.

1. a fresh experiment: full (4 shards), half (2 shards), random (a random subset of full with half's size);
2. the same again: every run is reused, so no rank may train;
3. a bad primary metric: rank 0 fails before any run, and the other rank must fail with its message;
4. an arm whose shards leave one rank fewer samples than a batch: its training fails on every rank, and the
   other rank must end with rank 0's error (quiet: rank 0 prints it), not wait for rank 0 forever.
Writes OUT/rank{R}.json: the trainings this rank joined per call, its log lines, its results and errors.
"""
import json
import sys
from pathlib import Path

import torch

import curate.train.ranks as ranks
from curate.train.experiment import Arm, ExperimentSpec, run_experiment
from curate.train.loop import TrainConfig, TrainError

joined: list[str] = []
_train = ranks.train


def counting_train(cfg, resume=False):
    joined.append(cfg.output)
    return _train(cfg, resume=resume)


def main(full: str, half: str, eval_dir: str, uneven: str, out: str) -> None:
    torch.set_num_threads(1)
    ranks.train = counting_train
    rank, world = ranks.rank_world()
    base = TrainConfig(shards=[], output="", model="curate-tiny-32", samples_seen=2 * 8 * world, batch_size=8,
                       warmup=1, workers=0, shuffle_buffer=8, log_every=1)

    def spec(primary=("zeroshot_top1",)):
        if primary == ("uneven",):
            return ExperimentSpec(arms={"full": Arm("full", shards=[full]), "uneven": Arm("uneven", shards=[uneven])},
                                  eval_set=eval_dir, seeds=1, primary_metrics=["zeroshot_top1"])
        return ExperimentSpec(arms={"full": Arm("full", shards=[full]), "half": Arm("half", shards=[half]),
                                    "random": Arm("random", random_subset_of="full", size_of="half")},
                              eval_set=eval_dir, seeds=1, primary_metrics=list(primary))

    record: dict = {"rank": rank, "world": world, "calls": []}
    for primary in (("zeroshot_top1",), ("zeroshot_top1",), ("no_such_metric",), ("uneven",)):
        joined.clear()
        logs: list[str] = []
        call: dict = {}
        try:
            call["results"] = run_experiment(spec(primary), str(Path(out) / "exp"), base, log=logs.append)
        except TrainError as err:
            call["error"] = str(err)
            call["quiet"] = getattr(err, "quiet", False)
        call.update(trained=list(joined), logs=logs)
        record["calls"].append(call)
    Path(out, f"rank{rank}.json").write_text(json.dumps(record, default=str))
    import torch.distributed as dist

    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
