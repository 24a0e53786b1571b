"""Write a held-out-noise demo corpus (curate.demo.heldout): same layout as curate.demo.corpus, other noise.

Layout: root/files/, root/corpus.parquet (the SCHEMA of curate.demo.corpus plus `grade` and `harmful`),
root/eval/, root/seed/ and root/corpus.json with "noise_mode": "held-out". Every row is served from
/img/ (no download faults: this corpus tests decisions, not the downloader). expected_status is
"dropped" for harmful planted rows and "ok" otherwise, with no expected reason: which stage should
catch held-out noise is exactly what the accuracy report (curate.demo.truth) measures.

Random streams: [seed, 10] families, [seed, 11, id] attributes, [seed, 12, id] pixels,
[seed, 13, id] geometry, [seed, 14, id] captions and duplicate sources. Same seed, same bytes.
"""
from __future__ import annotations

import hashlib
import json
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from . import captions, heldout, images, splits
from .corpus import SCHEMA, _near_dup

HELDOUT_SCHEMA = SCHEMA.append(pa.field("grade", pa.string())).append(pa.field("harmful", pa.bool_()))


def _rng(seed: int, stream: int, i: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, stream, i])


def _render(job: tuple) -> tuple[int, bytes]:
    """Draw at the planned canvas; low-resolution rows are drawn at clean size, then downscaled."""
    seed, i, attrs, small = job
    rng = _rng(seed, 12, i)
    img = images.draw(rng, attrs)
    if small:
        img = img.resize(small, Image.BILINEAR)
    return i, images.encode(img, attrs["format"], attrs["quality"])


def _plan(n: int, seed: int, kinds: list[str]) -> tuple[list[dict], list[str], list[tuple | None]]:
    """Attributes, grades and (for low-resolution rows) the final size of every id."""
    attrs, grades, small = [], [], []
    for i, kind in enumerate(kinds):
        g = _rng(seed, 13, i)
        pin: dict = {"scale": heldout.SHAPE_SCALE}
        grade, size = "", None
        if kind == "aspect_wide":
            pin["width"], pin["height"], grade = heldout.aspect_wide_dims(g)
        a = images.sample_attributes(_rng(seed, 11, i), **pin)
        if kind == "low_resolution":
            w, h, grade = heldout.low_resolution_dims(g)
            size = (w, h)
        attrs.append(a)
        grades.append(grade)
        small.append(size)
    return attrs, grades, small


def _captions(n: int, seed: int, kinds: list[str], attrs: list[dict], grades: list[str]):
    """Captions and duplicate sources; duplicates copy an earlier clean row (exact or re-encoded)."""
    caps, dup_of = [""] * n, [None] * n
    clean_so_far: list[int] = []
    for i, kind in enumerate(kinds):
        rng = _rng(seed, 14, i)
        if kind in heldout.DUPLICATES:
            dup_of[i] = clean_so_far[int(rng.integers(len(clean_so_far)))]
            attrs[i] = dict(attrs[dup_of[i]])
            grades[i] = ("exact", "reencoded")[int(rng.integers(2))]
            if kind == "dup_conflicting":  # another class' truthful caption: conflicts with the original's
                while True:
                    other = images.sample_attributes(rng)
                    if images.label_of(other) != images.label_of(attrs[i]):
                        break
                caps[i] = captions.caption(other, rng)
            else:
                caps[i] = captions.caption(attrs[i], rng)
            continue
        if kind == heldout.CLEAN:
            clean_so_far.append(i)
        caps[i], g = heldout.caption_for(kind, attrs[i], rng)
        grades[i] = grades[i] or g
    return caps, dup_of


def generate_heldout_corpus(root: Path, n: int, seed: int = 0, eval_n: int | None = None, *,
                            seed_n: int | None = None, rates: dict[str, float] | None = None,
                            workers: int = 1) -> dict:
    """Write the held-out-noise corpus into root; return its summary (also root/corpus.json)."""
    t0 = time.perf_counter()
    root = Path(root)
    files = root / "files"
    files.mkdir(parents=True, exist_ok=True)
    kinds = heldout.assign(n, _rng(seed, 10), rates)
    attrs, grades, small = _plan(n, seed, kinds)
    caps, dup_of = _captions(n, seed, kinds, attrs, grades)
    style = {"scale": heldout.SHAPE_SCALE}
    pool = ProcessPoolExecutor(workers) if workers > 1 else None
    pmap = partial(pool.map, chunksize=64) if pool else map
    try:
        own = [(seed, i, attrs[i], small[i]) for i, k in enumerate(kinds) if k not in heldout.DUPLICATES]
        data: dict[int, bytes] = dict(pmap(_render, own))
        for i, kind in enumerate(kinds):
            if kind in heldout.DUPLICATES:
                src = data[dup_of[i]]
                if grades[i] == "exact":
                    data[i] = src
                else:
                    data[i], w, h = _near_dup(src, _rng(seed, 12, i))
                    attrs[i] = {**attrs[i], "width": w, "height": h, "format": "jpeg"}
        eval_n = max(200, n // 10) if eval_n is None else eval_n
        seed_n = n // 2 if seed_n is None else seed_n
        splits.write_split(root / "eval", eval_n, seed, splits.EVAL_STREAM, balanced=True, pmap=pmap, style=style)
        splits.write_classes(root / "eval" / "classes.json")
        splits.write_split(root / "seed", seed_n, seed, splits.SEED_STREAM, balanced=False, pmap=pmap, style=style)
    finally:
        if pool:
            pool.shutdown()
    _write_rows(root, kinds, attrs, grades, small, caps, dup_of, data)
    counts = {k: kinds.count(k) for k in heldout.FAMILIES}
    grade_counts: dict[str, int] = {}
    for k, g in zip(kinds, grades):
        if k != heldout.CLEAN:
            grade_counts[f"{k}/{g}"] = grade_counts.get(f"{k}/{g}", 0) + 1
    summary = {"root": str(root), "noise_mode": "held-out", "n": n, "seed": seed, "eval_n": eval_n,
               "seed_n": seed_n, "counts": counts, "grades": dict(sorted(grade_counts.items())),
               "shape_scale": heldout.SHAPE_SCALE, "corpus": str(root / "corpus.parquet"),
               "files": str(files), "eval": str(root / "eval"), "seed_split": str(root / "seed"),
               "classes": str(root / "eval" / "classes.json")}
    (root / "corpus.json").write_text(json.dumps(summary, indent=1))
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    return summary


def _write_rows(root: Path, kinds, attrs, grades, small, caps, dup_of, data: dict[int, bytes]) -> None:
    rows = {f.name: [] for f in HELDOUT_SCHEMA}
    for i, kind in enumerate(kinds):
        a = dict(attrs[i])
        if small[i]:
            a["width"], a["height"] = small[i]
        ext = images.ext_for(a["format"])
        (root / "files" / f"{i:06d}.{ext}").write_bytes(data[i])
        harmful = heldout.HARMFUL[kind]
        row = {"id": i, "path": f"/img/{i:06d}.{ext}", "caption": caps[i], "noise": kind, "dup_of": dup_of[i],
               "label": images.label_of(a), "format": a["format"], "sha256": hashlib.sha256(data[i]).hexdigest(),
               "expected_status": "dropped" if harmful else "ok", "expected_reason": None,
               "grade": grades[i] or None, "harmful": harmful}
        row.update({k: a[k] for k in (*images.ATTRIBUTES, "width", "height")})
        for k, v in row.items():
            rows[k].append(v)
    pq.write_table(pa.table(rows, schema=HELDOUT_SCHEMA), root / "corpus.parquet")
