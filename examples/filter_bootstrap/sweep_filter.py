"""How well a filter CLIP setting separates matched from mismatched captions on a demo corpus.

Trains a filter with the given settings (curate.demo.filter.FILTER_SETTINGS, overridden by --set
key=value) on CORPUS/seed, scores every clean and every planted mismatched_caption row of
CORPUS/corpus.parquet straight from CORPUS/files (no pipeline, no Ray), and prints one JSON line:
ROC AUC overall, on the mismatches whose caption names the image's own colour (only the shape is
wrong) and on the rest, and precision/recall when the lowest-scoring 10% are cut (as `curate demo` does).

    python examples/filter_bootstrap/sweep_filter.py ~/.cache/curate/demo/image-text-n3000-s0 \\
        --set samples_seen=16000 --set lr=2e-3 --set model=curate-tiny-32
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """P(a negative scores above a positive), ties half: the rank form of the ROC AUC."""
    from scipy.stats import rankdata

    r = rankdata(-scores)
    n1, n0 = int(positive.sum()), int((~positive).sum())
    return float((r[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def score_corpus(ckpt: Path, corpus: Path) -> tuple[list[dict], np.ndarray]:
    """Cosine image-caption scores of the corpus' clean and mismatched_caption rows."""
    import pyarrow.parquet as pq
    import torch
    from PIL import Image

    from curate.models.clip import load_clip

    clip = load_clip(None, None, str(ckpt), "cpu", "fp32")
    rows = [r for r in pq.read_table(corpus / "corpus.parquet").to_pylist()
            if r["noise"] in ("clean", "mismatched_caption")]
    out = []
    with torch.no_grad():
        for lo in range(0, len(rows), 256):
            batch = rows[lo:lo + 256]
            pix = torch.stack([clip.preprocess(Image.open(corpus / "files" / Path(r["path"]).name).convert("RGB"))
                               for r in batch])
            img = clip.model.encode_image(pix)
            txt = clip.model.encode_text(clip.tokenizer([r["caption"] for r in batch]))
            img, txt = img / img.norm(dim=-1, keepdim=True), txt / txt.norm(dim=-1, keepdim=True)
            out += (img * txt).sum(-1).tolist()
    return rows, np.array(out)


def main() -> None:
    from curate.demo.filter import FILTER_SETTINGS
    from curate.train.loop import TrainConfig, train

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", type=Path, help="a demo corpus folder (corpus.parquet, files/, seed/)")
    ap.add_argument("--set", action="append", default=[], help="key=value over FILTER_SETTINGS (JSON values)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    settings = dict(FILTER_SETTINGS)
    for kv in a.set:
        k, v = kv.split("=", 1)
        try:
            settings[k] = json.loads(v)
        except json.JSONDecodeError:
            settings[k] = v
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        summary = train(TrainConfig(shards=[str(a.corpus / "seed")], output=tmp, workers=0, threads=a.threads,
                                    log_every=1000, **settings))
        train_s = time.time() - t0
        rows, s = score_corpus(Path(tmp) / "checkpoint.pt", a.corpus)
        shutil.rmtree(tmp, ignore_errors=True)
    y = np.array([r["noise"] == "mismatched_caption" for r in rows])
    # a mismatched caption that still names the image's colour: only the shape word is wrong
    own_colour = y & np.array([r["colour"] in r["caption"].split() for r in rows])
    cut = s <= np.quantile(s, 0.10)
    print(json.dumps({
        "settings": settings, "train_s": round(train_s, 1), "final_loss": round(summary["final_loss"], 3),
        "auc": round(auc(s, y), 3), "auc_colour_right": round(auc(s[~y | own_colour], own_colour[~y | own_colour]), 3),
        "auc_colour_wrong": round(auc(s[~(y & own_colour)], (y & ~own_colour)[~(y & own_colour)]), 3),
        "positives": int(y.sum()), "colour_right": int(own_colour.sum()),
        "precision_cut10": round(float((cut & y).sum() / cut.sum()), 3),
        "recall_cut10": round(float((cut & y).sum() / y.sum()), 3)}))


if __name__ == "__main__":
    main()
