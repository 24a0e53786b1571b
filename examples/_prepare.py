"""Shared preparation for the `curate experiment` examples: one demo corpus, curated several ways.

Both train_curated_vs_raw.py and train_clip_filtered_vs_unfiltered.py generate a demo corpus with their
own planted-noise rates, serve it on 127.0.0.1 and run `curate run` on the same URL list once per data
set, so only the recipe differs between the sets they compare. The experiment protocol they share:
a random subset of the uncurated set with the curated set's size as a control arm, 5 seeds paired by
seed, primary metrics named before the runs, the learning rate chosen on a validation split the
corpus generator never wrote (`valid/`, its own random stream, so neither the eval nor the seed split),
and a verdict per metric from paired intervals (t over seeds, bootstrap over eval examples).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def curate_cmd(*args: str) -> None:
    """Run the `curate` CLI of this Python environment (offline: nothing is fetched from the hub)."""
    exe = Path(sys.executable).with_name("curate")
    subprocess.run([str(exe), *args], check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def ensure_corpus(corpus: Path, samples: int, rates: dict[str, float] | None, seed: int = 0,
                  noise_mode: str = "tuned") -> Path:
    """Generate the demo corpus into `corpus` unless it is already there (generation is deterministic).

    noise_mode "held-out": the noise families the stages were not written against (curate.demo.heldout,
    its own rates; `rates` is then ignored)."""
    from curate.demo.corpus import generate_corpus

    if not (Path(corpus) / "corpus.json").is_file():
        generate_corpus(Path(corpus), samples, seed=seed, rates=None if noise_mode == "held-out" else rates,
                        workers=2, noise_mode=noise_mode)
    mode = json.loads((Path(corpus) / "corpus.json").read_text()).get("noise_mode", "tuned")
    if mode != noise_mode:
        raise SystemExit(f"{corpus} holds a {mode}-noise corpus, not {noise_mode}; give another --corpus")
    return Path(corpus)


VALID_STREAM = 303  # the corpus uses 101 (eval) and 202 (seed): a third stream draws other images


def ensure_validation(corpus: Path, n: int = 400) -> Path:
    """A clean, balanced, labelled validation split beside eval/ (same renderer, its own random stream).

    Why: settings (the learning rate) are chosen on it, so the eval split only ever reports.
    """
    from curate.demo import splits

    valid = Path(corpus) / "valid"
    if not (valid / "classes.json").is_file():
        info = json.loads((Path(corpus) / "corpus.json").read_text())
        style = {"scale": info["shape_scale"]} if info.get("shape_scale") else None  # as the corpus' own splits
        splits.write_split(valid, n, info.get("seed", 0), VALID_STREAM, balanced=True, style=style)
        splits.write_classes(valid / "classes.json")
    return valid


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
    ap.add_argument("--samples-seen", default="25600",
                    help="training budget(s); several are a sweep chosen on the validation split with the lr")
    ap.add_argument("--seeds", type=int, default=5, help="seeds per data set, paired by seed (the protocol asks >= 5)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", default="1e-3,2e-3,4e-3",
                    help="learning rate(s); several are a sweep chosen on the validation split (never the eval split)")
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--primary", nargs="+", default=["zeroshot_top1", "image_to_text_R@1"],
                    help="primary metrics, named before the runs")
    ap.add_argument("--valid-n", type=int, default=400, help="validation split size")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core box)")
    ap.add_argument("--noise", choices=("tuned", "held-out"), default="tuned",
                    help="planted noise: this example's tuned rates, or the held-out families (curate.demo.heldout)")
    ap.add_argument("--corpus", default=None, help="corpus folder (default OUT/corpus); several examples may share one")
    ap.add_argument("--arms", default=None,
                    help="NAME[,NAME]: only train these data sets (parallel workers); rerun without it for the report")
    ap.add_argument("--results", default=None,
                    help="also copy results.json, report.md, plots, curate run manifests and corpus.json here")


def run_experiment(a: argparse.Namespace, out: Path, corpus: Path, sets: list[str],
                   controls: dict[str, str] | None = None, extra: dict[str, str] | None = None) -> None:
    """`curate experiment` on the corpus' eval split: SETS (OUT/NAME/shards; the first is compared with every
    other arm), `controls` {name: "OF:SIZE_OF"} random subsets, `extra` {name: shards} (e.g. the trusted split)."""
    valid = ensure_validation(corpus, a.valid_n)
    lrs = [x for x in str(a.lr).split(",") if x]
    budgets = [x for x in str(a.samples_seen).split(",") if x]
    lr_args = ["--sweep", f"lr={','.join(lrs)}"] if len(lrs) > 1 else ["--lr", lrs[0]]
    # one budget is fixed up front; several are chosen on the validation split like the lr (equal for every arm)
    lr_args += ["--sweep", f"samples_seen={','.join(budgets)}"] if len(budgets) > 1 else []
    curate_cmd("experiment", *(f"{name}={out / name / 'shards'}" for name in sets),
               *(f"{name}={shards}" for name, shards in (extra or {}).items()),
               *(x for name, spec in (controls or {}).items() for x in ("--random-subset", f"{name}={spec}")),
               *(x for m in a.primary for x in ("--primary", m)),
               "--eval-set", str(corpus / "eval"), "--validation-set", str(valid), *lr_args,
               "--samples-seen", budgets[-1], "--seeds", str(a.seeds),
               "--model", a.model, "--batch-size", str(a.batch_size), "--warmup", str(a.warmup),
               "--threads", str(a.threads), "--ground-truth", str(corpus), "--output", str(out / "experiment"),
               *(["--arms", a.arms] if a.arms else []))
    if not a.arms:
        collect_results(out, corpus, sets, a.results)


def collect_results(out: Path, corpus: Path, sets: list[str], dest: str | None) -> None:
    """Copy what a claim rests on into `dest`: the experiment's results.json, report.md and plots, the
    manifest.json of every curate run that made an arm, and the corpus summary (its noise mode and counts)."""
    import shutil

    if not dest:
        return
    dest_p = Path(dest)
    dest_p.mkdir(parents=True, exist_ok=True)
    exp = out / "experiment"
    for f in ["results.json", "report.md", *(p.name for p in exp.glob("*.png"))]:
        shutil.copy(exp / f, dest_p / f)
    for name in sets:
        shutil.copy(out / name / "manifest.json", dest_p / f"manifest_{name}.json")
    shutil.copy(Path(corpus) / "corpus.json", dest_p / "corpus.json")
