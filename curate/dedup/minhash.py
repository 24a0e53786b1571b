"""`minhash_dedup`: text near-duplicates with MinHash LSH, as a map -> shuffle -> reduce -> finalize Job.

Signatures are datasketch's (scheme "affine32", `hashfunc=sha1_hash32`, permutations from
`MinHash(num_perm, seed)`), computed vectorised: each distinct shingle of a batch is SHA1-hashed once,
then all shingles of the batch go through the permutations as one numpy array and a segmented min
(`np.minimum.reduceat`). `tests/dedup` checks the result equals `MinHash.update_batch` bit for bit.

LSH: bands x rows chosen from the threshold by datasketch's `_optimal_param` (equal false-positive and
false-negative weights). `prepare` emits one record per (row, band) keyed by a 64-bit hash of the band;
the runner groups records by key (a Ray shuffle at scale); `reduce` verifies the candidates of one
bucket with their 8-bit signature digests (estimated Jaccard >= threshold) and emits edges; `finalize`
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
from curate.dedup.graph import EDGE_SCHEMA, ClusterJob, edges_table
from curate.stage import Job, register

_M32 = np.uint32
_FMIX = (_M32(16), _M32(0x85EBCA6B), _M32(13), _M32(0xC2B2AE35), _M32(16))
_PUNCT = re.compile(r"[^\w\s]+", re.UNICODE)
# ASCII fast path: the same mapping as _PUNCT for ASCII punctuation (\w keeps letters, digits and "_")
_ASCII_PUNCT = str.maketrans({c: " " for c in map(chr, range(128)) if not (c.isalnum() or c == "_" or c.isspace())})
# buckets larger than this are verified leader-by-leader instead of all pairs
ALL_PAIRS_MAX = 64
MAX_LEADERS = 64


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
    """datasketch's affine32 permutation parameters (a, b) for (num_perm, seed)."""
    from datasketch import MinHash

    a, b = MinHash(num_perm=num_perm, seed=seed, scheme="affine32").permutations
    return a.astype(np.uint32), b.astype(np.uint32)


@functools.lru_cache(maxsize=32)
def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) minimising false positives + false negatives at `threshold`, equally weighted: the
    criterion of datasketch's `_optimal_param`, integrated numerically on a fine grid for all (b, r) at
    once (datasketch's scipy loop takes seconds per process; tests check both choose the same)."""
    grid = 4001
    lo = np.linspace(0.0, threshold, grid)
    hi = np.linspace(threshold, 1.0, grid)
    best, opt = np.inf, (1, 1)
    for b in range(1, num_perm + 1):
        r = np.arange(1, num_perm // b + 1, dtype=np.float64)[:, None]
        fp = np.trapezoid(1 - (1 - lo[None, :] ** r) ** b, lo, axis=1)
        fn = np.trapezoid((1 - hi[None, :] ** r) ** b, hi, axis=1)
        err = 0.5 * fp + 0.5 * fn
        i = int(np.argmin(err))
        if err[i] < best - 1e-12:
            best, opt = float(err[i]), (b, i + 1)
    return opt


def signatures(shingle_lists: list[list[bytes]], num_perm: int = 128, seed: int = 1,
               chunk: int = 8192) -> np.ndarray:
    """(len(shingle_lists), num_perm) uint32 MinHash signatures, equal to datasketch's affine32 MinHash
    updated with each list. Empty lists give the empty signature (all 2**32-1)."""
    a, b = permutations(num_perm, seed)
    n = len(shingle_lists)
    out = np.full((n, num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
    unpack = struct.Struct("<I").unpack_from
    lens = np.fromiter(map(len, shingle_lists), np.int64, n)
    flat = [s for sh in shingle_lists for s in sh]
    if not flat:
        return out
    # each distinct shingle of the batch is SHA1-hashed once (captions share many n-grams)
    uniq = dict.fromkeys(flat)
    hashes = dict(zip(uniq, [unpack(sha1(s).digest())[0] for s in uniq]))
    hv = _fmix32(np.fromiter(map(hashes.__getitem__, flat), np.uint32, len(flat)))
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


def verified_pairs(digests: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Index pairs of one bucket whose estimated Jaccard (share of equal 8-bit digest values) >= threshold.

    Small buckets: all pairs. Large ones (an all-identical corpus, a popular template): leader by
    leader, each unmatched member linked to the first leader it matches, so the work is
    O(members x leaders) and the components are the same for the clusters that matter."""
    n = digests.shape[0]
    # an 8-bit digest matches by chance with p = 1/256: correct the estimate for it
    thr = threshold + (1 - threshold) / 256.0
    if n <= ALL_PAIRS_MAX:
        sim = (digests[:, None, :] == digests[None, :, :]).mean(axis=2)
        i, j = np.nonzero(np.triu(sim >= thr, k=1))
        return list(zip(i.tolist(), j.tolist()))
    pairs: list[tuple[int, int]] = []
    left = np.arange(n)
    for _ in range(MAX_LEADERS):
        if len(left) < 2:
            break
        lead = left[0]
        sim = (digests[left[1:]] == digests[lead]).mean(axis=1)
        hit = left[1:][sim >= thr]
        pairs += [(int(lead), int(k)) for k in hit]
        left = np.setdiff1d(left[1:], hit, assume_unique=True)
    return pairs


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

    threshold: float = Field(0.8, gt=0, le=1)
    num_perm: int = Field(128, ge=8, le=1024)
    seed: int = 1
    shingle: Literal["word", "char"] = "word"
    ngram: int = Field(3, ge=1, le=32)
    keep: Literal["first", "longest", "score"] = "first"
    score_col: str | None = None
    max_chars: int = Field(200_000, ge=1)  # very long documents: only their first max_chars count
    bands: int | None = Field(None, ge=1)
    rows: int | None = Field(None, ge=1)

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
        return (self.bands, self.rows) if self.bands else lsh_params(self.threshold, self.num_perm)

    # -- map -------------------------------------------------------------------------------------------
    def texts(self, table: pa.Table) -> list[str]:
        return [normalise_text(t[: self.max_chars] if t else t) for t in table.column("text").to_pylist()]

    def signatures_of(self, texts: list[str]) -> np.ndarray:
        return signatures([shingles(t, self.shingle, self.ngram) for t in texts], self.num_perm, self.seed)

    def _ranks(self, table: pa.Table, texts: list[str]) -> np.ndarray:
        if self.keep == "longest":
            return -np.array([len(t) for t in texts], np.float64)
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
        sigs = self.signatures_of([texts[i] for i in idx])
        keys = band_keys(sigs, bands, rows)  # (n, bands)
        digests = (sigs & 0xFF).astype(np.uint8)
        dig = pa.array([d.tobytes() for d in digests], pa.binary())
        n = len(idx)
        rep = np.repeat(np.arange(n), bands)
        sub = table.take(pa.array(idx))
        ranks = self._ranks(sub, [texts[i] for i in idx])
        take = pa.array(rep)
        return pa.table({
            "key": pa.array(keys.reshape(-1), pa.int64()),
            "uid": sub.column("uid").take(take),
            "part": sub.column("part").take(take).cast(pa.int32()),
            "rank": pa.array(ranks[rep], pa.float64()),
            "digest": dig.take(take),
        }, schema=self._record_schema())

    @staticmethod
    def _record_schema() -> pa.Schema:
        return pa.schema([("key", pa.int64()), ("uid", pa.string()), ("part", pa.int32()),
                          ("rank", pa.float64()), ("digest", pa.binary())])

    # -- reduce: one LSH bucket -> verified edges --------------------------------------------------------
    def reduce_schema(self) -> pa.Schema:
        return EDGE_SCHEMA

    def reduce(self, group: pa.Table) -> pa.Table:
        if group.num_rows < 2:
            return EDGE_SCHEMA.empty_table()
        d = group.column("digest").to_pylist()
        digests = np.frombuffer(b"".join(d), np.uint8).reshape(len(d), -1)
        pairs = verified_pairs(digests, self.threshold)
        return edges_table(group.column("uid").to_pylist(), group.column("part").to_pylist(),
                           group.column("rank").to_pylist(), pairs)

    # -- finalize (driver, edges only) and per-part completion ------------------------------------------
    def complete(self, table: pa.Table) -> pa.Table:
        table = super().complete(table)
        active = schema.active_mask(table)
        empty = [not normalise_text(t[: self.max_chars] if t else t) for t in table.column("text").to_pylist()]
        mask = pc.and_(active, pa.array(empty))
        if pc.any(mask).as_py():
            table = schema.mark(table, mask, schema.DROPPED, self.name, "near_dup_empty_text")
            table = schema.set_rows(table, mask, {"minhash_cluster": None})
        return table
