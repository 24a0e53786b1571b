"""Curated vs raw at equal compute on the demo corpus: the validation loop end to end.

1. Generate a noisier demo corpus (more boilerplate alt-text, duplicates, tiny and extreme-aspect
   images than the default rates, so the effect shows at a CPU-sized budget).
2. Serve it on 127.0.0.1 and download it twice: `curate run image_text` (curated) and
   `curate run download_only --set download.image_size=64` (raw: everything that downloads).
3. `curate experiment curated=... raw=... --random-subset random=raw:curated --validation-set CORPUS/valid
   --sweep lr=... --primary ... --eval-set CORPUS/eval --seeds 5`: curated is compared with raw and with a
   random subset of raw of curated's size (drawn per seed), so a gain is not just "fewer samples,
   repeated more"; the learning rate is chosen on the validation split; verdicts come from paired
   intervals (examples/_prepare.py has the protocol).

    python examples/train_curated_vs_raw.py --prepare-only           # steps 1-2
    nice -n 15 python examples/train_curated_vs_raw.py --skip-prepare   # step 3

Reproducible: corpus seed 0, training seeds 0..4, selection seed 1000. No committed numbers come from
this version yet (the old README table came from an older recipe and was removed).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from _prepare import curate_runs, ensure_corpus, experiment_args, run_experiment

# Planted noise rates: what a web crawl without curation looks like, exaggerated.
RATES = {"boilerplate_caption": 0.20, "exact_duplicate": 0.15, "tiny_image": 0.06, "extreme_aspect": 0.06,
         "mismatched_caption": 0.05, "near_duplicate": 0.04, "http_404": 0.02, "http_500": 0.01,
         "corrupt_bytes": 0.01, "truncated_bytes": 0.01, "slow_ok": 0.0, "timeout": 0.0, "flaky": 0.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="examples/out/curated_vs_raw")
    ap.add_argument("--samples", type=int, default=4000, help="corpus size")
    experiment_args(ap)
    ap.add_argument("--skip-prepare", action="store_true", help="reuse corpus and runs already in --out")
    ap.add_argument("--prepare-only", action="store_true", help="stop after the two downloads and the validation split")
    a = ap.parse_args()
    out = Path(a.out)
    corpus = Path(a.corpus) if a.corpus else out / "corpus"
    if not a.skip_prepare:
        ensure_corpus(corpus, a.samples, RATES, noise_mode=a.noise)
        curate_runs(corpus, {out / "curated": ("image_text", []),
                             out / "raw": ("download_only", ["--set", "download.image_size=64",
                                                             "--set", "download.timeout_s=2"])})
    if a.prepare_only:
        from _prepare import ensure_validation

        ensure_validation(corpus, a.valid_n)
        return
    run_experiment(a, out, corpus, ["curated", "raw"], controls={"random": "raw:curated"})


if __name__ == "__main__":
    main()
