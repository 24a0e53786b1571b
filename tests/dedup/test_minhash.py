"""minhash_dedup: datasketch-exact signatures, accuracy against brute-force Jaccard, policies, bad input."""
from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pytest
from datasketch import MinHash

from curate import schema
from curate.dedup.graph import EDGE_SCHEMA, component_labels, edge_uids, node_key, uid_of
from curate.dedup.minhash import (MinHashDedup, balanced_lsh_params, lsh_params, normalise_text, permutations,
                                  shingle_hashes, shingles, signatures, sketch_jaccard, sketch_lists, sketches, verified_pairs)
from curate.stage import apply_decisions, prepare_records, reduce_records, run_job_local

from ._corpus import planted_corpus, true_pairs


def table(texts, uids=None, status=None, extra=None):
    n = len(texts)
    cols = {"uid": uids or [f"u{i:06d}" for i in range(n)], "part": pa.array([i % 3 for i in range(n)], pa.int32()),
            "text": pa.array(texts, pa.string()), "status": status or ["ok"] * n, **(extra or {})}
    t = pa.table(cols)
    extra_types = {k: v.type for k, v in t.schema.to_dict().items()} if False else {}
    return schema.conform(t, schema.run_schema({**MinHashDedup.writes,
                                                **{k: t.schema.field(k).type for k in (extra or {})}}))


def run(job, t, prior=None):
    return apply_decisions(t, job, run_job_local(job, t, prior))


def by_uid(out):
    return {r["uid"]: r for r in out.to_pylist()}


@pytest.mark.parametrize("kind,n,num_perm,seed", [("word", 3, 128, 1), ("char", 5, 64, 7), ("word", 1, 256, 42)])
def test_signatures_equal_datasketch(kind, n, num_perm, seed):
    texts = ["A red circle on a blue background.", "a red circle on blue background", "", "x",
             "Ünïcödé  text — with punctuation!!", "one two three four five six seven eight nine ten"] * 3
    sh = [shingles(normalise_text(t), kind, n) for t in texts]
    sigs = signatures(sh, num_perm, seed, chunk=7)  # tiny chunks exercise the chunking
    for i, s in enumerate(sh):
        m = MinHash(num_perm=num_perm, seed=seed)
        m.update_batch(s)
        assert np.array_equal(m.hashvalues, sigs[i])
    bulk = MinHash.bulk(sh, num_perm=num_perm, seed=seed)
    assert all(np.array_equal(m.hashvalues, sigs[i]) for i, m in enumerate(bulk))


@pytest.mark.parametrize("num_perm,seed", [(1, 0), (128, 1), (256, 12345)])
def test_permutations_equal_datasketch_without_importing_it(num_perm, seed):
    """curate draws datasketch's affine32 (a, b) itself, so a run need not import datasketch (and scipy)."""
    a, b = permutations(num_perm, seed)
    ref_a, ref_b = MinHash(num_perm=num_perm, seed=seed, scheme="affine32").permutations
    assert a.dtype == b.dtype == np.uint32 and np.array_equal(a, ref_a) and np.array_equal(b, ref_b)


@pytest.mark.parametrize("threshold,num_perm", [(0.5, 64), (0.8, 128), (0.9, 128)])
def test_lsh_params_equal_datasketch(threshold, num_perm):
    from datasketch.lsh import _optimal_param

    assert balanced_lsh_params(threshold, num_perm) == tuple(_optimal_param(threshold, num_perm, 0.5, 0.5))


@pytest.mark.parametrize("threshold,num_perm", [(0.5, 64), (0.7, 128), (0.8, 128), (0.9, 128), (0.95, 128)])
def test_lsh_params_reach_recall_at_the_threshold(threshold, num_perm):
    b, r = lsh_params(threshold, num_perm)
    assert b * r <= num_perm and 1 - (1 - threshold ** r) ** b >= 0.97
    # the balanced choice (datasketch's) finds a pair at the threshold far less often
    bb, rb = balanced_lsh_params(threshold, num_perm)
    assert 1 - (1 - threshold ** rb) ** bb < 0.9


def test_lsh_params_follow_threshold():
    assert lsh_params(0.8, 128) == (15, 7)
    assert balanced_lsh_params(0.8, 128) == (9, 13)
    b5, r5 = lsh_params(0.5, 128)
    assert r5 < 7  # a lower threshold means fewer rows per band


def test_sketch_jaccard_exact_for_whole_sets_and_bounded_for_sketches():
    rng = np.random.default_rng(3)
    universe = rng.choice(2**32, 6000, replace=False).astype(np.uint32)
    a_set, b_set = universe[:1000], np.concatenate([universe[200:1000], universe[5000:5100]])
    truth = 800 / 1100
    raw = np.concatenate([a_set, b_set, a_set])  # duplicate hashes in a list count once
    lens = np.array([1000, 900, 1000])
    raw[1900:] = np.concatenate([a_set[:500], a_set[:500]])
    lens[2] = 1000
    for k, exact in ((4096, True), (256, False)):
        arr, sizes = sketches(raw, lens, k)
        sk = sketch_lists(arr)
        assert list(sizes) == [1000, 900, 500]
        assert all(np.all(np.diff(x.astype(np.int64)) > 0) and len(x) == min(k, n) for x, n in zip(sk, sizes))
        j, kk = sketch_jaccard(sk[0], 1000, sk[1], 900)
        if exact:
            assert kk == 0 and j == pytest.approx(truth)
            assert sketch_jaccard(sk[0], 1000, sk[2], 500) == (pytest.approx(0.5), 0)
        else:
            assert kk == 256 and abs(j - truth) < 4 * np.sqrt(truth * (1 - truth) / 256)


def test_verification_is_exact_at_the_threshold():
    """A pair exactly at the threshold is kept, one a hair above it is rejected: no estimate noise."""
    base = [f"w{i}" for i in range(60)]
    texts = [base, base[:56] + ["x1"], base[:55] + ["x1", "x2"]]
    sh = [shingles(" ".join(t)) for t in texts]
    jac = {(i, j): len(set(sh[i]) & set(sh[j])) / len(set(sh[i]) | set(sh[j])) for i, j in ((0, 1), (0, 2), (1, 2))}
    arr, sizes = sketches(*shingle_hashes(sh), 512)
    for t in sorted(jac.values()):  # 53/60, 54/59, 53/57
        for thr in (t, t + 1e-6):
            assert verified_pairs(sketch_lists(arr), sizes, thr) == [p for p, j in jac.items() if j >= thr]


def test_precision_and_recall_against_brute_force_jaccard():
    texts = planted_corpus(300)
    truth = true_pairs(texts, 0.8)
    assert len(truth) > 300
    job = MinHashDedup(threshold=0.8)
    t = table(texts)
    edges = reduce_records(job, prepare_records(job, t))
    idx = {u: i for i, u in enumerate(t.column("uid").to_pylist())}
    found = {tuple(sorted((idx[a], idx[b]))) for a, b in edge_uids(edges)}
    tp = len(found & truth)
    precision, recall = tp / len(found), tp / len(truth)
    assert precision >= 0.95 and recall >= 0.95, (precision, recall, len(found), len(truth))
    # and the decisions: one kept per cluster, the rest dropped pointing at it
    out = by_uid(run(job, t))
    for r in out.values():
        if r["reason"] == "near_duplicate":
            assert out[r["dup_of"]]["status"] == "ok" and out[r["dup_of"]]["minhash_cluster"] == r["dup_of"]


def test_keep_policies():
    texts = ["the quick brown fox jumps over the lazy dog again and again",
             "the quick brown fox jumps over the lazy dog again and again!",
             "The quick brown fox jumps over the lazy dog again and again."]
    out = by_uid(run(MinHashDedup(), table(texts)))
    assert [out[u]["status"] for u in sorted(out)] == ["ok", "dropped", "dropped"]
    longer = texts[:2] + ["the quick brown fox jumps over the lazy dog again and again and again"]
    out = by_uid(run(MinHashDedup(keep="longest", threshold=0.7), table(longer)))
    assert out["u000002"]["status"] == "ok" and out["u000000"]["dup_of"] == "u000002"
    t = table(texts, extra={"clip_score": pa.array([0.1, 0.9, None], pa.float64())})
    out = by_uid(run(MinHashDedup(keep="score", score_col="clip_score"), t))
    assert out["u000001"]["status"] == "ok" and out["u000000"]["dup_of"] == "u000001"
    assert out["u000002"]["dup_of"] == "u000001"
    with pytest.raises(ValueError):
        MinHashDedup(keep="score")


def test_empty_and_whitespace_get_their_own_reason_not_a_cluster():
    texts = ["", "   ", "\n\t", None, "!!!", "a real caption about a dog", "another caption about a cat"]
    out = run(MinHashDedup(), table(texts))
    rows = out.to_pylist()
    assert [r["reason"] for r in rows[:5]] == ["near_dup_empty_text"] * 5
    assert all(r["minhash_cluster"] is None and r["dup_of"] is None for r in rows[:5])
    assert [r["status"] for r in rows[5:]] == ["ok", "ok"]
    assert [r["minhash_cluster"] for r in rows[5:]] == ["u000005", "u000006"]


def test_non_utf8_and_very_long_and_single_sample():
    assert normalise_text(b"caf\xe9 \xff\xfe bytes") == "caf bytes"  # invalid bytes never raise
    long = " ".join(f"w{i}" for i in range(300_000))
    t0 = time.time()
    out = run(MinHashDedup(max_chars=50_000), table([long, long + " tail", "short one here"]))
    assert time.time() - t0 < 20
    assert out.column("status").to_pylist() == ["ok", "dropped", "ok"]
    single = run(MinHashDedup(), table(["only one sample"]))
    assert single.column("status").to_pylist() == ["ok"] and single.column("minhash_cluster").to_pylist() == ["u000000"]


def test_all_identical_corpus_is_one_cluster_fast():
    t0 = time.time()
    out = run(MinHashDedup(), table(["same caption for every sample here"] * 3000))
    assert time.time() - t0 < 30
    st = out.column("status").to_pylist()
    assert st.count("ok") == 1 and st[0] == "ok"
    assert set(out.column("minhash_cluster").to_pylist()) == {"u000000"}


def test_inactive_rows_and_prior_kept_samples():
    texts = ["a photo of a dog running on the beach", "a photo of a dog running on the beach!"]
    out = run(MinHashDedup(), table(texts, status=["failed", "ok"]))
    assert out.column("status").to_pylist() == ["failed", "ok"]
    prior = table(["A photo of a dog running on the beach."], uids=["zzz"])
    prior = prior.set_column(prior.column_names.index("part"), "part", pa.array([-1], pa.int32()))
    out = run(MinHashDedup(), table(texts), prior)
    assert out.column("status").to_pylist() == ["dropped", "dropped"]
    assert out.column("dup_of").to_pylist() == ["zzz", "zzz"]


def test_connected_components_chain():
    k = {u: node_key(u, 0 if u < "x" else 1, 0.0) for u in "bcdxy"}
    e = pa.table({"a": [k["b"], k["c"], k["x"]], "b": [k["c"], k["d"], k["y"]]}, schema=EDGE_SCHEMA)
    labels = component_labels(e)
    c = {uid_of(n): uid_of(r) for n, r in zip(labels.column("node").to_pylist(), labels.column("root").to_pylist())}
    assert c == {"b": "b", "c": "b", "d": "b", "x": "x", "y": "x"}
