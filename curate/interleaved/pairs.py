"""Image-text pairs from interleaved document shards, written as WebDataset shards `curate train` reads.

Why: whether document curation (filters, dedup, mmc4 placement) gives better training data shows up in
the pairs a document yields, so `curate experiment` needs the documents flattened into pairs. Two ways:

- `placement` (mmc4): each kept image with the sentence `doc_clip` assigned it (`image_sentence`);
- `page_order` (no model): each image with the nearest text segment in page order, i.e. the text segment at
  the smallest segment distance from the image; a tie (text just before and just after) goes to the text
  before. The whole segment (a paragraph) is the caption, as alt-text-free web pair extraction does.

Every image of every document is accounted for in the returned counts: a pair, or one reason
(`image_not_in_shard`: failed or dropped upstream, so the shard has no member for it; `no_sentence`:
`placement` without an assigned sentence; `no_text`: `page_order` in a document without text).
Output: OUT/000000.tar, ... (`<key>.<ext>`, `<key>.txt`, `<key>.json` with the document uid, doc_id when
the input had one, the image index and the mode), byte-deterministic for the same input (mtime 0).
"""
from __future__ import annotations

import io
import json
import tarfile
from collections import Counter
from pathlib import Path
from typing import Iterator

from curate.interleaved.placement import sentence_layout

MODES = ("placement", "page_order")
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


def nearest_text(segments: list[dict], pos: int) -> int | None:
    """Index of the text segment nearest to segment `pos` in page order (ties: the one before), or None."""
    best = None
    for i, seg in enumerate(segments):
        if seg.get("type") != "text" or not (seg.get("text") or "").strip():
            continue
        d = abs(i - pos)
        if best is None or d < best[0] or (d == best[0] and i < best[1]):
            best = (d, i)
    return None if best is None else best[1]


def document_pairs(doc: dict, mode: str) -> Iterator[tuple[int, str | None, str]]:
    """(image index, caption or None, reason) for every image of one document row (the shard's json)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    segments = doc.get("segments") or []
    images = doc.get("doc_images") or []
    if mode == "placement":
        sentences = doc.get("sentences")
        if sentences is None:  # a row doc_clip never saw: derive them the way it does, place nothing
            sentences, _ = sentence_layout(segments)
        placed = doc.get("image_sentence") or [None] * len(images)
        for j in range(len(images)):
            s = placed[j] if j < len(placed) else None
            if s is None or not 0 <= s < len(sentences):
                yield j, None, "no_sentence"
            else:
                yield j, sentences[s], "pair"
        return
    for j, info in enumerate(images):
        t = nearest_text(segments, info["segment"]) if info and info.get("segment") is not None else None
        yield (j, None, "no_text") if t is None else (j, segments[t]["text"].strip(), "pair")


def read_documents(shards: list[str]) -> Iterator[tuple[str, dict, dict[int, tuple[str, bytes]]]]:
    """(key, row, {image index: (ext, bytes)}) per document of interleaved WebDataset tars, in tar order."""
    for path in shards:
        members: dict[str, dict[str, bytes]] = {}
        order: list[str] = []
        with tarfile.open(path) as tar:
            for m in tar:
                if not m.isfile():
                    continue
                key, _, field = Path(m.name).name.partition(".")
                if key not in members:
                    members[key] = {}
                    order.append(key)
                members[key][field] = tar.extractfile(m).read()
        for key in order:
            fields = members[key]
            if "json" not in fields:
                continue
            images = {}
            for name, data in fields.items():
                idx, _, ext = name.partition(".")
                if idx.isdigit() and ext in IMAGE_EXTS:
                    images[int(idx)] = (ext, data)
            yield key, json.loads(fields["json"]), images


def shard_paths(src: str | Path) -> list[str]:
    """The .tar files of a run directory (its shards/), a shard folder, or one tar, sorted."""
    p = Path(src)
    if p.is_file():
        return [str(p)]
    if (p / "shards").is_dir():
        p = p / "shards"
    tars = sorted(str(x) for x in p.glob("*.tar"))
    if not tars:
        raise FileNotFoundError(f"no .tar shards in {src}")
    return tars


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


def write_pairs(src: str | Path, out: str | Path, mode: str, samples_per_shard: int = 1000) -> dict:
    """Flatten the interleaved shards of `src` into image-text pair shards in `out`; returns the counts."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.tar"):
        old.unlink()
    counts: Counter = Counter()
    docs = written = 0
    tar = None
    try:
        for key, doc, images in read_documents(shard_paths(src)):
            docs += 1
            for j, text, reason in document_pairs(doc, mode):
                if j not in images:
                    counts["image_not_in_shard"] += 1
                    continue
                if text is None:
                    counts[reason] += 1
                    continue
                if written % samples_per_shard == 0:
                    if tar is not None:
                        tar.close()
                    tar = tarfile.open(out / f"{written // samples_per_shard:06d}.tar", "w",
                                       format=tarfile.USTAR_FORMAT)
                ext, data = images[j]
                pkey = f"{key}_{j:03d}"
                meta = {"doc_key": key, "doc_uid": doc.get("uid"), "doc_id": doc.get("doc_id"), "image": j,
                        "mode": mode, "url": (doc["doc_images"][j] or {}).get("url")}
                _add(tar, f"{pkey}.{'jpg' if ext == 'jpeg' else ext}", data)
                _add(tar, f"{pkey}.txt", text.encode("utf-8"))
                _add(tar, f"{pkey}.json", json.dumps(meta, sort_keys=True).encode())
                written += 1
                counts["pair"] += 1
    finally:
        if tar is not None:
            tar.close()
    summary = {"mode": mode, "documents": docs, "pairs": written, "images": sum(counts.values()),
               "outcomes": dict(sorted(counts.items()))}
    (out / "pairs.json").write_text(json.dumps(summary, indent=1))
    return summary


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m curate.interleaved.pairs", description=__doc__.splitlines()[0])
    ap.add_argument("src", help="an interleaved run directory, its shards/ folder, or one tar")
    ap.add_argument("out", help="folder for the pair shards (its .tar files are replaced)")
    ap.add_argument("--mode", choices=MODES, default="placement")
    ap.add_argument("--samples-per-shard", type=int, default=1000)
    a = ap.parse_args(argv)
    try:
        summary = write_pairs(a.src, a.out, a.mode, a.samples_per_shard)
    except (FileNotFoundError, tarfile.TarError, json.JSONDecodeError) as err:
        print(f"error: {err}")
        return 2
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
