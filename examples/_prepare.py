"""Shared preparation for the `curate experiment` examples: one demo corpus, curated several ways.

Both train_curated_vs_raw.py and train_clip_filtered_vs_unfiltered.py generate a demo corpus with their
own planted-noise rates, serve it on 127.0.0.1 and run `curate run` on the same URL list once per data
set, so only the recipe differs between the sets they compare.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def curate_cmd(*args: str) -> None:
    """Run the `curate` CLI of this Python environment (offline: nothing is fetched from the hub)."""
    exe = Path(sys.executable).with_name("curate")
    subprocess.run([str(exe), *args], check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def ensure_corpus(corpus: Path, samples: int, rates: dict[str, float], seed: int = 0) -> Path:
    """Generate the demo corpus into `corpus` unless it is already there (generation is deterministic)."""
    from curate.demo.corpus import generate_corpus

    if not (Path(corpus) / "corpus.json").is_file():
        generate_corpus(Path(corpus), samples, seed=seed, rates=rates, workers=2)
    return Path(corpus)


def curate_runs(corpus: Path, runs: dict[str, tuple[str, list[str]]], samples_per_shard: int = 500) -> None:
    """Serve `corpus` and `curate run RECIPE --output DIR ARGS` for each DIR: (RECIPE, ARGS) in `runs`."""
    from curate.demo.corpus import write_url_list
    from curate.demo.server import DemoServer

    with DemoServer(corpus) as server, tempfile.TemporaryDirectory() as tmp:
        urls = write_url_list(corpus, server.url, Path(tmp) / "urls.parquet")
        common = ["--input", str(urls), "--set", f"output.samples_per_shard={samples_per_shard}"]
        for out_dir, (recipe, extra) in runs.items():
            curate_cmd("run", recipe, "--output", str(out_dir), *common, *extra)


def experiment_args(ap: argparse.ArgumentParser) -> None:
    """The training settings both comparisons share: the ones that learn within minutes on 2 CPU cores."""
    ap.add_argument("--model", default="curate-tiny-32", help="curate-tiny-32 learns within minutes on 2 CPU cores")
    ap.add_argument("--samples-seen", type=int, default=25600)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core box)")


def run_experiment(a: argparse.Namespace, out: Path, corpus: Path, sets: list[str]) -> None:
    """`curate experiment NAME=OUT/NAME/shards ...` on the corpus' eval split with the shared settings."""
    curate_cmd("experiment", *(f"{name}={out / name / 'shards'}" for name in sets),
               "--eval-set", str(corpus / "eval"), "--samples-seen", str(a.samples_seen), "--seeds", str(a.seeds),
               "--model", a.model, "--batch-size", str(a.batch_size), "--lr", str(a.lr), "--warmup", str(a.warmup),
               "--threads", str(a.threads), "--output", str(out / "experiment"))
