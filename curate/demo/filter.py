"""The demo's filter CLIP (Data Filtering Networks): curate-tiny-32 trained on the corpus' clean seed split.

DFN's point is that the model that filters should be trained on a small set of trusted pairs, not on
the noisy pool it filters. The demo corpus ships such a set (seed/, correctly captioned WebDataset
shards), so `curate demo` trains a filter on it once (about 2-5 minutes on 2 shared CPU cores), caches it next
to the corpus, and the recipe's `clip_score` stage loads it as a local checkpoint.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Callable

# Settings that make the filter separate matched from mismatched demo captions in a few CPU-minutes. The old
# ones (curate-filter, 8,000 samples seen, lr 5e-3) left it undertrained and too narrow: loss 3.5 (ln 64 = 4.2),
# score ROC AUC 0.81 against the planted mismatched captions. curate-tiny-32 (wider embedding and towers, about
# as fast per sample) at 16,000 samples and lr 2e-3 reaches loss 1.6 and AUC 0.97 (sweep in README
# "Numbers"; examples/filter_bootstrap/sweep_filter.py reproduces a row).
FILTER_SETTINGS = dict(model="curate-tiny-32", samples_seen=16000, batch_size=64, lr=2e-3, warmup=10, weight_decay=0.1,
                       seed=0)


def filter_path(corpus: Path) -> Path:
    return Path(corpus) / "filter" / "filter_clip.pt"


def _fit_batch(settings: dict, seed: Path) -> dict:
    """The settings with the batch no larger than the seed split's usable samples: training refuses a batch
    that would repeat its samples, and a tiny corpus (the examples' smoke paths) has a seed split of ~30."""
    from curate.train.subsets import usable_keys

    usable = len(usable_keys([str(seed)]))  # tar headers only
    if 0 < usable < settings["batch_size"]:
        return {**settings, "batch_size": max(2, usable)}
    return settings


def ensure_filter(corpus: Path, log: Callable[[str], None] = print, threads: int = 0, **overrides) -> Path:
    """Train the filter on corpus/seed if it is not cached yet; return its checkpoint path."""
    from curate.train.loop import TrainConfig, train

    settings = _fit_batch({**FILTER_SETTINGS, **overrides}, Path(corpus) / "seed")
    ckpt = filter_path(corpus)
    info = ckpt.with_suffix(".json")
    if ckpt.is_file() and info.is_file() and json.loads(info.read_text()).get("settings") == settings:
        return ckpt
    work = ckpt.parent / "train"
    if work.exists():
        shutil.rmtree(work)
    log(f"training the filter CLIP ({settings['model']}, {settings['samples_seen']} samples) on {corpus / 'seed'}")
    t0 = time.time()
    summary = train(TrainConfig(shards=[str(Path(corpus) / "seed")], output=str(work), workers=0 if threads else 1,
                                threads=threads, log_every=1000, **settings))
    shutil.copy(work / "checkpoint.pt", ckpt.with_suffix(".tmp"))
    ckpt.with_suffix(".tmp").replace(ckpt)
    info.write_text(json.dumps({"settings": settings, "trained_on": str(Path(corpus) / "seed"),
                                "final_loss": summary.get("final_loss") or summary.get("loss"),
                                "train_seconds": round(time.time() - t0, 1)}, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    return ckpt
