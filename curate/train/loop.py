"""Contrastive image-text pretraining of an open_clip model on WebDataset shards.

Why our own loop rather than open_clip_train: the validation loop needs a budget in *samples seen*
(the unit DataComp fixes), exact skip counts for bad samples, a JSONL log with data-wait fraction,
and resumable checkpoints that open_clip loads unchanged, all from a library call that tests and
`curate experiment` drive in-process. On GPU: bf16 autocast, optional torch.compile, DDP under
torchrun (shards split per rank). On CPU it runs in fp32, which is what the tests use.

Output folder: log.jsonl (one line per logged step), checkpoint.pt (the latest; `--resume` reads it),
checkpoints/step_NNNNNNNN.pt (every checkpoint interval), summary.json (final counts and timings).
"""
from __future__ import annotations

import json
import math
import os
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import numpy as np
import torch

from curate.io import atomic, storage
from curate.train import checkpoints, configs
from curate.train.data import DataError, TrainBatches, expand_shards, holds_video, make_loader
from curate.train.losses import LOSSES, ContrastiveLoss


class TrainError(ValueError):
    """A training request that cannot run as given (message is the whole story)."""


class RankFailed(TrainError):
    """Raised on every rank once the ranks agreed that one of them failed (_agree).

    `quiet`: this rank has nothing of its own to say (it stops because another rank failed, or it failed
    itself and rank 0 reports it), so the CLI exits non-zero without a line and the error is printed once.
    """

    def __init__(self, message: str, quiet: bool = False):
        super().__init__(message)
        self.quiet = quiet


@dataclass
class TrainConfig:
    shards: list[str]
    output: str
    model: str = "curate-tiny"
    samples_seen: int = 10_000
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 10  # steps
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    seed: int = 0
    loss: str = "clip"
    workers: int = 1
    checkpoint_every: int = 0  # steps; 0 = only the final (and latest) checkpoint
    log_every: int = 10
    compile: bool = False
    precision: str = "auto"  # auto = bf16 autocast on CUDA, fp32 on CPU
    device: str = "auto"
    shuffle_buffer: int = 1000
    recaption_prob: float = 0.0  # use a sample's .recap.txt instead of .txt with this probability
    threads: int = 0  # torch intra-op threads on CPU; 0 = torch's default
    video_frames: int = 0  # > 0: train on the shards' videos, each a storyboard of this many frames (video_data.py)
    extra: dict = field(default_factory=dict)

    def validate(self) -> None:
        if self.loss not in LOSSES:
            raise TrainError(f"--loss must be one of {', '.join(LOSSES)}, not {self.loss!r}")
        if self.samples_seen < 1 or self.batch_size < 1:
            raise TrainError("--samples-seen and --batch-size must be positive")
        if not 0.0 <= self.recaption_prob <= 1.0:
            raise TrainError(f"--recaption-prob must be between 0 and 1, not {self.recaption_prob}")
        if not 0 <= self.video_frames <= 16:
            raise TrainError(f"--video-frames must be between 0 (images) and 16, not {self.video_frames}")
        if self.video_frames:
            from curate.train.video_data import require_decoder

            try:
                require_decoder("curate train")
            except ValueError as err:
                raise TrainError(str(err)) from None
        if self.precision not in ("auto", "fp32", "bf16"):
            raise TrainError(f"--precision must be auto, fp32 or bf16, not {self.precision!r}")
        configs.register()
        import open_clip

        if self.model not in open_clip.list_models():
            raise TrainError(f"unknown model {self.model!r} (curate ships {', '.join(configs.MODELS)}; "
                             "any open_clip model name works)")
        if (self.loss == "coca") != ("coca" in self.model.lower()):
            raise TrainError(f"--loss coca goes with a CoCa model and only with one (model {self.model!r}, "
                             f"loss {self.loss!r})")


# Settings that must match for --resume to continue the same run.
RESUME_KEYS = ("model", "samples_seen", "batch_size", "loss", "lr", "warmup", "weight_decay", "seed", "recaption_prob",
               "video_frames")


def _dist():
    """(rank, world_size, local_rank), initialising torch.distributed under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        from datetime import timedelta

        # long enough for rank 0's solo work in `curate experiment` (fingerprints, evaluation; curate.train.ranks)
        timeout = timedelta(seconds=float(os.environ.get("CURATE_DIST_TIMEOUT_S", "7200")))
        nccl = torch.cuda.is_available()
        if nccl:  # NCCL collectives (and broadcast_object_list) run on the rank's current device
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if nccl else "gloo", timeout=timeout)
    return dist.get_rank(), world, local_rank


def _comm_device():
    """The device a collective's tensors live on: this rank's GPU under NCCL, the CPU under gloo."""
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _describe(err: BaseException) -> str:
    """One line for an error: its message for curate's own (ValueError) errors, else its type and first line."""
    if isinstance(err, ValueError) and str(err):
        return str(err)
    first = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def _agree(error: Optional[BaseException], rank: int, world: int) -> None:
    """Return when no rank failed; otherwise raise on every rank. Every rank calls it at the same points.

    Why: a rank that raised on its own (too few samples in its share, ran out of samples, an unreadable
    shard, a checkpoint rank 0 could not write) left the others in their next collective: gloo ends them
    with "Connection closed by peer" (a misleading second error, exit 1), NCCL waits for the distributed
    timeout (CURATE_DIST_TIMEOUT_S, two hours), and a rank whose caller survives the error (a notebook,
    `curate experiment`'s leader) kept its peers waiting too. So each point where ranks can part ways
    (after setup, after each batch is fetched, before and after the final write) first all-reduces one
    failed flag: one small collective, where the loop already syncs on the loss each step. Only on failure
    are the messages gathered; rank 0 raises the error of the lowest failing rank (its own as it was,
    another's as "rank R: ..."), and the other ranks a quiet RankFailed, so the line is printed once.
    """
    if world <= 1:
        if error is not None:
            raise error
        return
    import torch.distributed as dist

    flag = torch.tensor([0 if error is None else 1], dtype=torch.int32, device=_comm_device())
    dist.all_reduce(flag)
    if not int(flag.item()):
        return
    lines: list = [None] * world
    dist.all_gather_object(lines, None if error is None else _describe(error))
    first = next(r for r, line in enumerate(lines) if line is not None)
    others = [r for r, line in enumerate(lines) if line is not None and r != first]
    message = f"rank {first}: {lines[first]}" + (f" (rank(s) {', '.join(map(str, others))} failed too)"
                                                   if others else "")
    if rank == 0 and error is not None:
        raise error
    if rank == 0:
        raise RankFailed(message) from None
    raise RankFailed(message, quiet=True) from error


def _join_rank0_session() -> None:
    """Every rank of a DDP run joins rank 0's fetch session (storage.fetch_session; all ranks call this
    together, in train). Why: torchrun starts each rank as a process of its own, each with a session of its
    own, so ranks on one machine would each download a shard that has no version (and could read other
    bytes than rank 0 fingerprinted); with one session they share one copy per machine."""
    import torch.distributed as dist

    box = [os.environ.get(storage.FETCH_SESSION_ENV)]
    dist.broadcast_object_list(box, src=0)
    if box[0]:
        os.environ[storage.FETCH_SESSION_ENV] = box[0]


def resolve_device(spec: str, local_rank: int, cuda_available: bool) -> torch.device:
    """The device to train on: `auto` is this rank's GPU when there is one; a bare `cuda` gets this rank's index.

    Why the index: torch.cuda.set_device refuses a device without one (`--device cuda` crashed on a GPU).
    """
    if spec == "auto":
        return torch.device("cuda", local_rank) if cuda_available else torch.device("cpu")
    device = torch.device(spec)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", local_rank)
    return device


def lr_at(step: int, base: float, warmup: int, total: int) -> float:
    """Linear warmup to `base`, then cosine to 0 at `total` (open_clip's cosine_lr)."""
    if step < warmup:
        return base * (step + 1) / warmup
    e, es = step - warmup, max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * e / es)) * base


def param_groups(model: torch.nn.Module, extra: list, weight_decay: float) -> list[dict]:
    """No weight decay on gains, biases, embeddings-scale scalars (open_clip's exclusion rule)."""
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": no_decay + list(extra), "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def make_optimizer(groups: list[dict], cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW, fused (one kernel over all parameters) where torch has it for the device.

    Why: the tiny models' 6.3M-parameter token embedding makes the optimiser step a large share of a
    CPU step; the fused kernel is about 3x faster than foreach there (18 vs 54 ms per step on one
    core for curate-tiny) with identical maths.
    """
    kw = dict(lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
    if device.type in ("cpu", "cuda"):
        try:
            return torch.optim.AdamW(groups, fused=True, **kw)
        except (RuntimeError, TypeError):  # older torch without a fused kernel for this device
            pass
    return torch.optim.AdamW(groups, **kw)


def _all_reduce_mean_grads(params: list, world: int) -> None:
    import torch.distributed as dist

    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _check_resume_settings(ckpt: dict, cfg: TrainConfig) -> None:
    """TrainError when the checkpoint was trained with other RESUME_KEYS settings than `cfg`."""
    old = ckpt.get("config") or {}
    diff = [k for k in RESUME_KEYS if k in old and old[k] != getattr(cfg, k)]
    if diff:
        raise TrainError("--resume with different settings: " + ", ".join(
            f"{k} {old[k]!r} -> {getattr(cfg, k)!r}" for k in diff))


def _already_complete(cfg: TrainConfig, latest, out) -> Optional[dict]:
    """The finished run's summary (marked "already_complete") when --resume finds a final checkpoint, else None.

    Why: resuming a finished run used to run zero steps and rewrite summary.json with null losses, which
    then broke every report that read it (and `curate experiment`, which reuses the folder). A finished
    run is left exactly as it is. A final checkpoint without summary.json (killed between the two writes)
    falls through, and the zero-step run writes the summary from the checkpoint.
    """
    ckpt = checkpoints.load(latest, mmap=True)
    _check_resume_settings(ckpt, cfg)
    summary = out / "summary.json"
    if not ckpt.get("final") or not summary.is_file():
        return None
    try:
        done = json.loads(summary.read_text())
    except ValueError:
        return None
    return {**done, "already_complete": True, "rank": int(os.environ.get("RANK", "0"))}


def _too_few(usable: int, batch_size: int, shared: str, skipped: Counter) -> str:
    """The refusal for shards whose usable samples do not fill one batch (each batch would repeat them).
    `shared`: whose share of the shards it was ("" for all of them)."""
    where = f"{shared}'s share of the shards" if shared else "the shards"
    return (f"only {usable} usable sample(s) in {where}, fewer than the batch size {batch_size}: every batch "
            f"would repeat them; skipped {dict(skipped) or 0}; give more (readable) data or a smaller --batch-size")


def _step1_loss(log) -> Optional[float]:
    """Step 1's loss from a training log (its first line when that is step 1), else None."""
    try:
        with open(log) as f:
            first = json.loads(f.readline() or "{}")
    except (OSError, ValueError):
        return None
    return first.get("loss") if first.get("step") == 1 else None


def _video_hint(cfg: TrainConfig, shards: list[str], skipped: Counter) -> str:
    """"; ... --video-frames" when image training skipped samples for want of an image on shards of videos."""
    if cfg.video_frames or not skipped.get("missing_image") or not holds_video(shards):
        return ""
    return "; the shards hold videos (.mp4 ...) and no images: train on them with --video-frames N (e.g. 4)"


def _open_run(cfg: TrainConfig, mirror, resume: bool, world: int) -> tuple[Optional[dict], list[str]]:
    """(the finished run's summary or None, the shards): the checks each rank makes before it trains.

    Why its own step: a rank can fail here alone (an output or a shard it cannot see), so train() agrees
    on the outcome (_agree) before the first collective rather than leaving the others in it."""
    if resume and not mirror.exists("checkpoint.pt"):
        raise TrainError(f"--resume: no checkpoint.pt in {cfg.output}")
    if not resume and mirror.exists("checkpoint.pt"):
        raise TrainError(f"{cfg.output} already holds a training run; use --resume or another --output")
    if resume:
        mirror.pull("checkpoint.pt", "log.jsonl", "summary.json")
        done = _already_complete(cfg, mirror.local / "checkpoint.pt", mirror.local)
        if done is not None:
            return done, []
    try:
        shards = expand_shards(cfg.shards)
    except DataError as err:
        raise TrainError(str(err)) from None
    if len(shards) < world:
        raise TrainError(f"{len(shards)} shard(s) for {world} ranks: every rank needs at least one shard")
    return None, shards


def _next_batch(loader, skipped: Counter, cfg: TrainConfig, shards: list[str], shared: str, step: int,
                total_steps: int):
    """This rank's next (images, texts), its skips added to `skipped`; TrainError when its share holds fewer
    usable samples than one batch or has run out (the dataset's end-of-stream reports, data.TrainBatches)."""
    try:
        images, texts, delta = next(loader)
        while images is None:  # a worker's final skip report
            skipped.update(delta)
            if isinstance(texts, str):  # ... with a refusal (a truncated shard)
                raise TrainError(texts)
            if texts is not None:  # ... with the count of a share smaller than one batch
                raise TrainError(_too_few(texts, cfg.batch_size, shared, skipped) + _video_hint(cfg, shards, skipped))
            images, texts, delta = next(loader)
    except StopIteration:
        raise TrainError(f"the shards ran out of usable samples at step {step}/{total_steps}: "
                         f"skipped {dict(skipped) or 0}; " + (_video_hint(cfg, shards, skipped)[2:] or
                                                              "empty, corrupt or unlabelled shards?")) from None
    skipped.update(delta)
    return images, texts


@storage.fetch_session()  # one per training (or the experiment's): a shard with no version is read as one copy
def train(cfg: TrainConfig, resume: bool = False, on_log: Optional[Callable[[dict], None]] = None) -> dict:
    """Train to cfg.samples_seen; return the summary (also written to OUTPUT/summary.json).

    Under DDP every rank fails together: each point where one rank can fail alone ends in _agree."""
    cfg.validate()
    import open_clip

    mirror = storage.Mirror(cfg.output)  # a remote output (s3://...) is written from a local folder, file by file
    out = mirror.local
    latest = out / "checkpoint.pt"
    rank, world, local_rank = _dist()
    if world > 1:
        _join_rank0_session()  # a collective no rank can have failed before: every rank reads rank 0's copies
    done, failed = None, None
    try:
        done, shards = _open_run(cfg, mirror, resume, world)
    except Exception as err:  # noqa: BLE001 - agreed on below, then raised on every rank
        failed = err
    _agree(failed, rank, world)
    if done is not None:
        return done

    try:
        workers = max(0, min(cfg.workers, len(shards) // world))
        device = resolve_device(cfg.device, local_rank, torch.cuda.is_available())
        if device.type == "cuda":
            torch.cuda.set_device(device)
            torch.backends.cuda.matmul.allow_tf32 = True
        if cfg.threads and device.type == "cpu":
            torch.set_num_threads(cfg.threads)
        bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")

        _seed_all(cfg.seed + rank)
        model, preprocess_train, _ = open_clip.create_model_and_transforms(cfg.model)
        tokenizer = open_clip.get_tokenizer(cfg.model)
        loss_fn = ContrastiveLoss(cfg.loss, rank, world)
        with torch.no_grad():
            model.logit_scale.fill_(ContrastiveLoss.init_logit_scale(cfg.loss))
        model.to(device)
        loss_fn.to(device)
        extra = [p for p in loss_fn.parameters()]
        opt = make_optimizer(param_groups(model, extra, cfg.weight_decay), cfg, device)

        global_batch = cfg.batch_size * world
        total_steps = max(1, cfg.samples_seen // global_batch)
        step = 0
        skipped: Counter = Counter()
        if resume:
            ckpt = checkpoints.load(latest)  # (its settings were checked by _already_complete)
            model.load_state_dict(checkpoints.strip_module(ckpt["state_dict"]))
            opt.load_state_dict(ckpt["optimizer"])
            if ckpt.get("loss_state"):
                loss_fn.load_state_dict(ckpt["loss_state"])
            step = int(ckpt["step"])
            skipped.update(ckpt.get("skipped") or {})
            torch.set_rng_state(ckpt["torch_rng"]) if "torch_rng" in ckpt else None
            ckpt = {k: v for k, v in ckpt.items() if k in ("first_loss", "last_loss")}  # free the tensors
    except Exception as err:  # noqa: BLE001 - agreed on below, then raised on every rank
        failed = err
    _agree(failed, rank, world)  # before DDP's first collective (its parameter broadcast)

    train_model = model
    if world > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[local_rank] if device.type == "cuda" else None)
    if cfg.compile:
        train_model = torch.compile(train_model)

    # A resumed run draws a fresh, seeded data order (passes numbered from the resumed step), so it
    # does not replay the batches it already saw; the step, optimiser and schedule continue exactly.
    dataset = TrainBatches(shards, preprocess_train, tokenizer, cfg.batch_size, seed=cfg.seed,
                           shuffle_buffer=cfg.shuffle_buffer, start_pass=step, recaption_prob=cfg.recaption_prob,
                           video_frames=cfg.video_frames)
    loader = iter(make_loader(dataset, workers))
    is_main = rank == 0
    log_f = None
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps({**asdict(cfg), "world_size": world, "workers_used": workers,
                                                     "shards_resolved": len(shards)}, indent=1))
        log_f = open(out / "log.jsonl", "a" if resume else "w")

    def payload(final: bool) -> dict:
        return {"step": step, "samples_seen": step * global_batch, "epoch": step, "name": cfg.model,
                "state_dict": checkpoints.strip_module(model.state_dict()), "optimizer": opt.state_dict(),
                "loss_state": loss_fn.state_dict() if cfg.loss == "siglip" else {},
                "config": {k: v for k, v in asdict(cfg).items() if k != "extra"}, "skipped": dict(skipped),
                "total_steps": total_steps, "final": final, "torch_rng": torch.get_rng_state(),
                "first_loss": first_loss, "last_loss": last_loss}

    t_start = time.perf_counter()
    win_t, win_wait, win_n, win_loss = time.perf_counter(), 0.0, 0, []
    total_wait, steps_run = 0.0, 0
    first_loss = last_loss = None
    if resume:  # the run's own step-1 and latest losses, not this process's first step
        first_loss, last_loss = ckpt.get("first_loss"), ckpt.get("last_loss")
        if first_loss is None:  # a checkpoint from before they were kept: step 1 is always logged alone
            first_loss = _step1_loss(out / "log.jsonl")
    # an error of this rank's last step (its loss, rank 0's log or checkpoint), agreed on with the next batch
    pending: Optional[BaseException] = None
    shared = "a data loader worker" if workers > 1 else "this rank" if world > 1 else ""
    model.train()
    while step < total_steps:
        t0 = time.perf_counter()
        if pending is None:
            try:
                images, texts = _next_batch(loader, skipped, cfg, shards, shared, step, total_steps)
            except Exception as err:  # noqa: BLE001 - agreed on below, then raised on every rank
                pending = err
        _agree(pending, rank, world)
        wait = time.perf_counter() - t0
        win_wait += wait
        total_wait += wait
        images = images.to(device, non_blocking=True)
        texts = texts.to(device, non_blocking=True)
        lr = lr_at(step, cfg.lr, cfg.warmup, total_steps)
        for g in opt.param_groups:
            g["lr"] = lr
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn.from_output(train_model(images, texts))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if world > 1 and extra:  # loss parameters (SigLIP's bias) live outside DDP: average them by hand
            _all_reduce_mean_grads(extra, world)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        step += 1
        steps_run += 1
        win_n += images.shape[0]
        lv = float(loss.detach())
        if not math.isfinite(lv):
            pending = TrainError(f"loss is {lv} at step {step}; lower --lr or check the data")
            continue
        win_loss.append(lv)
        first_loss = lv if first_loss is None else first_loss
        last_loss = lv
        try:
            if step % cfg.log_every == 0 or step == total_steps or step == 1:
                now = time.perf_counter()
                rec = {"step": step, "samples_seen": step * global_batch, "loss": float(np.mean(win_loss)),
                       "loss_steps": len(win_loss), "lr": lr,
                       "samples_per_s": win_n * world / max(now - win_t, 1e-9),
                       "data_wait_frac": win_wait / max(now - win_t, 1e-9),
                       "logit_scale": float(model.logit_scale.detach().exp()), "skipped": dict(skipped),
                       "elapsed_s": now - t_start}
                if is_main:
                    log_f.write(json.dumps(rec) + "\n")
                    log_f.flush()
                    if on_log:
                        on_log(rec)
                win_t, win_wait, win_n, win_loss = now, 0.0, 0, []
            if is_main and cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < total_steps:
                kept = checkpoints.save(out / "checkpoints" / f"step_{step:08d}.pt", payload(False))
                checkpoints.save(latest, payload(False))
                log_f.flush()
                mirror.push(kept, latest, out / "log.jsonl")  # each object whole; the latest checkpoint before its log
        except Exception as err:  # noqa: BLE001 - agreed on with the next batch (or after the last step)
            pending = err
    _agree(pending, rank, world)  # the last step's loss and writes

    elapsed = time.perf_counter() - t_start
    if world > 1:
        import torch.distributed as dist

        keys = ("shard_error", "missing_image", "missing_text", "image_decode_error")
        t = torch.tensor([skipped.get(k, 0) for k in keys], dtype=torch.long, device=device)
        dist.all_reduce(t)
        skipped = Counter({k: int(v) for k, v in zip(keys, t.tolist()) if v})
    summary = {"model": cfg.model, "steps": step, "total_steps": total_steps, "samples_seen": step * global_batch,
               "batch_size": cfg.batch_size, "world_size": world, "workers": workers, "device": str(device),
               "precision": "bf16" if bf16 else "fp32",
               # single-step losses, both of the whole run (a resumed run keeps step 1's); log.jsonl's "loss"
               # is the mean over its "loss_steps" steps since the previous line
               "first_loss": first_loss, "first_loss_step": 1, "final_loss": last_loss, "final_loss_step": step,
               "skipped": dict(skipped), "skipped_total": int(sum(skipped.values())),
               "steps_this_run": steps_run, "seconds": elapsed,
               "samples_per_s": steps_run * global_batch / max(elapsed, 1e-9),
               "data_wait_frac": total_wait / max(elapsed, 1e-9), "checkpoint": mirror.url("checkpoint.pt"),
               "rank": rank, "model_digest": checkpoints.digest(model.state_dict())}
    if is_main:
        try:
            checkpoints.save(latest, payload(True))
            atomic.write_bytes(out / "summary.json", json.dumps(summary, indent=1).encode())  # whole or absent
            log_f.close()
            mirror.push(latest, out / "log.jsonl", out / "config.json", out / "summary.json")  # summary.json: done
        except Exception as err:  # noqa: BLE001 - agreed on below, then raised on every rank
            failed = err
    _agree(failed, rank, world)  # no rank returns before rank 0's checkpoint and summary are on disk
    return summary
