"""Interleaved demo corpus: HTML pages mixing paragraphs and images, with planted faults and ground truth.

Every image is a procedural shape image (curate.demo.images) and its paragraph holds one truthful caption
sentence for it (curate.demo.captions) among filler sentences that name no colour or shape, so the
sentence an image belongs to is known and mmc4-style placement can be scored. Pages are served by the
demo server (files/pages/*.html, images by relative src="../images/...").

Planted faults (one kind per document; `DOC_KINDS` says what the reference recipe should do):
dead image links, documents whose images are all dead, duplicated documents, documents with no text,
an image shared by two documents, an image unrelated to every sentence, tiny images, and bad input:
malformed HTML, refused URL schemes, an inline data: image, a page with over a thousand images,
huge text, a dead page.
"""
from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np

from curate.demo import captions, images

FILLERS = (
    "We add new pictures to this page every week.",
    "Thanks for visiting our little gallery.",
    "The next one is a favourite of many readers.",
    "Scroll down to see more examples.",
    "This series started as a weekend project.",
    "Feel free to share the page with friends.",
    "Several visitors asked about this one.",
    "It took a while to finish this part.",
    "Some of these were made on a train.",
    "Let us know which one you like best.",
    "Printing these makes a nice poster.",
    "The archive goes back many years.",
)

# kind -> expected document outcome (status or status/reason); "group" = one of a duplicate pair kept
DOC_KINDS = {
    "clean": "ok",
    "dead_image": "ok",
    "shared_image": "ok",
    "unrelated_image": "ok",
    "tiny_image": "ok",
    "malformed_html": "ok",
    "refused_schemes": "ok",
    "data_url": "ok",
    "many_images": "ok",
    "duplicate_doc": "group",
    "all_dead": "dropped/doc_all_images_failed",
    "no_text": "dropped/doc_no_text",
    "huge_text": "dropped/doc_text_too_long",
    "dead_page": "failed/download_http_404",
}
MANY_IMAGES = 1200  # <img> tags on the many_images page (the recipe caps at max_images)
REFUSED = ("javascript:alert(1)", "file:///etc/passwd", "ftp://127.0.0.1/x.jpg", "mailto:a@b.c")


def _plan(n: int) -> list[str]:
    counts = {"duplicate_doc": max(2, n // 20), "dead_image": max(2, n // 15), "all_dead": max(1, n // 40),
              "no_text": max(2, n // 30), "shared_image": max(2, n // 20), "unrelated_image": max(2, n // 15),
              "tiny_image": max(2, n // 20)}
    for k in ("malformed_html", "refused_schemes", "data_url", "many_images", "huge_text", "dead_page"):
        counts[k] = 1
    special = sum(counts.values())
    if n < special + 10:
        raise ValueError(f"the interleaved demo needs at least {special + 10} documents")
    kinds = ["clean"] * (n - special) + [k for k, c in counts.items() for _ in range(c)]
    return kinds


def _sentence(attrs: dict, rng) -> str:
    s = captions.caption(attrs, rng)
    return s[0].upper() + s[1:] + "."


def _doc_images(rng, k: int, size: int | None = None) -> list[dict]:
    """k images with pairwise different colours and shapes, so every caption singles out its image."""
    colours = rng.permutation(list(images.COLOURS))[:k]
    shapes = rng.permutation(list(images.SHAPES))[:k]
    out = []
    for c, s in zip(colours, shapes):
        over = {"colour": str(c), "shape": str(s)}
        if size:
            over.update(width=size, height=size)
        img, attrs = images.render(rng, **over)
        out.append({"img": img, "attrs": attrs, "sentence": _sentence(attrs, rng)})
    return out


def _unrelated(rng, taken: list[dict]) -> dict:
    used_c = {d["attrs"]["colour"] for d in taken}
    used_s = {d["attrs"]["shape"] for d in taken}
    c = [x for x in images.COLOURS if x not in used_c][0]
    s = [x for x in images.SHAPES if x not in used_s][0]
    img, attrs = images.render(rng, colour=c, shape=s)
    return {"img": img, "attrs": attrs, "sentence": None}


def _page(title: str | None, blocks: list[str], malformed: bool = False) -> str:
    head = f"<title>{title}</title>" if title else ""
    body = "\n".join(blocks)
    if malformed:  # unclosed tags, stray closers, an unterminated attribute quote at the very end
        return (f"<html><head>{head}<script>var x = '<p>not text</p>';</script>\n<body><div><div>"
                f"<nav><a href='/'>Home</a></nav></div></span>{body}<p>Unclosed paragraph <b>bold <i>both"
                "</td></tr><li>stray list item")
    return (f"<!doctype html><html><head><meta charset='utf-8'>{head}<style>p {{margin: 0}}</style>"
            f"<script>var t = 1;</script></head><body><nav><a href='/'>Home</a> | <a href='/about'>About</a></nav>"
            f"<article>\n{body}\n</article><footer>Copyright the demo</footer></body></html>")


def generate_documents(root: Path, n: int = 120, seed: int = 0) -> Path:
    """Write root/files/pages/*.html, root/files/images/*, root/documents.json (ground truth)."""
    root = Path(root)
    if root.exists():
        shutil.rmtree(root)
    (root / "files" / "pages").mkdir(parents=True)
    (root / "files" / "images").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    kinds = list(rng.permutation(_plan(n)))
    docs: list[dict] = []
    clean_sources: list[dict] = []

    def save(img, name: str, fmt: str = "jpeg") -> str:
        (root / "files" / "images" / name).write_bytes(images.encode(img, fmt))
        return name

    for d, kind in enumerate(kinds):
        kind = str(kind)
        page = f"doc{d:05d}.html"
        doc = {"id": d, "page": page, "kind": kind, "images": [], "dup_of": None}
        if kind == "duplicate_doc" and clean_sources:
            src = clean_sources.pop(int(rng.integers(len(clean_sources))))
            shutil.copy(root / "files" / "pages" / src["page"], root / "files" / "pages" / page)
            doc.update(images=[dict(x) for x in src["images"]], dup_of=src["id"])
            docs.append(doc)
            continue
        if kind == "duplicate_doc":
            kind = doc["kind"] = "clean"
        k = int(rng.integers(2, 5))
        items = _doc_images(rng, k, size=16 if kind == "tiny_image" else None)
        if kind == "tiny_image":  # only the first image is tiny
            items[1:] = _doc_images(rng, k, None)[1:]
            items = _doc_images_distinct(items, rng)
        blocks, truth = [f"<h1>Shape notes {d}</h1>"], []
        if kind == "unrelated_image":
            items.append(_unrelated(rng, items))
        for j, it in enumerate(items):
            name = save(it["img"], f"d{d:05d}_{j}.jpg")
            src, expect = f"../images/{name}", "ok"
            if kind == "dead_image" and j == 0 or kind == "all_dead":
                src, expect = f"/status/404/img/images/{name}", "failed/download_http_404"
            elif kind == "tiny_image" and j == 0:
                expect = "dropped/image_too_small"
            elif kind == "unrelated_image" and it["sentence"] is None:
                expect = "ok_or_unrelated"
            elif kind == "shared_image" and j == 0 and clean_sources:
                other = clean_sources.pop(int(rng.integers(len(clean_sources))))
                shared = other["images"][0]
                shared["expect"] = "shared"  # judged as a pair: one occurrence kept, the other a duplicate
                src, expect = f"../images/{shared['file']}", "shared"
                it = {**it, "sentence": shared["sentence"]}
                name = shared["file"]
            elif kind == "data_url" and j == 0:
                import base64

                src = "data:image/png;base64," + base64.b64encode(images.encode(it["img"], "png")).decode()
            truth.append({"file": name, "sentence": it["sentence"], "expect": expect})
            img_tag = f'<figure><img src="{src}" alt="{captions.boilerplate(rng)}"></figure>'
            if it["sentence"] is None:
                blocks.append(img_tag)
                continue
            fill = list(rng.choice(FILLERS, size=int(rng.integers(1, 3)), replace=False))
            fill.insert(int(rng.integers(len(fill) + 1)), it["sentence"])
            para = f"<p>{' '.join(fill)}</p>"
            blocks += [img_tag, para] if rng.random() < 0.3 else [para, img_tag]
        if kind == "refused_schemes":
            for s in REFUSED:
                blocks.append(f'<img src="{s}">')
                truth.append({"file": None, "sentence": None, "expect": "failed/image_url_refused"})
        if kind == "many_images":
            name = truth[0]["file"]
            blocks += [f'<img src="../images/{name}?n={i}">' for i in range(MANY_IMAGES)]
            truth += [{"file": name, "sentence": None, "expect": "many"} for _ in range(MANY_IMAGES)]
        if kind == "huge_text":
            blocks.append("<p>" + " ".join(FILLERS[i % len(FILLERS)] for i in range(4000)) + "</p>")
        if kind == "no_text":
            blocks = [b for b in blocks if b.startswith("<figure>")]
        doc["images"] = truth
        (root / "files" / "pages" / page).write_text(_page(None if kind == "no_text" else f"Shapes {d}", blocks,
                                                           malformed=kind == "malformed_html"))
        if kind == "clean":
            clean_sources.append(doc)
        docs.append(doc)
    (root / "documents.json").write_text(json.dumps(docs, indent=1))
    return root


def _doc_images_distinct(items: list[dict], rng) -> list[dict]:
    """Re-draw later images whose colour or shape repeats an earlier one (keeps captions unambiguous)."""
    seen_c, seen_s, out = set(), set(), []
    for it in items:
        a = it["attrs"]
        if a["colour"] in seen_c or a["shape"] in seen_s:
            c = [x for x in images.COLOURS if x not in seen_c][0]
            s = [x for x in images.SHAPES if x not in seen_s][0]
            img, attrs = images.render(rng, colour=c, shape=s)
            it = {"img": img, "attrs": attrs, "sentence": _sentence(attrs, rng)}
        seen_c.add(it["attrs"]["colour"])
        seen_s.add(it["attrs"]["shape"])
        out.append(it)
    return out


def write_page_list(root: Path, base_url: str, out: Path) -> Path:
    """The input of the demo run: one page URL per document (dead_page points at a 404)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = json.loads((Path(root) / "documents.json").read_text())
    urls = [f"{base_url}/status/404/img/pages/{d['page']}" if d["kind"] == "dead_page"
            else f"{base_url}/img/pages/{d['page']}" for d in docs]
    pq.write_table(pa.table({"url": urls, "doc_id": [d["id"] for d in docs]}), out)
    return out


def truth_table(run_dir: Path, root: Path) -> tuple[list[dict], dict]:
    """(per document kind: rows, expected, as expected, outcomes), (image-level and placement metrics)."""
    import pyarrow.parquet as pq

    docs = {d["id"]: d for d in json.loads((Path(root) / "documents.json").read_text())}
    meta = pq.ParquetDataset(str(Path(run_dir) / "meta")).read().to_pylist()
    by_id = {r["doc_id"]: r for r in meta}
    outcome = {i: (r["status"] if r["status"] == "ok" else f"{r['status']}/{r['reason']}") for i, r in by_id.items()}
    groups: dict[int, list[int]] = {}
    for d in docs.values():
        if d["dup_of"] is not None:
            groups.setdefault(d["dup_of"], [d["dup_of"]]).append(d["id"])
    rows: dict[str, dict] = {}
    for i, d in docs.items():
        kind = d["kind"]
        in_group = next((g for g in groups.values() if i in g), None)
        expected = "group" if in_group else DOC_KINDS[kind]
        if in_group:
            kept = [m for m in in_group if outcome.get(m) == "ok"]
            good = len(kept) == 1 and all(outcome.get(m) == "dropped/near_duplicate" for m in in_group if m not in kept)
            kind = "duplicate_doc"
        else:
            good = outcome.get(i) == expected
        r = rows.setdefault(kind, {"kind": kind, "expected": "one kept, rest dropped/near_duplicate"
                                   if expected == "group" else expected, "rows": 0, "as_expected": 0,
                                   "outcomes": Counter()})
        r["rows"] += 1
        r["as_expected"] += int(good)
        r["outcomes"][outcome.get(i, "missing")] += 1

    img = Counter()
    placed = correct = 0
    chance = []
    shared: dict[str, list[str]] = {}
    unrelated_scores, related_scores = [], []
    for i, d in docs.items():
        row = by_id.get(i)
        if row is None or row["status"] != "ok":
            continue
        recs = row["doc_images"] or []
        if len(recs) != len(d["images"]):
            img["image_count_mismatch"] += 1
            continue
        for j, (rec, t) in enumerate(zip(recs, d["images"])):
            got = rec["status"] if rec["status"] == "ok" else f"{rec['status']}/{rec['reason']}"
            exp = t["expect"]
            if exp == "shared":
                shared.setdefault(t["file"], []).append(got)
                continue
            if exp == "many":
                img[f"many_images:{got}"] += 1
                continue
            if exp == "ok_or_unrelated":
                img["unrelated:" + got] += 1
                score = (row.get("image_clip_score") or [None] * len(recs))[j]
                if score is not None:
                    unrelated_scores.append(score)
                continue
            img[f"{'as_expected' if got == exp else 'unexpected'}"] += 1
            if got != exp:
                img[f"unexpected:{exp}->{got}"] += 1
            if rec["status"] == "ok" and t["sentence"] is not None and row.get("image_sentence"):
                s = row["image_sentence"][j]
                score = (row.get("image_clip_score") or [None] * len(recs))[j]
                if score is not None:
                    related_scores.append(score)
                if s is not None:
                    placed += 1
                    correct += int(row["sentences"][s] == t["sentence"])
                    chance.append(1 / max(1, len(row["sentences"])))
    for file, outs in shared.items():  # each shared image: exactly one occurrence kept
        good = sorted(outs) == sorted(["ok"] + ["dropped/duplicate_image"] * (len(outs) - 1))
        img["shared_pairs_as_expected" if good else "shared_pairs_unexpected"] += 1
    metrics = {"images": dict(img), "placed": placed,
               "placement_accuracy": correct / placed if placed else None,
               "placement_chance": float(np.mean(chance)) if chance else None,
               "clip_score_related_mean": float(np.mean(related_scores)) if related_scores else None,
               "clip_score_unrelated_mean": float(np.mean(unrelated_scores)) if unrelated_scores else None}
    order = list(DOC_KINDS)
    return sorted(rows.values(), key=lambda r: order.index(r["kind"])), metrics


DEFAULT_DOCS = 120
# the demo must not download weights: a random-init tiny CLIP (opted into explicitly: doc_clip refuses
# random weights otherwise) unless the user passes a checkpoint
DEMO_OVERRIDES = ("doc_clip.model=curate-tiny", "doc_clip.pretrained=null", "doc_clip.random_init=true",
                  "doc_clip.device=cpu")


def run_demo(out: Path, docs: int = DEFAULT_DOCS, seed: int = 0, overrides: tuple[str, ...] = (),
             ray_address: str | None = None, on_progress=None, corpus: Path | None = None) -> tuple[dict, Path]:
    """Generate (or reuse) the corpus, serve it on loopback, run pipelines/interleaved.yaml; (manifest, corpus)."""
    import tempfile

    from curate.demo.run import cache_root, mark_demo_run, prepare_run_dir
    from curate.demo.server import DemoServer
    from curate.recipe import load_recipe
    from curate.runner import Runner

    prepare_run_dir(Path(out))
    corpus = Path(corpus or cache_root() / "demo" / f"interleaved-n{docs}-s{seed}")
    if not (corpus / "documents.json").exists():
        generate_documents(corpus, docs, seed)
    with DemoServer(corpus) as server, tempfile.TemporaryDirectory() as tmp:
        pages = write_page_list(corpus, server.url, Path(tmp) / "pages.parquet")
        rec = load_recipe("interleaved", (*DEMO_OVERRIDES, *overrides), input_path=str(pages), output_path=str(out))
        try:
            manifest = Runner(rec, ray_address=ray_address, on_progress=on_progress).start()
        finally:  # finished or interrupted: the demo wrote it, so the next demo may replace it
            mark_demo_run(Path(out))
    return manifest, corpus
