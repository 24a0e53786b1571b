"""`minhash_dedup` over a whole run in one process, as whole-array numpy operations: the runner's small-run path.

The map/group/reduce form (`MinHashDedup.prepare` / `reduce`) exists for the Ray shuffle: it ships one record
per (row, band) carrying the row's shingle sketch, and verifies every bucket on its own, so a pair that
shares 12 of 15 bands is verified 12 times. When all rows fit one process none of that is needed:

1. signatures and band keys of every row (the same functions as `prepare`: the same keys);
2. candidate pairs: one sort of all (band key, row) entries; every bucket of 2..ALL_PAIRS_MAX members gives
   all its pairs, generated vectorised; larger buckets go through `verified_pairs` itself (leader by
   leader, members in uid order as `reduce_records` gives them);
3. each distinct candidate pair verified once: intersection sizes of the rows' distinct shingle-hash sets
   for all pairs at once (one sort of the pairs' hashes), the same acceptance test as `_Bucket.similar`;
   pairs where a text has more than `sketch_size` distinct shingles use the bottom-k test of `verified_pairs`;
4. edges as node keys, then the job's own `finalize` (components, representatives, decisions).

So the edges are those of the bucket path (fewer duplicates) and the decisions identical
(tests/dedup/test_minhash_inprocess.py checks both against `run_job_local`).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from curate.dedup import minhash as mh
from curate.stage import IN_PROCESS_CPUS
from curate.dedup.graph import EDGE_SCHEMA, node_key


def _group_pairs(starts: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All index pairs (x, y), x < y, within each group [start, start + size) of a sorted array."""
    xs, ys = [], []
    for d in range(1, int(sizes.max(initial=1))):
        g = sizes > d  # groups with members at distance d
        if not g.any():
            break
        s, m = starts[g], sizes[g] - d
        # for each such group, offsets 0 .. m-1: x = s + o, y = x + d
        rep = np.repeat(s, m)
        o = np.arange(int(m.sum())) - np.repeat(np.cumsum(m) - m, m)
        xs.append(rep + o)
        ys.append(rep + o + d)
    if not xs:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(xs), np.concatenate(ys)


def candidate_pairs(keys: np.ndarray, uids: list[str]) -> tuple[np.ndarray, np.ndarray, list]:
    """Distinct row pairs (i < j) sharing a band key in a bucket of at most ALL_PAIRS_MAX members, plus the
    member lists (rows, in uid order) of the larger buckets. One band at a time: memory O(rows), not
    O(rows x bands)."""
    n, bands = keys.shape
    codes, large = [], []
    for band in range(bands):
        order = np.argsort(keys[:, band])  # member order within a bucket does not matter (pairs are unordered)
        k = keys[order, band]
        edge = np.flatnonzero(k[1:] != k[:-1]) + 1
        starts = np.concatenate([[0], edge])
        sizes = np.diff(np.concatenate([starts, [n]]))
        multi = sizes >= 2
        starts, sizes = starts[multi], sizes[multi]
        small = sizes <= mh.ALL_PAIRS_MAX
        x, y = _group_pairs(starts[small], sizes[small])
        a, b = order[x].astype(np.int64), order[y].astype(np.int64)
        codes.append(np.minimum(a, b) * n + np.maximum(a, b))
        large += [sorted(order[s:s + m].tolist(), key=uids.__getitem__) for s, m in zip(starts[~small], sizes[~small])]
    code = np.unique(np.concatenate(codes)) if codes else np.empty(0, np.int64)
    return code // n, code % n, large


def intersections(i: np.ndarray, j: np.ndarray, values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """|set_i ∩ set_j| for each pair, from per-row distinct values (CSR: values[offsets[r]:offsets[r+1]]).
    One sort of every pair's values tagged with the pair index; a value present in both appears twice."""
    lens = np.diff(offsets)
    p = np.arange(len(i), dtype=np.int64)
    out = np.zeros(len(i), np.int64)
    # in slices of pairs to bound the (pairs x shingles) arrays
    step = max(1, 4_000_000 // max(1, (int(lens.mean()) if len(lens) else 1) * 2))
    for lo in range(0, len(i), step):
        sl = slice(lo, lo + step)
        ends = []
        for side in (i[sl], j[sl]):
            cnt = lens[side]
            idx = np.repeat(offsets[side] - np.cumsum(cnt) + cnt, cnt) + np.arange(int(cnt.sum()))
            ends.append((np.repeat(p[sl], cnt) << 32) | values[idx].astype(np.int64))
        tagged = np.sort(np.concatenate(ends))
        dup = tagged[1:] == tagged[:-1]
        out[lo:lo + len(p[sl])] = np.bincount((tagged[1:][dup] >> 32) - lo, minlength=len(p[sl]))
    return out


def verified(i, j, values, offsets, sizes, k: int, threshold: float) -> np.ndarray:
    """Mask of the pairs that pass `_Bucket.similar`: exact Jaccard when both sets have at most k distinct
    hashes; the bottom-k test otherwise (per pair, as `verified_pairs` does)."""
    whole = sizes <= k
    both = whole[i] & whole[j]
    ok = np.zeros(len(i), bool)
    inter = intersections(i[both], j[both], values, offsets)
    union = sizes[i[both]] + sizes[j[both]] - inter
    ok[both] = inter >= (threshold - 1e-12) * union
    for p in np.flatnonzero(~both):
        a, b = i[p], j[p]
        sa = values[offsets[a]:offsets[a] + min(k, sizes[a])]
        sb = values[offsets[b]:offsets[b] + min(k, sizes[b])]
        ok[p] = mh._accepts(*mh.sketch_jaccard(sa, int(sizes[a]), sb, int(sizes[b])), threshold)
    return ok


def _shingle_sets(job: "mh.MinHashDedup", table: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values, offsets, normalised length in characters) of every row's distinct shingle hashes. Word
    shingles: texts normalised and hashed in the compiled kernels straight from the Arrow column."""
    if job.shingle == "word":
        from curate.dedup._minhash_kernel import normalised_buffer, word_sets_of_buffer

        buf, offsets, lengths = normalised_buffer(table.column("text"), job.max_chars)
        return (*word_sets_of_buffer(buf, offsets, job.ngram, IN_PROCESS_CPUS.get()), lengths)
    texts = job.texts(table)
    return (*job.shingle_sets(texts), np.fromiter(map(len, texts), np.int64, len(texts)))


def in_process_edges(job: "mh.MinHashDedup", table: pa.Table) -> pa.Table:
    """Verified edges (EDGE_SCHEMA) of all active rows of `table` (uid, part, text[, score_col])."""
    values, offsets, lengths = _shingle_sets(job, table)
    idx = np.flatnonzero(lengths)
    if len(idx) < 2:
        return EDGE_SCHEMA.empty_table()
    sub = table.take(pa.array(idx))
    # empty texts have no shingles, so dropping their rows leaves `values` as it is
    offsets, lengths = np.concatenate([[0], offsets[idx + 1]]), lengths[idx]
    keys = job.band_keys_of_sets(values, offsets, IN_PROCESS_CPUS.get())
    uids = sub.column("uid").to_pylist()
    i, j, large = candidate_pairs(keys, uids)
    del keys
    sizes = np.diff(offsets)
    ok = verified(i, j, values, offsets, sizes, job.sketch_size, job.threshold)
    pairs = [np.stack([i[ok], j[ok]], 1)]
    for members in large:  # rare: popular templates, all-identical corpora
        sk = [values[offsets[r]:offsets[r] + min(job.sketch_size, sizes[r])] for r in members]
        found = mh.verified_pairs(sk, sizes[members].tolist(), job.threshold)
        if found:
            pairs.append(np.array([(members[a], members[b]) for a, b in found], np.int64).reshape(-1, 2))
    pairs = np.unique(np.concatenate(pairs), axis=0) if len(pairs) > 1 else pairs[0]
    if not len(pairs):
        return EDGE_SCHEMA.empty_table()
    used = np.unique(pairs)
    parts = sub.column("part").to_pylist()
    ranks = job._ranks(sub, lengths)
    key = {int(r): node_key(uids[r], parts[r], float(ranks[r])) for r in used}
    return pa.table({"a": [key[a] for a in pairs[:, 0].tolist()], "b": [key[b] for b in pairs[:, 1].tolist()]},
                    schema=EDGE_SCHEMA)
