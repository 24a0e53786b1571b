"""Filter bootstrapping (Data Filtering Networks): train a filter CLIP on the clean seed split.

DFN's point: the model that *filters* should be trained on a small set of high-quality pairs, not on
the noisy pool it will filter. The demo corpus ships such a set (CORPUS/seed: clean, correctly
captioned shards); this script trains curate-tiny on it, checks it on the held-out eval split, and
saves it where the CLIP-score stage loads it:

    OUT/filter_clip.pt      an open_clip checkpoint: open_clip.create_model_and_transforms(
                            "curate-tiny", pretrained="OUT/filter_clip.pt") loads it
    OUT/filter_clip.json    {"model": "curate-tiny", "pretrained": ".../filter_clip.pt", eval metrics}

    python examples/filter_bootstrap/train_filter.py --out models/filter   # generates a demo corpus
    python examples/filter_bootstrap/train_filter.py --corpus demo-corpus/ --samples-seen 20000

A recipe then scores with it (pipelines/image_text_clip.yaml; `curate demo` does the same with
curate.demo.filter.ensure_filter and caches the filter next to the demo corpus):

    curate run image_text_clip -i urls.parquet -o out/ --set clip_score.checkpoint=models/filter/filter_clip.pt
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path


def curate(*args: str) -> None:
    exe = Path(sys.executable).with_name("curate")
    subprocess.run([str(exe), *args], check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="models/filter")
    ap.add_argument("--corpus", default=None, help="a demo corpus folder with seed/ and eval/ (generated if omitted)")
    ap.add_argument("--samples", type=int, default=4000, help="size of the generated corpus (seed split = half)")
    ap.add_argument("--samples-seen", type=int, default=8000)
    ap.add_argument("--model", default="curate-tiny")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    out = Path(a.out)
    corpus = Path(a.corpus) if a.corpus else out / "corpus"
    if not (corpus / "seed").is_dir():
        from curate.demo.corpus import generate_corpus

        generate_corpus(corpus, a.samples, seed=0, workers=2)
    run = out / "train"
    curate("train", str(corpus / "seed"), "--model", a.model, "--samples-seen", str(a.samples_seen),
           "--lr", str(a.lr), "--threads", str(a.threads), "-o", str(run), *(["--resume"] if (run / "checkpoint.pt").is_file() else []))
    metrics = out / "eval.json"
    curate("eval", str(run / "checkpoint.pt"), "--eval-set", str(corpus / "eval"), "-o", str(metrics))
    ckpt = out / "filter_clip.pt"
    shutil.copy(run / "checkpoint.pt", ckpt)
    ev = json.loads(metrics.read_text())
    info = {"model": a.model, "pretrained": str(ckpt.resolve()), "trained_on": str((corpus / "seed").resolve()),
            "samples_seen": a.samples_seen, "eval": {k: ev[k] for k in ev if k.startswith(("zeroshot", "image_to", "text_to"))}}
    (out / "filter_clip.json").write_text(json.dumps(info, indent=1))
    print(json.dumps(info, indent=1))


if __name__ == "__main__":
    main()
