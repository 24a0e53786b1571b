"""Generate the demo corpus: served image files, a ground-truth table, clean eval and seed splits.

Why this shape: the real downloader must run against it (so files sit behind server paths with fault
prefixes) and every stage must be measurable (so each row carries its planted noise kind, the
original it duplicates, its true label and the outcome a correct pipeline owes it).

Random streams: [seed, 0] assigns noise, [seed, 1, id] draws attributes, [seed, 2, id] draws pixels,
[seed, 3, id] draws banner geometry, [seed, 4, id] captions and duplicate sources. Same seed, same bytes.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from curate.images import ImageError, decode_rgb, open_checked

from . import captions, images, noise, splits
from .noise import DEFAULT_RATES, NOISE_KINDS, expected_outcome  # noqa: F401  (re-exported)

__all__ = ["DEFAULT_RATES", "NOISE_KINDS", "SCHEMA", "expected_outcome", "generate_corpus", "write_url_list"]

SCHEMA = pa.schema([
    ("id", pa.int64()), ("path", pa.string()), ("caption", pa.string()), ("noise", pa.string()),
    ("dup_of", pa.int64()), ("label", pa.string()),
    ("shape", pa.string()), ("colour", pa.string()), ("count", pa.int64()), ("position", pa.string()),
    ("size", pa.string()), ("texture", pa.string()), ("background", pa.string()),
    ("width", pa.int64()), ("height", pa.int64()), ("format", pa.string()), ("sha256", pa.string()),
    ("expected_status", pa.string()), ("expected_reason", pa.string()),
])


def _rng(seed: int, stream: int, i: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream, i])


def _tiny(img: Image.Image, rng) -> Image.Image:
    """Shrink to a thumbnail with short side 8..28 px and aspect < 2."""
    short = int(rng.integers(8, 29))
    long_ = int(short * rng.uniform(1.0, 1.8))
    size = (short, long_) if img.width <= img.height else (long_, short)
    return img.resize(size, Image.BILINEAR)


def _extreme_dims(rng) -> tuple[int, int]:
    """A banner or skyscraper: short side 36..64 px (passes min_side 32), aspect 5..8."""
    short = int(rng.integers(36, 65))
    long_ = int(short * rng.uniform(5.0, min(8.0, 500 / short)))
    return (long_, short) if rng.random() < 0.7 else (short, long_)


def _truncate(data: bytes, rng) -> bytes:
    """Cut a JPEG to ~50% inside its entropy-coded data; the result never ends with the EOI marker."""
    sos = data.find(b"\xff\xda")
    cut = max(int(len(data) * rng.uniform(0.4, 0.6)), sos + 64)
    out = data[:cut]
    while out.endswith(b"\xff\xd9") or out.endswith(b"\xff"):
        out = out[:-1]
    return out


def _corrupt(rng) -> bytes:
    """Random bytes that no image decoder recognises."""
    while True:
        data = rng.integers(0, 256, int(rng.integers(600, 6000)), dtype=np.uint8).tobytes()
        try:
            open_checked(data)
        except ImageError:
            return data


def _near_dup(data: bytes, rng) -> tuple[bytes, int, int]:
    """Re-encode at another JPEG quality, resize, or crop a few percent; never byte-identical."""
    img = decode_rgb(data)
    op = ("quality", "resize", "crop")[int(rng.integers(3))]
    if op == "resize":
        f = rng.uniform(0.75, 0.9) if rng.random() < 0.5 else rng.uniform(1.1, 1.25)
        img = img.resize((max(48, round(img.width * f)), max(48, round(img.height * f))), Image.BICUBIC)
    elif op == "crop":
        dx, dy = [int(rng.integers(2, max(3, int(s * 0.06)) + 1)) for s in img.size]
        img = img.crop((dx // 2, dy // 2, img.width - (dx - dx // 2), img.height - (dy - dy // 2)))
    q = int(rng.integers(40, 66)) if rng.random() < 0.5 else int(rng.integers(96, 99))
    return images.encode(img, "jpeg", q), img.width, img.height


def _render_job(job: tuple) -> tuple[int, bytes, dict]:
    """Render one non-duplicate sample's file bytes (runs in a worker when workers > 1)."""
    seed, i, kind, attrs = job
    rng = _rng(seed, 2, i)
    a = dict(attrs)
    if kind == "corrupt_bytes":
        return i, _corrupt(rng), a
    img = images.draw(rng, a)
    if kind == "tiny_image":
        img = _tiny(img, rng)
        a["width"], a["height"] = img.size
    data = images.encode(img, a["format"], a["quality"])
    if kind == "truncated_bytes":
        data = _truncate(data, rng)
    return i, data, a


def _plan(n: int, seed: int, kinds: list[str]) -> list[dict]:
    """Attributes for every id; noise kinds that dictate geometry or format pin them here."""
    out = []
    for i, kind in enumerate(kinds):
        pin = {}
        if kind == "extreme_aspect":
            pin["width"], pin["height"] = _extreme_dims(_rng(seed, 3, i))
        if kind in ("truncated_bytes", "corrupt_bytes", "http_404", "http_500"):
            pin["format"] = "jpeg"
        out.append(images.sample_attributes(_rng(seed, 1, i), **pin))
    return out


def _path(i: int, kind: str, ext: str, slow_ms: int, timeout_ms: int) -> str:
    base = f"/img/{i:06d}.{ext}"
    prefix = {"http_404": "/status/404", "http_500": "/status/500", "slow_ok": f"/slow/{slow_ms}",
              "timeout": f"/slow/{timeout_ms}", "flaky": "/flaky/1"}.get(kind, "")
    return prefix + base


def generate_corpus(
    root: Path,
    n: int,
    seed: int = 0,
    eval_n: int | None = None,
    *,
    seed_n: int | None = None,
    rates: dict[str, float] | None = None,
    timeout_ms: int = 3000,
    slow_ms: int = 500,
    workers: int = 1,
    noise_mode: str = "tuned",
) -> dict:
    """Write root/files/, root/corpus.parquet, root/eval/, root/seed/ and root/corpus.json; return the summary.

    eval_n defaults to max(200, n // 10), seed_n to n // 2. `rates` overrides DEFAULT_RATES per kind.
    workers > 1 renders in a process pool (output is identical to workers=1). noise_mode "held-out"
    plants the noise the stages were not tuned on instead (curate.demo.heldout; `rates` then per family).
    """
    if noise_mode == "held-out":
        from .heldout_corpus import generate_heldout_corpus

        return generate_heldout_corpus(root, n, seed, eval_n, seed_n=seed_n, rates=rates, workers=workers)
    if noise_mode != "tuned":
        raise ValueError(f"unknown noise mode {noise_mode!r}; use tuned or held-out")
    t0 = time.perf_counter()
    root = Path(root)
    (root / "files").mkdir(parents=True, exist_ok=True)
    kinds = noise.assign(n, _rng(seed, 0, 0), rates)
    attrs = _plan(n, seed, kinds)

    # Duplicates copy an earlier clean id; mismatched captions describe another id with another label.
    dup_of: list[int | None] = [None] * n
    caps: list[str] = [""] * n
    clean_so_far: list[int] = []
    for i, kind in enumerate(kinds):
        rng = _rng(seed, 4, i)
        if kind in noise.DUPLICATES:
            dup_of[i] = clean_so_far[int(rng.integers(len(clean_so_far)))]
            attrs[i] = dict(attrs[dup_of[i]])
        if kind == noise.CLEAN:
            clean_so_far.append(i)
        if kind == "boilerplate_caption":
            caps[i] = captions.boilerplate(rng)
        elif kind == "mismatched_caption":
            while True:
                j = int(rng.integers(n))
                if images.label_of(attrs[j]) != images.label_of(attrs[i]):
                    break
            caps[i] = captions.caption(attrs[j], rng)
        else:
            caps[i] = captions.caption(attrs[i], rng)

    # Render every sample that has its own bytes, then make duplicates from the written originals.
    pool = ProcessPoolExecutor(workers) if workers > 1 else None
    pmap = partial(pool.map, chunksize=64) if pool else map
    try:
        _render_all(root, n, seed, kinds, attrs, dup_of, caps, pmap, slow_ms, timeout_ms)
        eval_n = max(200, n // 10) if eval_n is None else eval_n
        seed_n = n // 2 if seed_n is None else seed_n
        splits.write_split(root / "eval", eval_n, seed, splits.EVAL_STREAM, balanced=True, pmap=pmap)
        splits.write_classes(root / "eval" / "classes.json")
        splits.write_split(root / "seed", seed_n, seed, splits.SEED_STREAM, balanced=False, pmap=pmap)
    finally:
        if pool:
            pool.shutdown()

    counts = {k: kinds.count(k) for k in NOISE_KINDS}
    summary = {
        "root": str(root), "n": n, "seed": seed, "eval_n": eval_n, "seed_n": seed_n,
        "counts": counts, "timeout_ms": timeout_ms, "slow_ms": slow_ms,
        "corpus": str(root / "corpus.parquet"), "files": str(root / "files"),
        "eval": str(root / "eval"), "seed_split": str(root / "seed"),
        "classes": str(root / "eval" / "classes.json"),
    }
    (root / "corpus.json").write_text(json.dumps(summary, indent=1))
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    return summary


def _render_all(root: Path, n: int, seed: int, kinds, attrs, dup_of, caps, pmap, slow_ms: int, timeout_ms: int):
    """Write every sample's file and corpus.parquet; duplicates are made from the rendered originals."""
    files = root / "files"
    own_bytes = [i for i, k in enumerate(kinds) if k not in noise.DUPLICATES and k not in ("http_404", "http_500")]
    jobs = [(seed, i, kinds[i], attrs[i]) for i in own_bytes]
    originals = {d for d in dup_of if d is not None}
    kept: dict[int, bytes] = {}  # only the bytes duplicates are made from stay in memory
    shas: dict[int, str] = {}

    def put(i: int, data: bytes) -> str:
        (files / f"{i:06d}.{images.ext_for(attrs[i]['format'])}").write_bytes(data)
        shas[i] = hashlib.sha256(data).hexdigest()
        return shas[i]

    for i, data, a in pmap(_render_job, jobs):
        attrs[i] = a
        put(i, data)
        if i in originals:
            kept[i] = data
    seen = set(shas.values())
    if len(seen) != len(shas):
        raise RuntimeError("two non-duplicate demo images are byte-identical; ground truth would be wrong")
    for i, kind in enumerate(kinds):
        if kind == "exact_duplicate":
            put(i, kept[dup_of[i]])
        elif kind == "near_duplicate":
            rng = _rng(seed, 2, i)
            while True:  # two near-dups of one original could pick the same edit; only exact dups may collide
                data, w, h = _near_dup(kept[dup_of[i]], rng)
                if hashlib.sha256(data).hexdigest() not in seen:
                    break
            attrs[i].update(width=w, height=h, format="jpeg")
            seen.add(put(i, data))

    rows = {f.name: [] for f in SCHEMA}
    for i, kind in enumerate(kinds):
        a = attrs[i]
        has_image = kind not in noise.NO_IMAGE
        ext = images.ext_for(a["format"])
        status, reason = expected_outcome(kind)
        row = {
            "id": i, "path": _path(i, kind, ext, slow_ms, timeout_ms), "caption": caps[i], "noise": kind,
            "dup_of": dup_of[i], "label": images.label_of(a) if has_image else None,
            "format": a["format"] if has_image else None, "sha256": shas.get(i),
            "expected_status": status, "expected_reason": reason,
        }
        for k in (*images.ATTRIBUTES, "width", "height"):
            row[k] = a[k] if has_image else None
        for k, v in row.items():
            rows[k].append(v)
    pq.write_table(pa.table(rows, schema=SCHEMA), root / "corpus.parquet")


def write_url_list(root: Path, base_url: str, out: Path, fmt: str = "parquet") -> Path:
    """Write the crawler's URL list (url = base_url + path, caption, id) as parquet, csv or jsonl."""
    table = pq.read_table(Path(root) / "corpus.parquet", columns=["id", "path", "caption"])
    base = base_url.rstrip("/")
    urls = pa.array([base + p for p in table.column("path").to_pylist()], pa.string())
    table = pa.table({"url": urls, "caption": table.column("caption"), "id": table.column("id")})
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        pq.write_table(table, out)
    elif fmt == "csv":
        import pyarrow.csv as pcsv

        pcsv.write_csv(table, out)
    elif fmt == "jsonl":
        with open(out, "w") as f:
            for row in table.to_pylist():
                f.write(json.dumps(row) + "\n")
    else:
        raise ValueError(f"unknown url list format {fmt!r}; use parquet, csv or jsonl")
    return out


def main(argv: list[str] | None = None) -> None:
    """python -m curate.demo.corpus --root R --n N [--seed S] [--workers W]"""
    import argparse

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--n", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-n", type=int, default=None)
    p.add_argument("--seed-n", type=int, default=None)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--noise", choices=("tuned", "held-out"), default="tuned")
    args = p.parse_args(argv)
    s = generate_corpus(args.root, args.n, args.seed, args.eval_n, seed_n=args.seed_n,
                        workers=args.workers or (os.cpu_count() or 1), noise_mode=args.noise)
    print(json.dumps(s, indent=1))


if __name__ == "__main__":
    main()
