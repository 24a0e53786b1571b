"""minhash_dedup's compiled kernels and its whole-table in-process path against the reference implementations:
hashlib SHA-1 + Python shingles, numpy signatures and band keys (themselves checked equal to datasketch in
test_minhash.py), and the map -> group -> reduce -> finalize path of `run_job_local`."""
from __future__ import annotations

import hashlib
import struct

import numpy as np
import pyarrow as pa
import pytest

from curate.dedup.minhash import (ALL_PAIRS_MAX, MinHashDedup, band_keys, distinct_sets, normalise_text,
                                  permutations, shingle_hashes, shingles, signatures)
from curate.dedup._minhash_kernel import (band_keys_of_sets, normalised_buffer, signatures_of_sets,
                                          word_sets_of_buffer, word_shingle_sets)
from curate.stage import run_job_local

from ._corpus import planted_corpus
from ._recall_corpus import text_corpus
from .test_minhash import table

ODD = ["a b c d e", "hello", "", "x y", "Ünïcödé  text — with punctuation!! " * 9, "\u00a0 non\u2009breaking spaces",
       "😀 emoji 😀 and 漢字 in a caption", " ".join(["supercalifragilisticexpialidocious" * 3] * 5),  # 2-3 SHA-1 blocks
       "w" * 55 + " a b", "w" * 56 + " a b", "w" * 63 + " a b", "w" * 64 + " a b"]  # around the one-block edge


@pytest.mark.parametrize("n", [1, 3])
def test_word_shingle_sets_equal_hashlib_and_python_shingles(n):
    texts = [normalise_text(t) for t in ODD + text_corpus(60, seed=3)]
    values, offsets = word_shingle_sets(texts, n)
    ref_v, ref_o = distinct_sets(*shingle_hashes([shingles(t, "word", n) for t in texts]))
    assert np.array_equal(offsets, ref_o) and np.array_equal(values, ref_v)
    long = " ".join(["supercalifragilisticexpialidocious" * 3] * 3)  # one 3-gram of 308 bytes
    assert word_shingle_sets([long], 3)[0][0] == struct.unpack("<I", hashlib.sha1(long.encode()).digest()[:4])[0]


@pytest.mark.parametrize("max_chars", [200_000, 5, 1])
@pytest.mark.parametrize("kind", ["string", "large_string", "chunked", "sliced"])
def test_normalised_buffer_equals_normalise_text(kind, max_chars):
    """The compiled ASCII normalisation (and the Python one it hands non-ASCII rows to) give normalise_text's
    text and length, byte for byte, on control characters, Unicode white space and case folding included."""
    texts = ODD + ["Hello, World!! foo_bar\tx\x00y\x1fz\x7f END ", "   ", None, "ÀB c", "x\u2028y", "ß ﬁ Ǆ İ",
                   "tab\x0bvt\x0cff\x1cfs", "__ a_b __"] + text_corpus(200, seed=5)
    arr = pa.array(texts, pa.large_string() if kind == "large_string" else pa.string())
    if kind == "chunked":
        arr = pa.chunked_array([arr[:49], arr[49:]])
    elif kind == "sliced":
        arr = pa.array(["pad"] + texts)[1:]  # an array with a non-zero offset
    buf, offsets, chars = normalised_buffer(arr, max_chars)
    ref = [normalise_text(t[:max_chars] if t else t) for t in texts]
    assert [bytes(buf[offsets[i]:offsets[i + 1]]).decode() for i in range(len(texts))] == ref
    assert chars.tolist() == [len(r) for r in ref]


@pytest.mark.parametrize("num_perm,seed,bands,rows", [(128, 1, 15, 7), (64, 7, 8, 8)])
def test_signatures_and_band_keys_equal_numpy_reference(num_perm, seed, bands, rows):
    texts = [normalise_text(t) for t in ODD + planted_corpus(20, seed=1)]
    sh = [shingles(t) for t in texts]
    values, offsets = word_shingle_sets(texts, 3)
    a, b = permutations(num_perm, seed)
    ref = signatures(sh, num_perm, seed)
    assert np.array_equal(signatures_of_sets(values, offsets, a, b), ref)
    keys = band_keys_of_sets(values, offsets, a, b, bands, rows)
    assert np.array_equal(keys, band_keys(ref, bands, rows))


def _decisions(d: pa.Table) -> list:
    cols = ["uid", "part", "status", "reason", "dup_of", "minhash_cluster"]
    return sorted(tuple(r.values()) for r in d.select(cols).to_pylist())


def _same_as_reference(job: MinHashDedup, t: pa.Table) -> list:
    fast = job.in_process(t.select(["uid", "part", *job.needs()]))
    ref = run_job_local(job, t)
    assert _decisions(fast) == _decisions(ref)
    return _decisions(fast)


@pytest.mark.parametrize("job", [MinHashDedup(), MinHashDedup(keep="longest", threshold=0.7, bands=9, rows=13),
                                 MinHashDedup(shingle="char", ngram=5, num_perm=64)])
def test_in_process_decisions_equal_the_bucket_path(job):
    texts = text_corpus(250, seed=11) + planted_corpus(15, seed=2) + ["", "  !! "]
    out = _same_as_reference(job, table(texts))
    assert sum(r[3] == "near_duplicate" for r in out) > 40


def test_in_process_large_buckets_long_texts_scores_and_prior_rows():
    """Buckets above ALL_PAIRS_MAX go leader by leader, texts over sketch_size distinct shingles are
    verified on bottom-k sketches, keep=score ranks by the score column, prior rows (part -1) stay."""
    rng = np.random.default_rng(0)
    same = ["the same popular template caption here"] * (ALL_PAIRS_MAX + 20)
    base = [f"tok{i}" for i in range(900)]
    long = [" ".join(base), " ".join(base[:880] + [f"x{i}" for i in range(20)]),
            " ".join(base[:700] + [f"y{i}" for i in range(200)])]
    texts = same + long + planted_corpus(30, seed=4)
    n = len(texts)
    t = table(texts, extra={"score": pa.array(rng.random(n))})
    t = t.set_column(t.column_names.index("part"), "part", pa.array([-1 if i % 7 == 0 else 1 for i in range(n)], pa.int32()))
    out = _same_as_reference(MinHashDedup(keep="score", score_col="score", sketch_size=256), t)
    by = {r[0]: r for r in out}  # prior rows (part -1) get no decision: they are never changed
    assert all(by[f"u{i:06d}"][3] == "near_duplicate" for i in range(1, len(same)) if i % 7)
    k = len(same)  # the two long near-copies (J ~0.96, bottom-k verified): one cluster, the prior one kept
    assert k % 7 == 0 and by[f"u{k + 1:06d}"][4:] == (f"u{k:06d}", f"u{k:06d}")


@pytest.mark.parametrize("threads", [2, 3, 8])
def test_kernels_on_several_cores_give_the_one_core_result(threads):
    """Shingle sets and band keys cut into row ranges (one thread each) concatenate to the single call's
    arrays bit for bit, with empty rows, and with the empty rows dropped from the offsets (as the in-process
    path does before the band keys)."""
    texts = text_corpus(2500, seed=9) * 10 + [""] * 50  # 25,050 rows: past the 20k rows where threads start
    buf, offsets, _ = normalised_buffer(pa.array(texts), 10_000)
    values, off = word_sets_of_buffer(buf, offsets, 3)
    many = word_sets_of_buffer(buf, offsets, 3, threads=threads)
    assert np.array_equal(values, many[0]) and np.array_equal(off, many[1]) and many[1].dtype == np.int64
    a, b = permutations(128, 1)
    for o in (off, np.concatenate([[0], off[np.flatnonzero(np.diff(off)) + 1]])):
        ref = band_keys_of_sets(values, o, a, b, 15, 7)
        got = band_keys_of_sets(values, o, a, b, 15, 7, threads=threads)
        assert got.dtype == np.int64 and np.array_equal(ref, got)
