"""Generated corpora with planted near-duplicates whose exact Jaccard similarity is known by brute force."""
from __future__ import annotations

import random

from curate.dedup.minhash import normalise_text, shingles


def planted_corpus(n_base: int = 300, seed: int = 0, words: int = 100, edits=(0, 1, 3, 5, 20, 35)):
    """Base documents of unique random words plus edited copies at several target similarities."""
    rng = random.Random(seed)
    texts: list[str] = []
    counter = iter(range(10**9))
    for _ in range(n_base):
        base = [f"w{next(counter)}" for _ in range(words)]
        texts.append(" ".join(base))
        # k replaced words at the end -> word-3-gram Jaccard (96-k)/(100+k) to the base: 1, .94, .90, .87, .63, .45
        # (the nearest planted level is 0.07 from the 0.8 threshold: MinHash with 128 permutations has a std of
        # about 0.035 there; bench/dedup.py also measures a corpus crowded at the threshold)
        for k in rng.sample(list(edits), 3):
            doc = list(base)
            # replace k words at the end so the shingle overlap is controlled
            for i in range(words - k, words):
                doc[i] = f"w{next(counter)}"
            texts.append(" ".join(doc))
    rng.shuffle(texts)
    return texts


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def true_pairs(texts: list[str], threshold: float, kind: str = "word", n: int = 3) -> set[tuple[int, int]]:
    """Brute force over all pairs (with an inverted index only to skip pairs sharing no shingle)."""
    sets = [set(shingles(normalise_text(t), kind, n)) for t in texts]
    index: dict[bytes, list[int]] = {}
    for i, s in enumerate(sets):
        for g in s:
            index.setdefault(g, []).append(i)
    cand = set()
    for ids in index.values():
        for x in range(len(ids)):
            for y in range(x + 1, len(ids)):
                cand.add((ids[x], ids[y]))
    return {(i, j) for i, j in cand if jaccard(sets[i], sets[j]) >= threshold}
