"""Training throughput: `curate train` against open_clip_train on the same shards, model, batch and device.

    python bench/train.py --samples 2560 --batch-size 64 --workers 1

Both run as fresh subprocesses on the same demo seed-split shards with curate-tiny, fp32 on CPU (this
machine has no GPU). Steady-state samples/s skips the first `--skip` logged steps of each tool (model
warm-up). Also measures the data loader alone (curate's TrainBatches through a DataLoader, same
workers, no model), to show whether the loader is the bottleneck. Writes the "train" section of
bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, bench_env, update_results  # noqa: E402

PY = sys.executable


def make_shards(root: Path, n: int) -> list[str]:
    from curate.demo.corpus import generate_corpus

    if not (root / "seed").is_dir():
        generate_corpus(root, 2 * n, seed=0, eval_n=200, seed_n=n, workers=2)
    return sorted(str(p) for p in (root / "seed").glob("*.tar"))


def run_curate(shards, out: Path, a) -> dict:
    env = bench_env(HF_HUB_OFFLINE="1")
    if a.threads:
        env["OMP_NUM_THREADS"] = str(a.threads)  # the same as open_clip_train gets
    cmd = [PY, "-c", "from curate.cli import main; main()", "train", *shards, "--samples-seen", str(a.samples),
           "--batch-size", str(a.batch_size), "--workers", str(a.workers), "--log-every", "1", "--lr", "1e-3",
           "--warmup", "10", "--threads", str(a.threads), "-o", str(out)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    wall = time.perf_counter() - t0
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    steady = log[a.skip:]
    dt = steady[-1]["elapsed_s"] - log[a.skip - 1]["elapsed_s"]
    n = steady[-1]["samples_seen"] - log[a.skip - 1]["samples_seen"]
    return {"samples_per_s": n / dt, "wall_s": wall, "steps": log[-1]["step"],
            "data_wait_frac": sum(r["data_wait_frac"] for r in steady) / len(steady)}


def run_open_clip(shards, out: Path, a) -> dict:
    brace = shards[0] if len(shards) == 1 else "::".join(shards)
    cmd = [PY, "-m", "curate.train.open_clip_launch", "--model", "curate-tiny", "--dataset-type", "webdataset",
           "--train-data", brace, "--train-num-samples", str(a.samples), "--batch-size", str(a.batch_size),
           "--epochs", "1", "--workers", str(a.workers), "--lr", "1e-3", "--warmup", "10", "--device", "cpu",
           "--precision", "fp32", "--log-every-n-steps", "1", "--save-frequency", "1", "--logs", str(out),
           "--name", "b", "--beta2", "0.98", "--eps", "1e-6", "--wd", "0.1"]
    env = bench_env(HF_HUB_OFFLINE="1")
    if a.threads:
        env["OMP_NUM_THREADS"] = str(a.threads)  # open_clip_train has no thread flag; torch reads this
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    wall = time.perf_counter() - t0
    text = (out / "b" / "out.log").read_text()
    rates = [float(x) for x in re.findall(r"Batch \(t\): [0-9.]+, ([0-9.]+)/s,", text)]
    data_t = [float(x) for x in re.findall(r"Data \(t\): ([0-9.]+)", text)]
    batch_t = [float(x) for x in re.findall(r"Batch \(t\): ([0-9.]+),", text)]
    steady = rates[a.skip:]
    # rates are per-step instantaneous values; the harmonic mean is total samples / total time
    sps = len(steady) / sum(1 / r for r in steady)
    return {"samples_per_s": sps, "wall_s": wall, "steps": len(rates),
            "data_wait_frac": (data_t[-1] / batch_t[-1]) if batch_t else float("nan")}


def loader_only(shards, a) -> float:
    """Samples/s of curate's data pipeline alone (decode, preprocess, tokenise, batch), same workers."""
    import open_clip
    import torch

    from curate.train import configs  # noqa: F401
    from curate.train.data import TrainBatches, make_loader

    if a.threads:
        torch.set_num_threads(a.threads)
    _, pre, _ = open_clip.create_model_and_transforms("curate-tiny")
    tok = open_clip.get_tokenizer("curate-tiny")
    it = iter(make_loader(TrainBatches(shards, pre, tok, a.batch_size), a.workers))
    next(it)
    t0, n = time.perf_counter(), 0
    while n < a.samples:
        images, _, _ = next(it)
        n += images.shape[0]
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=2560)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip", type=int, default=3, help="logged steps excluded as warm-up")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved runs per tool; the best counts")
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    work = REPO / "bench" / "out" / "train"
    work.mkdir(parents=True, exist_ok=True)
    shards = make_shards(work / "corpus", 1000)
    load0 = os.getloadavg()[0]
    # Alternate the tools and keep each one's best run: the machine is shared, and the best of
    # interleaved runs is the estimate least distorted by other work.
    ocs, cus = [], []
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        for r in range(a.repeats):
            ocs.append(run_open_clip(shards, Path(tmp) / f"oc{r}", a))
            cus.append(run_curate(shards, Path(tmp) / f"cu{r}", a))
    oc = max(ocs, key=lambda x: x["samples_per_s"])
    cu = max(cus, key=lambda x: x["samples_per_s"])
    runs = ", ".join(f"{x['samples_per_s']:.1f}" for x in ocs) + " (open_clip_train) / " + \
        ", ".join(f"{x['samples_per_s']:.1f}" for x in cus) + " (curate)"
    lo = loader_only(shards, a)
    load = max(load0, os.getloadavg()[0])
    caveat = (f"**Not a reliable comparison**: the 1-minute load average was {load:.1f} on {os.cpu_count()} cores "
              "(other jobs), and single runs of the same tool varied by up to 3x; re-run on a quiet machine.\n\n"
              if load > (os.cpu_count() or 1) else "")
    body = f"""Command: `cd {REPO} && .venv/bin/python bench/train.py --samples {a.samples} --batch-size {a.batch_size} --workers {a.workers} --threads {a.threads}`

Both trainers: curate-tiny (64x64 ViT, patch 8), batch {a.batch_size}, {a.samples} samples ({a.samples // a.batch_size} steps), AdamW lr 1e-3, 10 warmup steps, fp32 on CPU, {a.workers} loader worker(s), {a.threads} torch thread(s), the same {len(shards)} shard(s) of the demo seed split (jpg ~165 px, resized by open_clip's train transform). Steady state excludes the first {a.skip} steps; best of {a.repeats} interleaved runs per tool (all runs: {runs} samples/s). Load average (1 min, max of start and end): {load:.1f} (other work on the machine during the run).

| tool | samples/s (steady) | data-wait fraction | wall s (incl. start-up) |
|---|---|---|---|
| open_clip_train | {oc['samples_per_s']:.1f} | {oc['data_wait_frac']:.3f} | {oc['wall_s']:.0f} |
| curate train | {cu['samples_per_s']:.1f} | {cu['data_wait_frac']:.3f} | {cu['wall_s']:.0f} |
| curate loader only (no model) | {lo:.1f} | - | - |

Ratio curate/open_clip_train: **{cu['samples_per_s'] / oc['samples_per_s']:.2f}** (target >= 1.0). Loader-only throughput is {lo / cu['samples_per_s']:.1f}x the training step throughput, so the loader is {'not ' if lo > 1.5 * cu['samples_per_s'] else ''}the bottleneck.

Where the time goes (one core, curate-tiny, batch 64, quiet machine): forward ~210 ms, backward ~420 ms, AdamW ~54 ms with torch's default foreach kernel (open_clip_train) vs ~18 ms fused (curate train uses `fused=True`); the 6.3M-parameter token embedding makes the optimiser step that large. Data loading runs in the loader worker and overlaps the step (data-wait fraction above).

{caveat}**No GPU machine was lent for this task**: there is no GPU number here. On this CPU, bf16 autocast is *slower* than fp32 (57 vs 94 samples/s, one core) and, without `ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16`, dies with SIGILL: the CPU advertises AMX but the VM does not enable it. DDP (gloo, 2 ranks) is tested on CPU (tests/train/test_ddp.py).
"""
    print(body)
    if not a.no_write:
        update_results("train", body, ["curate", "torch", "open_clip_torch", "webdataset"])


if __name__ == "__main__":
    main()
