"""`curate demo`: generate the synthetic corpus, serve it on loopback, run the shipped recipe, and score the
run against the planted ground truth, so a new user sees the whole tool work in a few minutes.
"""
from __future__ import annotations

import os
import shutil
from collections import Counter, defaultdict
from pathlib import Path
from typing import Callable

import pyarrow.parquet as pq

from curate.demo import noise

DEFAULT_SAMPLES = 3000


def cache_root() -> Path:
    """The demo's cache (generated corpora, its filter): $CURATE_CACHE_DIR like every curate cache
    (curate.io.storage.cache_dir). CURATE_CACHE, the demo's former variable, is still honoured when
    CURATE_CACHE_DIR is unset, for the demo only, as before: a setup that set it keeps its cached corpora
    and sees nothing else move."""
    from curate.io import storage

    legacy = os.environ.get("CURATE_CACHE")
    return Path(legacy) if legacy and not os.environ.get("CURATE_CACHE_DIR") else storage.cache_dir()


def corpus_dir(samples: int, seed: int, noise_mode: str = "tuned") -> Path:
    mode = "" if noise_mode == "tuned" else "-heldout"
    return cache_root() / "demo" / f"image-text{mode}-n{samples}-s{seed}"


def ensure_corpus(samples: int, seed: int, root: Path | None = None, log: Callable[[str], None] = print,
                  noise_mode: str = "tuned") -> Path:
    """Generate the corpus once and reuse it (generation is deterministic for a given size, seed and noise mode)."""
    from curate.demo.corpus import generate_corpus

    root = root or corpus_dir(samples, seed, noise_mode)
    if (root / "corpus.parquet").exists() and (root / "_COMPLETE").exists():
        return root
    if root.exists():
        shutil.rmtree(root)
    log(f"generating {samples} demo samples ({noise_mode} noise) into {root}")
    generate_corpus(root, samples, seed=seed, workers=min(2, os.cpu_count() or 1), noise_mode=noise_mode)
    (root / "_COMPLETE").write_text("ok\n")
    return root


def truth_table(run_dir: Path, corpus: Path) -> list[dict]:
    """Per planted noise kind: how many rows ended as the reference pipeline should.

    Exact duplicates are judged per group (original + copies still in play when dedup ran): exactly one
    member is kept and the others are dropped as duplicate_image, whichever uid comes first.
    """
    truth = pq.read_table(corpus / "corpus.parquet", columns=["id", "noise", "dup_of"]).to_pylist()
    meta = pq.ParquetDataset(str(Path(run_dir) / "meta")).read(
        columns=["id", "uid", "status", "stage", "reason", "dup_of"]).to_pylist()
    by_id = {r["id"]: r for r in meta}
    stages = _recipe_steps(run_dir)
    groups: dict[int, list[int]] = defaultdict(list)
    for t in truth:
        if t["noise"] == "exact_duplicate" and t["dup_of"] is not None:
            groups[t["dup_of"]].append(t["id"])
    dedup_ok = {}
    for orig, copies in groups.items():
        members = [m for m in [orig, *copies] if m in by_id]
        in_play = [m for m in members if by_id[m]["status"] == "ok" or by_id[m]["reason"] == "duplicate_image"]
        kept = [m for m in in_play if by_id[m]["status"] == "ok"]
        good = len(in_play) == 0 or (len(kept) == 1 and all(
            by_id[m]["reason"] == "duplicate_image" and by_id[m]["dup_of"] == by_id[kept[0]]["uid"]
            for m in in_play if m != kept[0]))
        for m in members:
            dedup_ok[m] = good
    rows: dict[str, dict] = {}
    for t in truth:
        kind = t["noise"]
        status, reason = noise.expected_outcome(kind, stages)
        got = by_id.get(t["id"])
        r = rows.setdefault(kind, {"noise": kind, "expected": f"{status}/{reason}" if reason else status,
                                   "rows": 0, "as_expected": 0, "outcomes": Counter()})
        r["rows"] += 1
        if got is None:
            r["outcomes"]["missing"] += 1
            continue
        outcome = got["status"] if got["status"] == "ok" else f"{got['status']}/{got['reason']}"
        r["outcomes"][outcome] += 1
        if t["id"] in dedup_ok:  # members of an exact-duplicate group are judged as a group
            r["as_expected"] += int(dedup_ok[t["id"]])
        else:
            r["as_expected"] += int(got["status"] == status and got["reason"] == reason)
    return sorted(rows.values(), key=lambda r: (r["noise"] != "clean", -r["rows"]))


def _recipe_steps(run_dir: Path) -> set[str] | None:
    """Step names of the recipe a run used (from its recipe.yaml), None if it cannot be read."""
    import yaml

    try:
        rec = yaml.safe_load((Path(run_dir) / "recipe.yaml").read_text())
        return {next(iter(s)) if isinstance(s, dict) else str(s) for s in rec.get("stages") or []}
    except (OSError, yaml.YAMLError, AttributeError, StopIteration):
        return None


def prepare_run_dir(out: Path) -> None:
    """The demo owns its output: replace an earlier demo run (one `mark_demo_run` marked, with anything put
    into it since), or an empty folder; refuse to touch anything else, a curate run the demo did not write
    included.

    Why a marker and not manifest.json: any curate run has a manifest, and `curate demo -o` pointed at a
    real run (or at any folder that happens to hold a manifest.json) must not delete it."""
    from curate.io.rundir import RunDir

    if out.is_symlink():  # rmtree refuses links; and the folder it points at is not ours to replace
        raise FileExistsError(f"{out} is a symbolic link; give the demo a real folder as --output")
    if not out.exists():
        return
    if RunDir(out).demo_marker.is_file() or (out.is_dir() and not any(out.iterdir())):
        shutil.rmtree(out)
        return
    what = "holds a curate run the demo did not write" if RunDir(out).exists() else "is not a demo run directory"
    raise FileExistsError(f"{out} exists and {what}; choose another --output (or remove it yourself)")


def mark_demo_run(out: Path) -> None:
    """Mark what a demo wrote (finished, failed or interrupted), so the next `curate demo -o` may replace it
    (`prepare_run_dir`). Nothing when the run left no folder (a run that made nothing removes its own)."""
    from curate.io.rundir import RunDir

    if Path(out).is_dir():
        RunDir(out).demo_marker.write_text("written by curate demo; `curate demo -o` may replace this folder\n")


def filter_quality(run_dir: Path, corpus: Path, positive: str = "mismatched_caption") -> dict | None:
    """Precision and recall of the CLIP filter against the planted `mismatched_caption` labels.

    Judged over the rows the filter saw (those with a clip_score): a row is flagged when the CLIP
    decision dropped it (clip_threshold / clip_top_fraction). Also the ROC AUC of the raw score, which
    says how well the filter ranks mismatched below matched captions whatever the cut. None when the run
    has no clip_score column.
    """
    import numpy as np

    meta = pq.ParquetDataset(str(Path(run_dir) / "meta")).read()
    if "clip_score" not in meta.column_names:
        return None
    noise_of = dict(zip(*pq.read_table(corpus / "corpus.parquet", columns=["id", "noise"]).to_pydict().values()))
    rows = [r for r in meta.select(["id", "clip_score", "stage"]).to_pylist() if r["clip_score"] is not None]
    if not rows:
        return None
    y = np.array([noise_of.get(r["id"]) == positive for r in rows])
    flagged = np.array([r["stage"] in ("clip_threshold", "clip_top_fraction") for r in rows])
    s = np.array([r["clip_score"] for r in rows], np.float64)
    tp = int((flagged & y).sum())
    out = {"scored": len(rows), "positives": int(y.sum()), "flagged": int(flagged.sum()), "true_positives": tp,
           "precision": tp / flagged.sum() if flagged.any() else float("nan"),
           "recall": tp / y.sum() if y.any() else float("nan"), "auc": float("nan")}
    if 0 < y.sum() < len(y):  # P(score of a matched pair > score of a mismatched one), ties count half
        from scipy.stats import rankdata

        r = rankdata(-s)
        n1, n0 = int(y.sum()), int((~y).sum())
        out["auc"] = float((r[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))
    return out
