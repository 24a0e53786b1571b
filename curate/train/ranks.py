"""`curate experiment` under torchrun: rank 0 leads, the other ranks only train.

Why a leader: an experiment decides per run whether to reuse, retrain or re-evaluate (from files on
disk), draws random-subset controls, evaluates and writes results. Done on every rank, the ranks race on
the same folders (one deletes a run dir another is writing) and may decide differently (one sees a
checkpoint another has not yet written). So only rank 0 runs the experiment: it decides, writes every
file and evaluates; each training it starts is broadcast first, and every rank joins that DDP run
(`curate.train.loop.train`, where rank 0 writes the checkpoint and all ranks wait for it). At the
end rank 0 broadcasts the results (or its one-line error), so every rank returns or fails the same way.

Ranks wait for rank 0 while it fingerprints shards or evaluates: the process group's timeout
(CURATE_DIST_TIMEOUT_S, default 7200 s) must cover the longest of these.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

from curate.train.loop import TrainConfig, TrainError, _dist, train


def rank_world() -> tuple[int, int]:
    """(rank, world size); initialises torch.distributed under torchrun, (0, 1) otherwise."""
    rank, world, _ = _dist()
    return rank, world


def is_lead() -> bool:
    return rank_world()[0] == 0


def broadcast(obj: Any = None) -> Any:
    """Rank 0's `obj` on every rank (a no-op in a single process)."""
    if rank_world()[1] <= 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def lead_train(cfg: TrainConfig, resume: bool = False) -> dict:
    """Rank 0: tell the other ranks to join this training run, then run it (DDP across all ranks)."""
    broadcast(("train", cfg, resume))
    return train(cfg, resume=resume)


def follow() -> Any:
    """A rank other than 0: join each training rank 0 starts; return rank 0's result or raise its error.

    A training that fails, fails on every rank at once (curate.train.loop._agree), rank 0 included: so
    this rank keeps listening and rank 0 says what comes next (its error, or another run) instead of
    this rank leaving while rank 0 waits for it in its next broadcast. Rank 0's error is raised quiet
    (the CLI prints it on rank 0 only)."""
    while True:
        kind, *rest = broadcast()
        if kind == "train":
            try:
                train(rest[0], resume=rest[1])
            except TrainError:  # agreed by every rank (loop._agree): rank 0 failed too, its broadcast says what next
                pass
        elif kind == "done":
            return rest[0]
        else:
            err = rest[1](f"rank 0: {rest[0]}")
            err.quiet = True
            raise err


def rank0_leads(fn: Callable) -> Callable:
    """Run `fn` on rank 0 only (it calls lead_train to train on all ranks); the others follow it."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if rank_world()[1] <= 1:
            return fn(*args, **kwargs)
        if not is_lead():
            return follow()
        try:
            result = fn(*args, **kwargs)
        except Exception as err:
            try:
                broadcast(("error", str(err), type(err) if isinstance(err, ValueError) else TrainError))
            except Exception:  # noqa: BLE001 - the other ranks are gone (they failed too): keep rank 0's error
                pass
            raise
        broadcast(("done", result))
        return result
    return wrapper
