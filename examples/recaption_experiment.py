"""Original vs recaptioned vs mixed captions at equal samples seen, on the demo corpus.

1. Generate a demo corpus with a high boilerplate alt-text rate (so the choice of caption matters).
2. `curate train CORPUS/seed --model curate-tiny-coca --loss coca`: a tiny CoCa captioner trained on
   the clean seed split (cached in OUT/coca; rerunning reuses it).
3. Serve the corpus on 127.0.0.1 and run `curate run image_text_recaption --set recaption.rows=all`:
   every kept image gets a synthetic caption beside its alt-text (policy `both`: .txt + .recap.txt).
4. `curate experiment original=S recaption=S mixed=S --recaption-prob recaption=1 --recaption-prob mixed=0.5`
   on the same shards: only the caption each sample is trained with differs.

    nice -n 15 python examples/recaption_experiment.py --out examples/out/recaption

The README reports whatever this prints; with a tiny CoCa trained for minutes the synthetic captions
are only as good as that captioner, which is the point of measuring instead of assuming.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

RATES = {"boilerplate_caption": 0.30, "exact_duplicate": 0.05, "tiny_image": 0.02, "extreme_aspect": 0.02,
         "mismatched_caption": 0.10, "near_duplicate": 0.02, "http_404": 0.01, "http_500": 0.0,
         "corrupt_bytes": 0.01, "truncated_bytes": 0.0, "slow_ok": 0.0, "timeout": 0.0, "flaky": 0.0}


def curate_cmd(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "curate.cli", *args], check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="examples/out/recaption")
    ap.add_argument("--samples", type=int, default=1500, help="corpus size")
    ap.add_argument("--coca-samples-seen", type=int, default=6000)
    ap.add_argument("--samples-seen", type=int, default=2400)
    ap.add_argument("--seeds", type=int, default=5, help="seeds per caption mix, paired by seed")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    out = Path(a.out)
    corpus = out / "corpus"
    if not (corpus / "corpus.json").is_file():
        from curate.demo.corpus import generate_corpus

        generate_corpus(corpus, a.samples, seed=0, rates=RATES, workers=2)
    coca = out / "coca"
    if not (coca / "summary.json").is_file():
        curate_cmd("train", str(corpus / "seed"), "--model", "curate-tiny-coca", "--loss", "coca", "--output", str(coca),
                   "--samples-seen", str(a.coca_samples_seen), "--batch-size", "32", "--lr", "2e-3",
                   "--threads", str(a.threads), "--log-every", "20", *(["--resume"] if (coca / "checkpoint.pt").is_file() else []))
    run = out / "run"
    if not (run / "manifest.json").is_file() or not any((run / "shards").glob("*.tar")):
        from curate.demo.corpus import write_url_list
        from curate.demo.server import DemoServer

        with DemoServer(corpus) as server, tempfile.TemporaryDirectory() as tmp:
            urls = write_url_list(corpus, server.url, Path(tmp) / "urls.parquet")
            curate_cmd("run", "image_text_recaption", "--input", str(urls), "--output", str(run),
                       "--set", f"recaption.checkpoint={coca / 'checkpoint.pt'}", "--set", "recaption.rows=all",
                       "--set", "recaption.on_truncated=keep", "--set", "output.samples_per_shard=500")
    shards = str(run / "shards")
    curate_cmd("experiment", f"original={shards}", f"recaption={shards}", f"mixed={shards}",
               "--recaption-prob", "recaption=1", "--recaption-prob", "mixed=0.5",
               "--eval-set", str(corpus / "eval"), "--samples-seen", str(a.samples_seen), "--seeds", str(a.seeds),
               "--batch-size", str(a.batch_size), "--lr", str(a.lr), "--threads", str(a.threads),
               "--primary", "zeroshot_top1", "--primary", "image_to_text_R@5",
               "--output", str(out / "experiment"))
    curate_cmd("query", str(run), "SELECT recaption_flag, count(*) n FROM kept GROUP BY 1 ORDER BY 2 DESC")
    curate_cmd("query", str(run), "SELECT text, recaption FROM kept USING SAMPLE 8 ROWS")


if __name__ == "__main__":
    main()
