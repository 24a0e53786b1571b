"""TL;DR reduction proof: `reduce` to 25% vs the full curated set vs a random 25% subset, at equal samples seen.

The claim to test (issue 18 item 3, after TL;DR, Wang et al. 2023): a representative quarter trains about
as well as the whole curated set (reduced ~ full) and better than a random quarter (reduced > random).
Steps:

1. The image-text demo corpus (`curate demo`'s, 3,000 samples, its planted noise) and its filter CLIP
   (curate-tiny-32 on the clean seed split), both cached in ~/.cache/curate and reused.
2. Two `curate run`s over the same URL list, served on 127.0.0.1, from the shipped
   pipelines/image_text_reduce.yaml without its recaption step (TL;DR's second step needs a captioner;
   not part of this test): **full** stops after `clip_score` (embeddings), **reduced** adds
   `reduce` (fraction 0.25, the recipe's clusters, allocation and rank_by).
3. `curate experiment` (in process): reduced, full, and **random** = a random subset of full with reduced's
   size (drawn per seed); comparisons reduced - full, reduced - random, full - random; seeds paired;
   verdicts from a t interval over seeds and a bootstrap interval over eval examples. Settings are fixed
   before the runs (the image-text examples' lr 2e-3), none chosen on the eval split.

    nice -n 15 python examples/reduce_experiment.py --out examples/out/reduce
    python examples/reduce_experiment.py --out examples/out/reduce --corpus examples/out/heldout_corpus \\
        --samples-seen 9600 --lr 1e-3 --warmup 10     # the committed run (held-out-noise corpus)
    python examples/reduce_experiment.py --out /tmp/rx --samples 300 --samples-seen 64 --seeds 1 \\
        --filter-samples-seen 64 --corpus /tmp/rx/corpus --eval-n 64     # the plumbing only (what the test runs)

"No detectable difference" between reduced and full is not a proof that they are equal: the intervals
say how large a difference this run could have missed. Writes OUT/experiment/results.json and report.md;
the committed copies are in examples/results/reduce/.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import yaml


def recipes(out: Path, filter_ckpt: Path, a) -> dict[str, Path]:
    """full / reduced recipe files derived from the shipped image_text_reduce.yaml (recaption removed)."""
    from curate.recipe import find_recipe

    doc = yaml.safe_load(find_recipe("image_text_reduce").read_text())
    stages = [s for s in doc["stages"] if "recaption" not in s]
    for s in stages:
        if "clip_score" in s:
            s["clip_score"]["checkpoint"] = str(filter_ckpt)
            s["clip_score"]["device"] = "cpu"
        if "reduce" in s:
            s["reduce"]["fraction"] = a.fraction
    doc["output"]["caption_policy"] = "original"
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, keep in (("full", [s for s in stages if "reduce" not in s]), ("reduced", stages)):
        paths[name] = out / f"{name}.yaml"
        paths[name].write_text(yaml.safe_dump({**doc, "name": f"reduce-proof-{name}", "stages": keep}, sort_keys=False))
    return paths


def curate_runs(corpus: Path, out: Path, paths: dict[str, Path], ray_address: str | None) -> dict[str, Path]:
    from _ray_local import complete, shared_ray

    from curate.demo.corpus import write_url_list
    from curate.demo.server import DemoServer
    from curate.recipe import load_recipe
    from curate.runner import Runner

    runs = {n: out / f"{n}_run" for n in paths}
    todo = [n for n, r in runs.items() if not complete(r)]
    if todo:
        with shared_ray(ray_address) as address, DemoServer(corpus) as server, tempfile.TemporaryDirectory() as tmp:
            urls = write_url_list(corpus, server.url, Path(tmp) / "urls.parquet")
            for n in todo:
                Runner(load_recipe(str(paths[n]), (), input_path=str(urls), output_path=str(runs[n])),
                       ray_address=address).start()
    return runs


def kept_counts(run: Path) -> dict:
    """Rows kept, and rows dropped per (stage, reason), from the run's metadata."""
    import duckdb

    rows = duckdb.connect().execute(
        f"SELECT status, stage, reason, count(*) FROM read_parquet('{run / 'meta'}/*.parquet') GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    return {"kept": sum(n for s, _, _, n in rows if s == "ok"),
            "not_kept": {f"{s}/{st}/{r}": n for s, st, r, n in rows if s != "ok"}}


def corpus_of(a) -> Path:
    """The cached demo corpus, or (with --corpus) one generated there with --eval-n eval samples."""
    from curate.demo.corpus import generate_corpus
    from curate.demo.run import ensure_corpus

    if not a.corpus:
        return ensure_corpus(a.samples, 0)
    root = Path(a.corpus)
    if not (root / "_COMPLETE").is_file():
        generate_corpus(root, a.samples, seed=0, eval_n=a.eval_n, workers=1)
        (root / "_COMPLETE").write_text("ok\n")
    return root


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="examples/out/reduce")
    ap.add_argument("--samples", type=int, default=3000, help="demo corpus size (3000 = `curate demo`'s, cached)")
    ap.add_argument("--corpus", default=None, help="corpus folder (default: the demo cache's for --samples)")
    ap.add_argument("--eval-n", type=int, default=None, help="with --corpus: eval split size")
    ap.add_argument("--filter-samples-seen", type=int, default=None,
                    help="filter CLIP training (default: the demo filter's settings, cached)")
    ap.add_argument("--fraction", type=float, default=0.25)
    ap.add_argument("--model", default="curate-tiny-32")
    ap.add_argument("--samples-seen", type=int, default=3200)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ray-address", default=None, help="a running Ray (default: start a local one)")
    ap.add_argument("--primary", nargs="+", default=["zeroshot_top1", "image_to_text_R@1"])
    a = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(a.threads)  # evaluations outside `curate train` too: extra threads only spin on a busy box
    from curate.demo.filter import ensure_filter
    from curate.train.experiment import Arm, ExperimentSpec, run_experiment
    from curate.train.loop import TrainConfig

    out = Path(a.out)
    corpus = corpus_of(a)
    over = {"samples_seen": a.filter_samples_seen} if a.filter_samples_seen else {}
    filter_ckpt = ensure_filter(corpus, threads=a.threads, **over)
    runs = curate_runs(corpus, out, recipes(out / "recipes", filter_ckpt, a), a.ray_address)
    arms = {"reduced": Arm("reduced", [str(runs["reduced"] / "shards")]), "full": Arm("full", [str(runs["full"] / "shards")]),
            "random": Arm("random", random_subset_of="full", size_of="reduced")}
    spec = ExperimentSpec(arms=arms, eval_set=str(corpus / "eval"), seeds=a.seeds, primary_metrics=list(a.primary),
                          compare=[("reduced", "full"), ("reduced", "random"), ("full", "random")])
    base = TrainConfig(shards=[], output="", model=a.model, samples_seen=a.samples_seen, batch_size=a.batch_size,
                       lr=a.lr, warmup=a.warmup, workers=0, threads=a.threads, log_every=20, device="cpu")
    results = run_experiment(spec, str(out / "experiment"), base)
    results["reduce"] = {"corpus": str(corpus), "fraction": a.fraction, "runs": {n: kept_counts(r) for n, r in runs.items()},
                         "load_average": [round(x, 1) for x in os.getloadavg()]}
    (out / "experiment" / "results.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results["reduce"], indent=1))
    return results


if __name__ == "__main__":
    main()
