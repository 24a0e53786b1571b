"""CapFilt vs filter-only vs recaption-only at equal samples seen (issue 18 item 3, BLIP's comparison).

The claim to test: filtering *both* the web caption and a synthetic one (CapFilt) gives better training
pairs than filtering the web captions alone or replacing every caption with a synthetic one. Steps:

1. A demo corpus with a clean seed split, an eval and a validation split (default: the held-out-noise
   corpus of examples/train_curated_vs_raw.py, whose caption noise no stage was written against).
2. The filter CLIP (curate-tiny-32 on the seed split, as `curate demo`'s, cached in CORPUS/filter) and a
   captioner (curate-tiny-coca on the seed split), both trained here; nothing is downloaded.
3. **scored**: `image_text_capfilt` over the corpus (served on 127.0.0.1) with both bars at -1, so every
   sample keeps both captions and both scores. The cut T is the 70th percentile of the *original*
   captions' scores (DataComp's fixed top-30% CLIP cut, not a rate matched to the planted noise).
4. Three arms from the same downloads, the same stages up to the captions, the same filter:
   - **capfilt**: `image_text_capfilt` with both bars at T (keep the passing captions; a sample
     whose two captions both pass trains on either, `--recaption-prob capfilt=0.5`);
   - **filter_only**: `curate refilter scored --where "clip_score >= T"`, trained on the web captions;
   - **recaption_only**: every scored sample, trained on its synthetic caption (`--recaption-prob 1`).
5. `curate experiment` (5 paired seeds, primary metrics named up front, verdicts from paired t intervals
   and a bootstrap over eval examples), comparisons capfilt - filter_only and capfilt - recaption_only.
   The lr and budget are the ones chosen on the validation split by the curated-vs-raw experiment on the
   same corpus (`--lr`, `--samples-seen`; a `--sweep` here would choose them again on valid/).

    nice -n 10 python examples/capfilt_experiment.py --corpus examples/out/heldout_corpus \\
        --results examples/results/capfilt_experiment
    python examples/capfilt_experiment.py --out /tmp/cx --corpus /tmp/cx/corpus --samples 120 --eval-n 64 \\
        --filter-samples-seen 64 --coca-samples-seen 64 --samples-seen 32 --seeds 1   # the plumbing only

What it does not show: tiny models on synthetic shapes; a captioner trained on the same clean seed split
as the filter, so its captions are in the filter's own vocabulary (BLIP's captioner and filter were
fine-tuned from one pretrained model too). "No detectable difference" is not equality: the intervals
say how large a difference the run could have missed.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

from _prepare import curate_cmd, ensure_validation

ARMS = ("capfilt", "filter_only", "recaption_only")
CUT_QUANTILE = 0.7  # keep the top 30% of original captions by score: DataComp's fixed cut


def ensure_corpus(a) -> Path:
    """The given corpus (generated there with --samples / --eval-n when missing), with its valid/ split."""
    from curate.demo.corpus import generate_corpus

    corpus = Path(a.corpus)
    if not (corpus / "corpus.json").is_file():
        generate_corpus(corpus, a.samples, seed=0, eval_n=a.eval_n, workers=1, noise_mode=a.noise)
    ensure_validation(corpus, a.valid_n)
    return corpus


def models(corpus: Path, out: Path, a) -> tuple[Path, Path]:
    """(filter CLIP, captioner) trained on the corpus' clean seed split; reused when already there."""
    from capfilt_bootstrap import train_clip

    from curate.demo.filter import ensure_filter

    over = {"samples_seen": a.filter_samples_seen} if a.filter_samples_seen else {}
    filt = ensure_filter(corpus, threads=a.threads, **over)
    coca = Path(a.coca) if a.coca else train_clip([str(corpus / "seed")], out / "coca", a, model="curate-tiny-coca",
                                                  loss="coca", samples_seen=a.coca_samples_seen)
    return filt, coca


def capfilt_runs(corpus: Path, out: Path, filt: Path, coca: Path) -> dict:
    """scored (both bars at -1), then capfilt with both bars at T; returns {"cut": T, runs...}."""
    from capfilt_bootstrap import capfilt_run

    scored = capfilt_run(corpus, out / "scored", coca, filt, argparse.Namespace(min_score=-1.0, min_recaption_score=-1.0))
    cut = original_score_cut(scored)
    capfilt = capfilt_run(corpus, out / "capfilt", coca, filt, argparse.Namespace(min_score=cut, min_recaption_score=cut))
    filter_only = out / "filter_only"
    if not (filter_only / "manifest.json").is_file():
        curate_cmd("refilter", str(scored), "--where", f"clip_score >= {cut!r}", "-o", str(filter_only))
    return {"cut": cut, "scored": scored, "capfilt": capfilt, "filter_only": filter_only}


def original_score_cut(run: Path) -> float:
    """The CUT_QUANTILE quantile of the original captions' scores over the rows caption_select saw."""
    import duckdb

    (cut,) = duckdb.connect().execute(
        f"SELECT quantile_cont(clip_score, {CUT_QUANTILE}) FROM read_parquet('{run / 'meta'}/*.parquet') "
        "WHERE clip_score IS NOT NULL").fetchone()
    return round(float(cut), 6)


def caption_mix(run: Path) -> dict:
    """Which captions caption_select kept in a run (original / recaption / both / dropped)."""
    import duckdb

    rows = duckdb.connect().execute(
        f"SELECT coalesce(caption_kept, 'none'), count(*) FROM read_parquet('{run / 'meta'}/*.parquet') "
        "WHERE clip_score IS NOT NULL GROUP BY ALL ORDER BY ALL").fetchall()
    return {k: n for k, n in rows}


def experiment(corpus: Path, out: Path, runs: dict, a) -> Path:
    exp = out / "experiment"
    arms = {"capfilt": runs["capfilt"], "filter_only": runs["filter_only"], "recaption_only": runs["scored"]}
    curate_cmd("experiment", *(f"{n}={arms[n] / 'shards'}" for n in ARMS),
               "--recaption-prob", "capfilt=0.5", "--recaption-prob", "recaption_only=1",
               *(x for m in a.primary for x in ("--primary", m)),
               "--eval-set", str(corpus / "eval"),
               "--lr", str(a.lr), "--samples-seen", str(a.samples_seen), "--seeds", str(a.seeds),
               "--model", a.model, "--batch-size", str(a.batch_size), "--warmup", str(a.warmup),
               "--threads", str(a.threads), "--workers", "0", "--output", str(exp))
    return exp


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="examples/out/capfilt_experiment")
    ap.add_argument("--corpus", default="examples/out/heldout_corpus")
    ap.add_argument("--samples", type=int, default=3000, help="corpus size when --corpus has to be generated")
    ap.add_argument("--noise", choices=("tuned", "held-out"), default="held-out")
    ap.add_argument("--eval-n", type=int, default=None, help="eval split size when the corpus is generated")
    ap.add_argument("--valid-n", type=int, default=400)
    ap.add_argument("--filter-samples-seen", type=int, default=None, help="default: the demo filter's settings")
    ap.add_argument("--coca", default=None, help="a trained curate-tiny-coca checkpoint (else trained on seed)")
    ap.add_argument("--coca-samples-seen", type=int, default=6000)
    ap.add_argument("--model", default="curate-tiny-32")
    ap.add_argument("--samples-seen", type=int, default=9600)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0, help="seed of the captioner's training")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--primary", nargs="+", default=["zeroshot_top1", "image_to_text_R@1"])
    ap.add_argument("--results", default=None, help="also copy results.json, report.md, plots and capfilt.json here")
    a = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    corpus = ensure_corpus(a)
    filt, coca = models(corpus, out, a)
    runs = capfilt_runs(corpus, out, filt, coca)
    exp = experiment(corpus, out, runs, a)
    summary = {"corpus": str(corpus), "cut_quantile": CUT_QUANTILE, "cut": runs["cut"],
               "caption_mix": {"scored": caption_mix(runs["scored"]), "capfilt": caption_mix(runs["capfilt"])},
               "manifests": {n: json.loads((runs[n] / "manifest.json").read_text())["counts"]
                             for n in ("scored", "capfilt", "filter_only")}}
    (out / "capfilt.json").write_text(json.dumps(summary, indent=1))
    results = json.loads((exp / "results.json").read_text())
    results["capfilt"] = summary
    (exp / "results.json").write_text(json.dumps(results, indent=1))
    if a.results:
        dest = Path(a.results)
        dest.mkdir(parents=True, exist_ok=True)
        for f in ["results.json", "report.md", *(p.name for p in exp.glob("*.png"))]:
            shutil.copy(exp / f, dest / f)
        shutil.copy(out / "capfilt.json", dest / "capfilt.json")
    print(json.dumps(summary, indent=1))
    return results


if __name__ == "__main__":
    main()
