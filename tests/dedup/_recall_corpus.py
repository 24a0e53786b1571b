"""Generated corpora for measuring near-duplicate recall against brute force, per similarity bucket.

Written after minhash_dedup's defaults were fixed and never used to choose them: texts of 5-200 words
from a Zipf-like vocabulary (so unrelated texts share common n-grams), families of variants made by
random edits of four kinds (substitution, insertion, deletion, reordering of a span), variants of
variants, and exact Jaccard of every pair computed from the shingle sets (a sparse product: no pair is
skipped). Images (phash) and embeddings (semantic) get the same treatment with Hamming distance and cosine.
"""
from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from curate.dedup.minhash import normalise_text, shingles

TEXT_BUCKETS = [(0.5, 0.6), (0.6, 0.7), (0.7, 0.75), (0.75, 0.8), (0.8, 0.85), (0.85, 0.9), (0.9, 1.0)]
COS_BUCKETS = [(0.85, 0.9), (0.9, 0.93), (0.93, 0.95), (0.95, 0.96), (0.96, 0.97), (0.97, 0.99), (0.99, 1.0)]


def _edit(words: list[str], k: int, rng: np.random.Generator, draw) -> list[str]:
    """k random edits: substitute, insert or delete a word, or move a span of 1-4 words elsewhere."""
    w = list(words)
    for _ in range(k):
        kind = rng.integers(4)
        if kind == 0 and w:
            w[rng.integers(len(w))] = draw()
        elif kind == 1:
            w.insert(int(rng.integers(len(w) + 1)), draw())
        elif kind == 2 and len(w) > 1:
            del w[rng.integers(len(w))]
        elif len(w) > 2:
            span = int(rng.integers(1, min(4, len(w) - 1) + 1))
            i = int(rng.integers(len(w) - span + 1))
            piece, rest = w[i:i + span], w[:i] + w[i + span:]
            j = int(rng.integers(len(rest) + 1))
            w = rest[:j] + piece + rest[j:]
    return w


def text_corpus(n: int, seed: int, vocab: int = 30000, min_words: int = 5, max_words: int = 200) -> list[str]:
    """About n texts in families: a base of log-uniform length, then 0-5 variants, each of a random earlier
    member, with a number of edits proportional to its length (0-12%, or 0-40% for one in four, so that
    similarities spread over the whole range, crowded near the usual thresholds)."""
    rng = np.random.default_rng(seed)
    p = 1.0 / (np.arange(vocab) + 10.0) ** 1.1
    p /= p.sum()
    pool = iter(())

    def draw() -> str:
        nonlocal pool
        try:
            return next(pool)
        except StopIteration:
            pool = iter([f"w{i}" for i in rng.choice(vocab, 4096, p=p)])
            return next(pool)

    texts: list[str] = []
    while len(texts) < n:
        length = int(np.exp(rng.uniform(np.log(min_words), np.log(max_words + 1))))
        family = [[draw() for _ in range(length)]]
        for _ in range(int(rng.integers(0, 6))):
            src = family[int(rng.integers(len(family)))]
            k = int(round(rng.uniform(0, 0.4 if rng.random() < 0.25 else 0.12) * len(src)))
            family.append(_edit(src, max(1, k) if rng.random() < 0.9 else 0, rng, draw))
        for words in family:
            punct = rng.choice(["", ".", "!", " ..."])
            text = " ".join(words) + punct
            texts.append(text.capitalize() if rng.random() < 0.3 else text)
    order = rng.permutation(len(texts))
    return [texts[i] for i in order[:n]]


def text_jaccard_pairs(texts: list[str], min_j: float, kind: str = "word", ngram: int = 3):
    """(i, j, exact Jaccard) of every pair with Jaccard >= min_j, i < j, by brute force: the shingle
    incidence matrix times its transpose gives every intersection size."""
    sets = [shingles(normalise_text(t), kind, ngram) for t in texts]
    ids: dict[bytes, int] = {}
    rows = np.repeat(np.arange(len(sets)), [len(s) for s in sets])
    cols = np.array([ids.setdefault(g, len(ids)) for s in sets for g in s], np.int64)
    x = sp.csr_matrix((np.ones(len(cols), np.int32), (rows, cols)), shape=(len(sets), max(1, len(ids))))
    x.data[:] = 1  # duplicates cannot occur (shingles are distinct per text); keep it binary anyway
    inter = sp.triu(x @ x.T, k=1).tocoo()
    size = np.asarray(x.sum(axis=1)).ravel()
    jac = inter.data / (size[inter.row] + size[inter.col] - inter.data)
    keep = jac >= min_j - 1e-12
    return inter.row[keep], inter.col[keep], jac[keep]


def same_cluster(labels: dict[str, str], uids: list[str], i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Whether rows i and j (arrays) ended in one cluster; `labels`: uid -> cluster id (own uid if none)."""
    lab = np.array([labels.get(u, u) for u in uids], object)
    return lab[i] == lab[j]


def bucket_recall(sim: np.ndarray, joined: np.ndarray, buckets) -> list[dict]:
    """Per [lo, hi) bucket (the last one includes hi): pairs, joined, recall."""
    out = []
    for k, (lo, hi) in enumerate(buckets):
        m = (sim >= lo - 1e-12) & ((sim < hi - 1e-12) | (k == len(buckets) - 1))
        n = int(m.sum())
        out.append({"bucket": f"[{lo}, {hi}{']' if k == len(buckets) - 1 else ')'}", "pairs": n,
                    "joined": int(joined[m].sum()), "recall": round(float(joined[m].mean()), 4) if n else None})
    return out


def minhash_recall(texts: list[str], job, min_j: float = 0.5) -> dict:
    """Run `job` (a MinHashDedup) in-process and compare with brute force: recall per Jaccard bucket (same
    cluster), its verified edges below the threshold and far below it (threshold - 0.1), and same-cluster
    pairs far below it (joined only through a chain of verified edges)."""
    from curate.dedup.graph import component_labels, edge_uids, uid_of
    from curate.stage import prepare_records, reduce_records

    uids = [f"t{i:07d}" for i in range(len(texts))]
    t = pa.table({"uid": uids, "part": pa.array([i % 4 for i in range(len(texts))], pa.int32()), "text": texts,
                  "status": ["ok"] * len(texts)})
    edges = reduce_records(job, prepare_records(job, t))
    lab = component_labels(edges)
    labels = {uid_of(a): uid_of(b) for a, b in zip(lab.column("node").to_pylist(), lab.column("root").to_pylist())}
    far = job.threshold - 0.1
    i, j, jac = text_jaccard_pairs(texts, min(min_j, far), job.shingle, job.ngram)
    joined = same_cluster(labels, uids, i, j)
    exact = {(a, b): s for a, b, s in zip(i.tolist(), j.tolist(), jac.tolist())}
    idx = {u: k for k, u in enumerate(uids)}
    edge_j = [exact.get(tuple(sorted((idx[a], idx[b]))), 0.0) for a, b in edge_uids(edges)]
    return {
        "texts": len(texts), "bands_rows": list(job.lsh()), "threshold": job.threshold,
        "buckets": bucket_recall(jac, joined, TEXT_BUCKETS),
        "edges": len(edge_j), "edges_below_threshold": sum(x < job.threshold - 1e-12 for x in edge_j),
        "edges_far_below": sum(x < far - 1e-12 for x in edge_j),
        "cluster_pairs_far_below_min_j": int(joined[jac < far - 1e-12].sum()),
    }


# -- images (phash_dedup) ------------------------------------------------------------------------------

def image_corpus(n: int, seed: int, size: int = 96) -> list[bytes]:
    """About n PNG/JPEG images in families: a base of random blurred blobs and gradients, variants by
    re-encoding (JPEG q 30-95), resizing (50-150%), cropping (up to 12% per side), brightness and contrast
    changes, or a pasted patch; combined at random so distances spread."""
    from PIL import Image, ImageEnhance, ImageFilter

    rng = np.random.default_rng(seed)
    out: list[bytes] = []

    def enc(im, fmt="PNG", q=90) -> bytes:
        buf = io.BytesIO()
        im.save(buf, fmt, **({"quality": q} if fmt == "JPEG" else {}))
        return buf.getvalue()

    while len(out) < n:
        base = rng.normal(0, 1, (6, 6, 3))
        big = np.kron(base, np.ones((size // 6 + 1, size // 6 + 1, 1)))[:size, :size]
        big += np.linspace(-1, 1, size)[None, :, None] * rng.normal(0, 1, 3)
        arr = np.clip(128 + 50 * big, 0, 255).astype(np.uint8)
        im = Image.fromarray(arr).filter(ImageFilter.GaussianBlur(rng.uniform(1, 8)))
        out.append(enc(im))
        for _ in range(int(rng.integers(0, 5))):
            v = im
            for _ in range(int(rng.integers(1, 3))):
                op = rng.integers(5)
                if op == 0:
                    s = rng.uniform(0.5, 1.5)
                    v = v.resize((max(8, int(v.width * s)), max(8, int(v.height * s))))
                elif op == 1:
                    w, h = v.size
                    c = rng.uniform(0, 0.12, 4)
                    v = v.crop((int(c[0] * w), int(c[1] * h), w - int(c[2] * w), h - int(c[3] * h)))
                elif op == 2:
                    v = ImageEnhance.Brightness(v).enhance(rng.uniform(0.7, 1.3))
                elif op == 3:
                    v = ImageEnhance.Contrast(v).enhance(rng.uniform(0.6, 1.4))
                else:
                    v = v.copy()
                    ps = int(v.width * rng.uniform(0.1, 0.4))
                    x0, y0 = int(rng.integers(0, v.width - ps + 1)), int(rng.integers(0, v.height - ps + 1))
                    v.paste(tuple(int(x) for x in rng.integers(0, 256, 3)), (x0, y0, x0 + ps, y0 + ps))
            out.append(enc(v, "JPEG", int(rng.integers(30, 96))))
    return out[:n]


def hamming_all_pairs(hashes: np.ndarray) -> np.ndarray:
    """(n, n) Hamming distances of uint64 hashes."""
    from curate.dedup.phash import hamming

    return hamming(hashes[:, None], hashes[None, :])


# -- embeddings (semantic_dedup) -------------------------------------------------------------------------

def embedding_corpus(n: int, seed: int, dim: int = 64, topics: int = 40) -> np.ndarray:
    """About n unit vectors: bases around `topics` random directions (clustered, like real embeddings),
    and 0-4 variants per base at a random noise level, so cosines to the base spread over 0.8-1.0."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (topics, dim))
    rows = []
    while len(rows) < n:
        b = centres[rng.integers(topics)] + rng.normal(0, 0.9, dim)
        b /= np.linalg.norm(b)
        rows.append(b)
        for _ in range(int(rng.integers(0, 5))):
            v = b + rng.normal(0, rng.uniform(0.02, 0.09), dim)
            rows.append(v / np.linalg.norm(v))
    x = np.array(rows[:n], np.float32)
    return x[rng.permutation(len(x))]


def _clusters(decisions: pa.Table, col: str) -> dict[str, str]:
    return dict(zip(decisions.column("uid").to_pylist(), decisions.column(col).to_pylist()))


def phash_recall(images: list[bytes], job, max_shown: int = 16) -> dict:
    """Run `job` (a PHashDedup) in-process; per Hamming distance of the pair's hashes (brute force over all
    pairs): pairs and the share in one cluster."""
    from curate.dedup.phash import image_hash
    from curate.stage import run_job_local

    uids = [f"i{i:06d}" for i in range(len(images))]
    t = pa.table({"uid": uids, "part": pa.array([i % 4 for i in range(len(images))], pa.int32()),
                  "image": pa.array(images, pa.binary()), "status": ["ok"] * len(images)})
    labels = _clusters(run_job_local(job, t), job.cluster_col)
    h = np.array([image_hash(b, job.hash) for b in images], np.uint64)
    d = hamming_all_pairs(h)
    i, j = np.triu_indices(len(images), k=1)
    dist = d[i, j]
    near = dist <= max_shown
    joined = same_cluster(labels, uids, i[near], j[near])
    rows = [{"distance": k, "pairs": int((dist[near] == k).sum()), "joined": int(joined[dist[near] == k].sum())}
            for k in range(max_shown + 1)]
    for r in rows:
        r["recall"] = round(r["joined"] / r["pairs"], 4) if r["pairs"] else None
    far = ~near
    far_joined = int(same_cluster(labels, uids, i[far], j[far]).sum())
    return {"images": len(images), "max_distance": job.max_distance, "per_distance": rows,
            "pairs_beyond_shown_joined": far_joined}


def semantic_recall(x: np.ndarray, job, min_cos: float = 0.85) -> dict:
    """Run `job` (a SemanticDedup) in-process; per cosine bucket (brute force over all pairs): pairs and the
    share in one cluster."""
    from curate.stage import run_job_local

    uids = [f"e{i:06d}" for i in range(len(x))]
    t = pa.table({"uid": uids, "part": pa.array([i % 4 for i in range(len(x))], pa.int32()),
                  job.column: pa.array(list(x), pa.list_(pa.float32())), "status": ["ok"] * len(x)})
    labels = _clusters(run_job_local(job, t), job.cluster_col)
    sim = np.triu(x @ x.T, k=1)
    i, j = np.nonzero(sim >= min_cos)
    cos = sim[i, j]
    joined = same_cluster(labels, uids, i, j)
    lo = np.triu(x @ x.T < job.threshold - 0.05, k=1)
    li, lj = np.nonzero(lo)
    return {"vectors": len(x), "threshold": job.threshold, "buckets": bucket_recall(cos, joined, COS_BUCKETS),
            "cluster_pairs_below_threshold_minus_0.05": int(same_cluster(labels, uids, li, lj).sum())}
