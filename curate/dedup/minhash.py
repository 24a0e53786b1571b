"""`minhash_dedup`: text near-duplicates with MinHash LSH, as a map -> shuffle -> reduce -> finalize Job.

Signatures are datasketch's (scheme "affine32", `hashfunc=sha1_hash32`, permutations from
`MinHash(num_perm, seed)`), computed vectorised: each distinct shingle of a batch is SHA1-hashed once,
then all shingles of the batch go through the permutations as one numpy array and a segmented min
(`np.minimum.reduceat`). `tests/dedup` checks the result equals `MinHash.update_batch` bit for bit.

LSH for recall at the threshold: bands x rows are the banding within `num_perm` that makes a pair at
exactly `threshold` a candidate with probability >= `recall` (0.97) with the fewest false candidates
(`lsh_params`; 15 x 7 at 0.8 / 128, where datasketch's balanced choice, 9 x 13, finds such a pair 40%
of the time). `prepare` emits one record per (row, band) keyed by a 64-bit hash of the band, carrying the
row's sketch: its distinct shingle hashes (all of them up to `sketch_size`, else the `sketch_size`
smallest). The runner groups records by key (a Ray shuffle at scale); `reduce` verifies the candidates of
one bucket on their shingle sets: the exact Jaccard when both are whole, a bottom-k estimate accepted
down to 2.33 standard errors below the threshold otherwise (P >= 0.99 at the threshold). So a pair at or
above the threshold is found with P >= 0.97, and a pair below it is never joined directly when both texts
are whole (longer ones: only within ~0.04 below it; anything else only through a chain of verified
pairs); tests/dedup/test_minhash_recall.py measures both against brute force. `finalize`
(driver, edges only: see curate/dedup/graph.py) takes connected components and picks one representative
per cluster by `keep`: `first` (smallest uid), `longest` (longest normalised text) or `score` (highest
`score_col`). The others are dropped as `near_duplicate` with `dup_of` = the representative; every
active row gets `minhash_cluster` (the representative's uid; its own uid when it has no near duplicate).
Texts that are empty after normalisation are dropped as `near_dup_empty_text`, never clustered.
"""
from __future__ import annotations

import functools
import re
import struct
import unicodedata
from hashlib import sha1
from typing import ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from curate import schema
from curate.dedup.graph import EDGE_SCHEMA, ClusterJob, node_key
from curate.stage import register

_M32 = np.uint32
_FMIX = (_M32(16), _M32(0x85EBCA6B), _M32(13), _M32(0xC2B2AE35), _M32(16))
_PUNCT = re.compile(r"[^\w\s]+", re.UNICODE)
# ASCII fast path: the same mapping as _PUNCT for ASCII punctuation (\w keeps letters, digits and "_")
_ASCII_PUNCT = str.maketrans({c: " " for c in map(chr, range(128)) if not (c.isalnum() or c == "_" or c.isspace())})
# buckets larger than this are verified leader-by-leader instead of all pairs
ALL_PAIRS_MAX = 64
MAX_LEADERS = 64
# bottom-k verification accepts estimates down to this many standard errors below the threshold
Z_LOWER = 2.33


def normalise_text(text: str | bytes | None) -> str:
    """NFKC, lower case, punctuation to spaces, collapsed white space. Bytes are decoded as UTF-8 with
    invalid sequences replaced, so non-UTF-8 input never raises."""
    if text is None:
        return ""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", errors="replace")
    if text.isascii():
        return " ".join(text.lower().translate(_ASCII_PUNCT).split())
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(_PUNCT.sub(" ", text).split())


def shingles(text: str, kind: str = "word", n: int = 3) -> list[bytes]:
    """Distinct word or character n-grams of an already normalised text (one shingle if it is shorter than n)."""
    if not text:
        return []
    if kind == "word":
        toks = text.split(" ")
        if len(toks) <= n:
            return [text.encode("utf-8", "surrogatepass")]
        grams = {" ".join(toks[i:i + n]) for i in range(len(toks) - n + 1)}
    else:
        if len(text) <= n:
            return [text.encode("utf-8", "surrogatepass")]
        grams = {text[i:i + n] for i in range(len(text) - n + 1)}
    return [g.encode("utf-8", "surrogatepass") for g in grams]


def _fmix32(h: np.ndarray) -> np.ndarray:
    s1, m1, s2, m2, s3 = _FMIX
    h = h ^ (h >> s1)
    h = h * m1
    h = h ^ (h >> s2)
    h = h * m2
    return h ^ (h >> s3)


@functools.lru_cache(maxsize=8)
def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's affine32 permutation parameters (a, b) for (num_perm, seed): its
    `MinHash._init_permutations`, drawn the same way here because `import datasketch` pulls in scipy
    (~0.25 s on every run and worker) for these two arrays (tests/dedup check they equal datasketch's)."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)  # odd: a bijection
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


def _s_curve(j: np.ndarray, bands: int, rows: np.ndarray) -> np.ndarray:
    """P(two sets of Jaccard j share at least one band) for `bands` bands of `rows` rows."""
    return 1 - (1 - j ** rows) ** bands


@functools.lru_cache(maxsize=32)
def balanced_lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) minimising false positives + false negatives at `threshold`, equally weighted: the
    criterion of datasketch's `_optimal_param`, integrated numerically on a fine grid for all (b, r) at
    once (datasketch's scipy loop takes seconds per process; tests check both choose the same). It finds
    pairs at the threshold only about half the time (9 x 13 at 0.8: P = 0.40), so `minhash_dedup` does
    not use it by default; kept as the reference point of the bench."""
    grid = 4001
    lo = np.linspace(0.0, threshold, grid)
    hi = np.linspace(threshold, 1.0, grid)
    best, opt = np.inf, (1, 1)
    for b in range(1, num_perm + 1):
        r = np.arange(1, num_perm // b + 1, dtype=np.float64)[:, None]
        fp = np.trapezoid(_s_curve(lo[None, :], b, r), lo, axis=1)
        fn = np.trapezoid(1 - _s_curve(hi[None, :], b, r), hi, axis=1)
        err = 0.5 * fp + 0.5 * fn
        i = int(np.argmin(err))
        if err[i] < best - 1e-12:
            best, opt = float(err[i]), (b, i + 1)
    return opt


@functools.lru_cache(maxsize=32)
def lsh_params(threshold: float, num_perm: int, recall: float = 0.97) -> tuple[int, int]:
    """(bands, rows) for recall at the threshold: among the bandings within `num_perm` whose S-curve makes
    a pair at exactly `threshold` a candidate with probability >= `recall`, the one with the smallest
    false-positive integral (datasketch's fp term: expected candidates below the threshold, which cost
    verification time only, never a wrong decision: candidates are verified on their shingles). Pairs
    above the threshold are candidates even more often (the curve rises). If no banding reaches `recall`
    (very few permutations), the one with the highest P at the threshold. 0.8 / 128: 15 x 7, P = 0.971."""
    lo = np.linspace(0.0, threshold, 4001)
    best, opt = (np.inf, np.inf), (1, 1)
    fallback, fb_opt = -1.0, (1, 1)
    for r in range(1, num_perm + 1):
        for b in range(1, num_perm // r + 1):
            p = float(_s_curve(np.float64(threshold), b, np.float64(r)))
            if p >= recall:
                fp = float(np.trapezoid(_s_curve(lo, b, np.float64(r)), lo))
                if (fp, b) < best:
                    best, opt = (fp, b), (b, r)
                break  # more bands only add false positives
            if p > fallback:
                fallback, fb_opt = p, (b, r)
    return opt if np.isfinite(best[0]) else fb_opt


def shingle_hashes(shingle_lists: list[list[bytes]]) -> tuple[np.ndarray, np.ndarray]:
    """(flat uint32 hashes, per-list lengths): datasketch's `sha1_hash32` of every shingle, each distinct
    shingle of the batch hashed once (captions share many n-grams)."""
    unpack = struct.Struct("<I").unpack_from
    lens = np.fromiter(map(len, shingle_lists), np.int64, len(shingle_lists))
    flat = [s for sh in shingle_lists for s in sh]
    uniq = dict.fromkeys(flat)
    hashes = dict(zip(uniq, [unpack(sha1(s).digest())[0] for s in uniq]))
    return np.fromiter(map(hashes.__getitem__, flat), np.uint32, len(flat)), lens


def signatures(shingle_lists: list[list[bytes]], num_perm: int = 128, seed: int = 1,
               chunk: int = 8192) -> np.ndarray:
    """(len(shingle_lists), num_perm) uint32 MinHash signatures, equal to datasketch's affine32 MinHash
    updated with each list. Empty lists give the empty signature (all 2**32-1)."""
    return signatures_of_hashes(*shingle_hashes(shingle_lists), num_perm, seed, chunk)


def signatures_of_hashes(raw: np.ndarray, lens: np.ndarray, num_perm: int = 128, seed: int = 1,
                         chunk: int = 8192) -> np.ndarray:
    """`signatures` from `shingle_hashes` output."""
    a, b = permutations(num_perm, seed)
    n = len(lens)
    out = np.full((n, num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
    if not len(raw):
        return out
    hv = _fmix32(raw)
    rows = np.flatnonzero(lens)
    starts = np.concatenate([[0], np.cumsum(lens[rows])[:-1]])
    # process whole rows in chunks of about `chunk` shingles to bound the (shingles x num_perm) array
    i = 0
    with np.errstate(over="ignore"):
        while i < len(rows):
            j = i
            total = 0
            while j < len(rows) and (total == 0 or total + lens[rows[j]] <= chunk):
                total += lens[rows[j]]
                j += 1
            lo = starts[i]
            # (num_perm, shingles): each row's shingles are contiguous along the fast axis
            phv = a[:, None] * hv[None, lo:lo + total] + b[:, None]
            out[rows[i:j]] = np.minimum.reduceat(phv, starts[i:j] - lo, axis=1).T
            i = j
    return out


def distinct_sets(raw: np.ndarray, lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each list's distinct hashes, sorted (CSR: values, offsets) from `shingle_hashes` output."""
    n = len(lens)
    row = np.repeat(np.arange(n), lens)
    order = np.lexsort((raw, row))
    v, r = raw[order], row[order]
    first = np.ones(len(v), bool)
    first[1:] = (v[1:] != v[:-1]) | (r[1:] != r[:-1])
    sizes = np.bincount(r[first], minlength=n)
    return v[first], np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def sketches(raw: np.ndarray, lens: np.ndarray, k: int) -> tuple[pa.Array, np.ndarray]:
    """Per list: its `k` smallest distinct shingle hashes, sorted (a large_binary of little-endian uint32),
    and its number of distinct hashes. A list with at most `k` is kept whole, so two such lists give
    their exact Jaccard; longer ones are bottom-k sketches (see `sketch_jaccard`). Vectorised: one sort."""
    n = len(lens)
    v, set_offsets = distinct_sets(raw, lens)
    sizes = np.diff(set_offsets)
    keep = (np.arange(len(v)) - np.repeat(set_offsets[:-1], sizes)) < k
    v = np.ascontiguousarray(v[keep], dtype="<u4")
    offsets = np.concatenate([[0], np.cumsum(np.minimum(sizes, k)) * 4]).astype(np.int64)
    arr = pa.Array.from_buffers(pa.large_binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(v.tobytes())])
    return arr, sizes.astype(np.int32)


def sketch_jaccard(a: np.ndarray, na: int, b: np.ndarray, nb: int, inter: int | None = None) -> tuple[float, int]:
    """(Jaccard, sample size) of two sets from their sketches (sorted distinct hashes, `na`/`nb` distinct in
    all). Both whole: the exact Jaccard (sample size 0). Otherwise the bottom-k estimate: of the k smallest
    hashes of the union (k = the shorter sketch), the share that is in both sets; its sample size is k."""
    if len(a) == na and len(b) == nb:
        if inter is None:
            inter = np.intersect1d(a, b, assume_unique=True).size
        union = na + nb - inter
        return (inter / union if union else 1.0), 0
    k = min(len(a), len(b))
    u = np.union1d(a, b)[:k]
    both = np.isin(u, a, assume_unique=True) & np.isin(u, b, assume_unique=True)
    return float(both.mean()) if k else 0.0, k


def band_keys(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n, bands) int64 keys: a 64-bit hash of (band index, the band's rows of the signature)."""
    n = sigs.shape[0]
    keys = np.empty((n, bands), np.uint64)
    p = np.uint64(0x100000001B3)
    with np.errstate(over="ignore"):
        for band in range(bands):
            h = np.full(n, np.uint64(0xCBF29CE484222325) ^ np.uint64(band + 1) * np.uint64(0x9E3779B97F4A7C15))
            for r in range(band * rows, (band + 1) * rows):
                h = (h ^ sigs[:, r].astype(np.uint64)) * p
            h ^= h >> np.uint64(33)
            h *= np.uint64(0xFF51AFD7ED558CCD)
            h ^= h >> np.uint64(33)
            keys[:, band] = h
    return keys.view(np.int64)


def sketch_lists(col: pa.ChunkedArray | pa.Array) -> list[np.ndarray]:
    """The sorted uint32 arrays of a large_binary sketch column."""
    return [np.frombuffer(b, "<u4") for b in col.to_pylist()]


def _accepts(j: float, k: int, threshold: float) -> bool:
    """Exact Jaccard (k = 0): j >= threshold. A bottom-k estimate: j >= threshold - Z_LOWER standard errors
    at the threshold, so a pair at the threshold passes with P >= 0.99 (one far below it does not)."""
    if k == 0:
        return j >= threshold - 1e-12
    return bool(j >= threshold - Z_LOWER * np.sqrt(threshold * (1 - threshold) / k))


class _Bucket:
    """The members of one LSH bucket, compared pair by pair on their shingle-hash sketches. Whole sets
    (the common case: texts up to `sketch_size` distinct shingles) are intersected as Python sets, which
    for tens of values is several times faster than numpy's set routines."""

    def __init__(self, sk: list[bytes], sizes: list[int], threshold: float):
        self.sk, self.sizes, self.threshold = sk, sizes, threshold
        self.whole = [len(b) // 4 == n for b, n in zip(sk, sizes)]
        self.sets: dict[int, set] = {}

    def _set(self, i: int) -> set:
        s = self.sets.get(i)
        if s is None:
            s = self.sets[i] = set(memoryview(self.sk[i]).cast("I"))
        return s

    def similar(self, i: int, j: int) -> bool:
        if self.whole[i] and self.whole[j]:
            inter = len(self._set(i).intersection(memoryview(self.sk[j]).cast("I")))
            return inter >= (self.threshold - 1e-12) * (self.sizes[i] + self.sizes[j] - inter)
        a, b = np.frombuffer(self.sk[i], "<u4"), np.frombuffer(self.sk[j], "<u4")
        return _accepts(*sketch_jaccard(a, self.sizes[i], b, self.sizes[j]), self.threshold)


def verified_pairs(sk: list, sizes, threshold: float) -> list[tuple[int, int]]:
    """Index pairs of one bucket whose shingle sets reach `threshold` Jaccard (exact for sets of at most
    `sketch_size` distinct shingles, a lower-bound test on bottom-k sketches beyond). `sk`: each member's
    sketch as bytes (little-endian uint32) or a uint32 array.

    Small buckets: all pairs. Large ones (an all-identical corpus, a popular template): leader by
    leader, each unmatched member linked to the first leader it matches, so the work is
    O(members x leaders) and the components are the same for the clusters that matter."""
    sk = [np.asarray(x, "<u4").tobytes() if isinstance(x, np.ndarray) else x for x in sk]
    bucket = _Bucket(sk, [int(x) for x in sizes], threshold)
    n = len(sk)
    if n <= ALL_PAIRS_MAX:
        return [(i, j) for i in range(n - 1) for j in range(i + 1, n) if bucket.similar(i, j)]
    pairs: list[tuple[int, int]] = []
    left = list(range(n))
    for _ in range(MAX_LEADERS):
        if len(left) < 2:
            break
        lead, rest = left[0], left[1:]
        hit = [k for k in rest if bucket.similar(lead, k)]
        pairs += [(lead, k) for k in hit]
        hits = set(hit)
        left = [k for k in rest if k not in hits]
    return pairs


def _node_keys(uids: list[str], parts: list[int], ranks: np.ndarray) -> pa.Array:
    """graph.node_key of every row, computed once per row in the map (not per edge in every bucket it
    shares): the (part, rank) prefix and suffix are built once per distinct pair."""
    cache: dict = {}
    out = []
    for u, p, r in zip(uids, parts, ranks.tolist()):
        fix = cache.get((p, r))
        if fix is None:
            k = node_key("", p, r)
            fix = cache[(p, r)] = (k[:17], k[17:])
        out.append(fix[0] + u + fix[1])
    return pa.array(out, pa.string())


@register
class MinHashDedup(ClusterJob):
    """Drop text near-duplicates (MinHash LSH at a Jaccard threshold), keeping one sample per cluster."""

    name: ClassVar[str] = "minhash_dedup"
    key_prepass: ClassVar[bool] = True  # prepare (signatures, ~30 CPU-s per 1M captions) is cheap enough to run twice
    cluster_col: ClassVar[str] = "minhash_cluster"
    cluster_reason: ClassVar[str] = "near_duplicate"
    reads: ClassVar[tuple[str, ...]] = ("text",)
    writes: ClassVar[dict[str, pa.DataType]] = {"dup_of": pa.string(), "minhash_cluster": pa.string()}
    reasons: ClassVar[dict[str, str]] = {
        "near_duplicate": "text near-duplicate (MinHash LSH) of the sample in `dup_of`, which was kept",
        "near_dup_empty_text": "text empty or white space after normalisation: near-dup dedup cannot compare it",
    }

    threshold: float = Field(0.8, gt=0, le=1)  # shingle-set Jaccard similarity at which texts are near-duplicates
    num_perm: int = Field(128, ge=8, le=1024)  # MinHash permutations: more = finer estimates, more CPU
    seed: int = 1  # seed of the MinHash permutations
    shingle: Literal["word", "char"] = "word"  # word or character n-grams (char: text without spaces, very short text)
    ngram: int = Field(3, ge=1, le=32)  # shingle length in words or characters
    keep: Literal["first", "longest", "score"] = "first"  # first: smallest uid; longest: longest text; score: score_col
    score_col: str | None = None  # column that ranks keepers for keep: score (nulls last)
    max_chars: int = Field(200_000, ge=1)  # very long documents: only their first max_chars count
    bands: int | None = Field(None, ge=1)  # LSH bands (set with rows; bands x rows <= num_perm); None: from recall
    rows: int | None = Field(None, ge=1)  # LSH rows per band (set with bands); None: from recall
    # P(a pair at the threshold becomes a candidate) the default banding must reach (see `lsh_params`)
    recall: float = Field(0.97, gt=0, lt=1)  # auto banding: P(a pair at the threshold is a candidate)
    # distinct shingles a text may have for exact verification; longer texts are verified on their
    # `sketch_size` smallest shingle hashes (4 bytes each in every band record)
    sketch_size: int = Field(512, ge=16, le=65536)  # bottom-k sketch size for texts with more shingles

    @model_validator(mode="after")
    def _check(self):
        if self.keep == "score" and not self.score_col:
            raise ValueError("keep: score needs score_col")
        if (self.bands is None) != (self.rows is None):
            raise ValueError("set both bands and rows, or neither")
        if self.bands and self.bands * self.rows > self.num_perm:
            raise ValueError("bands * rows must be <= num_perm")
        return self

    def needs(self) -> tuple[str, ...]:
        return ("text", self.score_col) if self.keep == "score" else ("text",)

    def lsh(self) -> tuple[int, int]:
        return (self.bands, self.rows) if self.bands else lsh_params(self.threshold, self.num_perm, self.recall)

    # -- map -------------------------------------------------------------------------------------------
    def texts(self, table: pa.Table) -> list[str]:
        return [normalise_text(t[: self.max_chars] if t else t) for t in table.column("text").to_pylist()]

    def signatures_of(self, texts: list[str]) -> np.ndarray:
        return signatures([shingles(t, self.shingle, self.ngram) for t in texts], self.num_perm, self.seed)

    def shingle_sets(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Each normalised text's distinct shingle hashes, sorted (CSR: values, offsets). Word shingles go
        through the compiled kernel (curate/dedup/_minhash_kernel.py), character shingles through Python."""
        if self.shingle == "word":
            from curate.dedup._minhash_kernel import word_shingle_sets

            return word_shingle_sets(texts, self.ngram)
        return distinct_sets(*shingle_hashes([shingles(t, self.shingle, self.ngram) for t in texts]))

    def signatures_of_sets(self, values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        from curate.dedup._minhash_kernel import signatures_of_sets

        return signatures_of_sets(values, offsets, *permutations(self.num_perm, self.seed))

    def band_keys_of_sets(self, values: np.ndarray, offsets: np.ndarray, threads: int = 1) -> np.ndarray:
        """(rows, bands) LSH band keys, as `band_keys(signatures)`, from the compiled kernel."""
        from curate.dedup._minhash_kernel import band_keys_of_sets

        return band_keys_of_sets(values, offsets, *permutations(self.num_perm, self.seed), *self.lsh(),
                                 threads=threads)

    def keys_and_sketches(self, texts: list[str]) -> tuple[np.ndarray, pa.Array, np.ndarray]:
        """(rows, bands) band keys, sketches and distinct-shingle counts of normalised texts."""
        values, offsets = self.shingle_sets(texts)
        return (self.band_keys_of_sets(values, offsets), *sketches(values, np.diff(offsets), self.sketch_size))

    def _ranks(self, table: pa.Table, lengths) -> np.ndarray:
        """Lower ranks are kept; `lengths`: each row's normalised text length in characters."""
        if self.keep == "longest":
            return -np.asarray(lengths, np.float64)
        if self.keep == "score":
            s = pc.cast(table.column(self.score_col), pa.float64()).to_numpy(zero_copy_only=False)
            return np.where(np.isnan(s), np.inf, -s)
        return np.zeros(table.num_rows, np.float64)

    def prepare(self, table: pa.Table) -> pa.Table:
        texts = self.texts(table)
        nonempty = np.array([bool(t) for t in texts], bool)
        idx = np.flatnonzero(nonempty)
        bands, rows = self.lsh()
        if len(idx) == 0:
            return self._record_schema().empty_table()
        keys, sk, sizes = self.keys_and_sketches([texts[i] for i in idx])  # keys: (n, bands)
        n = len(idx)
        rep = np.repeat(np.arange(n), bands)
        sub = table.take(pa.array(idx))
        ranks = self._ranks(sub, [len(texts[i]) for i in idx])
        take = pa.array(rep)
        return pa.table({
            "key": pa.array(keys.reshape(-1), pa.int64()),
            "uid": sub.column("uid").take(take),
            "node": _node_keys(sub.column("uid").to_pylist(), sub.column("part").to_pylist(), ranks).take(take),
            "n": pa.array(sizes[rep], pa.int32()),
            "sketch": sk.take(take),
        }, schema=self._record_schema())

    @staticmethod
    def _record_schema() -> pa.Schema:
        return pa.schema([("key", pa.int64()), ("uid", pa.string()), ("node", pa.string()),
                          ("n", pa.int32()), ("sketch", pa.large_binary())])

    def in_process(self, table: pa.Table) -> pa.Table:
        """The whole run in one process, vectorised (curate/dedup/minhash_inprocess.py): same decisions."""
        from curate.dedup.minhash_inprocess import in_process_edges

        return self.finalize(in_process_edges(self, table))

    # -- reduce: one LSH bucket -> verified edges --------------------------------------------------------
    def reduce_schema(self) -> pa.Schema:
        return EDGE_SCHEMA

    def reduce(self, group: pa.Table) -> pa.Table:
        if group.num_rows < 2:
            return EDGE_SCHEMA.empty_table()
        pairs = verified_pairs(group.column("sketch").to_pylist(), group.column("n").to_pylist(), self.threshold)
        if not pairs:
            return EDGE_SCHEMA.empty_table()
        nodes = group.column("node").to_pylist()
        return pa.table({"a": [nodes[i] for i, _ in pairs], "b": [nodes[j] for _, j in pairs]}, schema=EDGE_SCHEMA)

    # -- finalize (driver, edges only) and per-part completion ------------------------------------------
    def complete(self, table: pa.Table) -> pa.Table:
        table = super().complete(table)
        active = schema.active_mask(table)
        text = table.column("text")
        # a text with an ASCII letter, digit or "_" is never empty after normalisation: only the others
        # (few: empty, punctuation, non-ASCII) go through normalise_text
        maybe = pc.invert(pc.fill_null(pc.match_substring_regex(text, "[0-9A-Za-z_]"), False))
        empty = np.zeros(table.num_rows, bool)
        for i in np.flatnonzero(maybe.to_numpy(zero_copy_only=False)):
            t = text[int(i)].as_py()
            empty[i] = not normalise_text(t[: self.max_chars] if t else t)
        mask = pc.and_(active, pa.array(empty))
        if pc.any(mask).as_py():
            table = schema.mark(table, mask, schema.DROPPED, self.name, "near_dup_empty_text")
            table = schema.set_rows(table, mask, {"minhash_cluster": None})
        return table
