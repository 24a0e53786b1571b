"""DataComp-small-style protocol on one GPU: curated vs raw vs a random subset of raw, 5 paired seeds, intervals.

The `curate experiment` protocol (curate/train/experiment.py; docs/training_and_experiments.md) at ViT-B/32
scale: the model and the samples seen are fixed, only the data varies. Arms:
- curated: your curated shards (a curate run's output/shards, local or s3),
- raw: the uncurated pool the curated set was cut from,
- random: a random subset of raw with curated's size, drawn per seed (so a gain is not "fewer samples"),
- trusted (optional, --trusted): the trusted-only set a filter network was trained on.
Seeds paired by seed (default 5), primary metrics named before the runs, a t interval over seeds and a
bootstrap interval over eval examples per metric, settings chosen on --validation-set only (--sweep-lr).

    # one GPU, DataComp-small sample counts (12.8M samples seen per run, batch 4096, ViT-B-32, bf16)
    python examples/datacomp_small_protocol.py --curated cur/shards --raw pool/shards \
        --eval-set imagenet_val_curate --validation-set imagenet_valsplit_curate -o dcs
    # a shorter GPU run of the same protocol (what fits a lent GPU for a few minutes)
    python examples/datacomp_small_protocol.py --scale gpu-smoke ...
    # several GPUs: the same script under torchrun (rank 0 runs the experiment, every rank trains)
    torchrun --nproc_per_node 8 examples/datacomp_small_protocol.py ...
    # the same code at toy size on CPU (tests/train/test_datacomp_protocol.py)
    python examples/datacomp_small_protocol.py --scale cpu-tiny ...

Eval set: curate's format (WebDataset tars with a label per sample and classes.json with class names and
prompt templates), e.g. ImageNet-1k val converted once; DataComp's 38-task suite is not reimplemented
(evaluate the checkpoints with DataComp's own evaluation for that). Nothing is downloaded here.

Per run the script records samples/s and `data_wait_frac` (the share of wall time the GPU waited for the
loader) from the run's summary.json, and flags runs whose wait exceeds 10%: their throughput is the loader's,
not the GPU's (raise --workers). Outputs: OUT/experiment/ (results.json, report.md/.html, runs/) and
OUT/protocol.json (settings, per-run throughput and data wait, the verdicts).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

# DataComp small: 12.8M pool, 12.8M samples seen, ViT-B/32, global batch 4096, lr 5e-4, 500 warmup steps,
# wd 0.2, beta2 0.98 (DataComp's training config for the small scale).
SCALES = {
    "datacomp-small": dict(model="ViT-B-32", samples_seen=12_800_000, batch_size=4096, lr=5e-4, warmup=500,
                           weight_decay=0.2, beta2=0.98, log_every=50),
    "gpu-smoke": dict(model="ViT-B-32", samples_seen=131_072, batch_size=1024, lr=5e-4, warmup=20,
                      weight_decay=0.2, beta2=0.98, log_every=10),
    "cpu-tiny": dict(model="curate-tiny-32", samples_seen=64, batch_size=16, lr=1e-3, warmup=1,
                     weight_decay=0.1, beta2=0.98, log_every=1),
}
WAIT_FLAG = 0.10  # data_wait_frac above this: the run measured the loader, not the model


def default_workers(world: int) -> int:
    """Loader processes per rank: the cores this rank can use, one left for the training process."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    return max(1, cores // max(1, world) - 1)


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--curated", nargs="+", required=True, help="curated shards (files, folders, globs, s3://)")
    ap.add_argument("--raw", nargs="+", required=True, help="uncurated shards the curated set came from")
    ap.add_argument("--trusted", nargs="+", help="optional trusted-only arm (the filter network's training set)")
    ap.add_argument("--eval-set", required=True, help="labelled eval set (tars + classes.json); only reports")
    ap.add_argument("--validation-set", help="labelled validation split for --sweep-lr (never the eval set)")
    ap.add_argument("--sweep-lr", type=float, nargs="+", help="learning rates to choose from on the validation set")
    ap.add_argument("--scale", choices=sorted(SCALES), default="datacomp-small")
    ap.add_argument("--samples-seen", type=int, help="override the scale's samples seen per run")
    ap.add_argument("--batch-size", type=int, help="override the scale's GLOBAL batch (split over torchrun ranks)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--primary", nargs="+", default=["zeroshot_top1"], help="primary metrics, fixed before the runs")
    ap.add_argument("--workers", type=int, help="loader processes per rank (default: cores per rank - 1)")
    ap.add_argument("--precision", default="auto", help="auto: bf16 autocast on a GPU, fp32 on CPU")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("-o", "--out", default="examples/out/datacomp_small")
    return ap.parse_args(argv)


def build(a: argparse.Namespace, world: int):
    """(ExperimentSpec, base TrainConfig) for the chosen scale; the batch is global, as DataComp fixes it."""
    from curate.train.experiment import Arm, ExperimentSpec
    from curate.train.loop import TrainConfig, TrainError

    s = dict(SCALES[a.scale])
    if a.samples_seen:
        s["samples_seen"] = a.samples_seen
    global_batch = a.batch_size or s["batch_size"]
    if global_batch % world:
        raise TrainError(f"global batch {global_batch} does not split over {world} ranks")
    arms = {"curated": Arm("curated", shards=list(a.curated)), "raw": Arm("raw", shards=list(a.raw)),
            "random": Arm("random", random_subset_of="raw", size_of="curated")}
    compare = [("curated", "raw"), ("curated", "random")]
    if a.trusted:
        arms["trusted"] = Arm("trusted", shards=list(a.trusted))
        compare.append(("curated", "trusted"))
    spec = ExperimentSpec(arms=arms, eval_set=a.eval_set, seeds=a.seeds, primary_metrics=list(a.primary),
                          validation_set=a.validation_set, sweep={"lr": list(a.sweep_lr)} if a.sweep_lr else {},
                          compare=compare)
    base = TrainConfig(shards=[], output="", model=s["model"], samples_seen=s["samples_seen"],
                       batch_size=global_batch // world, lr=s["lr"], warmup=s["warmup"],
                       weight_decay=s["weight_decay"], beta2=s["beta2"], log_every=s["log_every"],
                       workers=a.workers if a.workers is not None else default_workers(world),
                       precision=a.precision, device=a.device, compile=a.compile,
                       shuffle_buffer=min(10_000, 4 * (global_batch // world)))
    return spec, base


def run_summary(results: dict) -> list[dict]:
    """Per run: samples/s, data-wait fraction, device and precision, and whether the loader limited it."""
    rows = []
    for r in results["runs"]:
        t = r["train"]
        rows.append({"set": r["set"], "seed": r["seed"], "device": t.get("device"), "precision": t.get("precision"),
                     "world_size": t.get("world_size"), "workers": t.get("workers"),
                     "samples_per_s": t["samples_per_s"], "data_wait_frac": t.get("data_wait_frac"),
                     "loader_bound": (t.get("data_wait_frac") or 0.0) > WAIT_FLAG})
    return rows


def main(argv: list[str] | None = None) -> dict:
    a = parse(argv)
    from curate.train.experiment import _verdicts, run_experiment
    from curate.train.loop import TrainError
    from curate.train.ranks import is_lead, rank_world

    world = rank_world()[1]
    out = Path(a.out)
    lead = is_lead()
    log = print if lead else (lambda m: None)
    try:
        spec, base = build(a, world)
        log(f"protocol {a.scale}: {base.model}, {base.samples_seen} samples seen per run, global batch "
            f"{base.batch_size * world} over {world} rank(s), {base.workers} loader workers per rank, "
            f"{len(spec.arms)} arms x {spec.seeds} seeds = {len(spec.arms) * spec.seeds} runs "
            f"({len(spec.arms) * spec.seeds * base.samples_seen:,} samples in all)")
        results = run_experiment(spec, str(out / "experiment"), base, log=log)
    except (TrainError, ValueError) as err:  # EvalError, DataError: all one-line user errors
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    runs = run_summary(results)
    protocol = {"scale": a.scale, "world_size": world, "settings": {k: v for k, v in asdict(base).items()
                                                                    if k not in ("shards", "output", "extra")},
                "global_batch": base.batch_size * world, "runs": runs, "verdicts": _verdicts(results),
                "results": str(out / "experiment" / "results.json")}
    if lead:
        (out / "protocol.json").write_text(json.dumps(protocol, indent=1))
        for r in runs:
            flag = "  <- loader-bound: raise --workers" if r["loader_bound"] else ""
            print(f"{r['set']} seed {r['seed']}: {r['samples_per_s']:.0f} samples/s on {r['device']} "
                  f"({r['precision']}), data_wait_frac {r['data_wait_frac']:.3f}{flag}")
        print("\n".join(protocol["verdicts"]))
        print(f"protocol: {out / 'protocol.json'}  report: {out / 'experiment' / 'report.md'}")
    return protocol


if __name__ == "__main__":
    main()
