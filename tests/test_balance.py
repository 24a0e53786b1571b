"""MetaCLIP balancing: matching, the per-entry cap, determinism across partitioning, and the report table."""
from __future__ import annotations

import json
import os
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate import schema
from curate.balance.metaclip import MetaClipBalance, binomial_tolerance, draw
from curate.recipe import RecipeError, build_recipe
from curate.runner import Runner
from curate.stage import run_local

T = 40
ENTRIES = ["cat", "dog", "red car", "bird", "fish"]
# "cat" is the head entry (400 > T); the others are tail entries; "fish" also co-occurs with "cat"
CORPUS = ([f"a cat picture number {i}" for i in range(400)] + [f"my dog {i}" for i in range(30)]
          + [f"a red car and a bird {i}" for i in range(12)] + [f"a cat and a fish {i}" for i in range(3)]
          + [f"category {i}: concatenated words" for i in range(5)]  # "cat" inside words: no match
          + [f"nothing to see {i}" for i in range(20)])


def test_match_word_boundaries_and_case():
    job = MetaClipBalance(entries=ENTRIES)
    ids = job.match("A Cat, a DOG and a red car; category catfish birds")
    assert [ENTRIES[i] for i in ids] == ["cat", "dog", "red car"]
    assert [ENTRIES[i] for i in MetaClipBalance(entries=ENTRIES, word_boundary=False).match("catfish birds")] == \
        ["cat", "bird", "fish"]
    assert MetaClipBalance(entries=["猫"], word_boundary=False).match("一只猫在睡觉") == [0]


def test_entries_from_files(tmp_path):
    txt = tmp_path / "e.txt"
    txt.write_text("cat\n\n  dog  \nred car\n")
    js = tmp_path / "e.json"
    js.write_text(json.dumps(["cat", "dog", "red car"]))
    for p in (txt, js):
        assert MetaClipBalance(entries=str(p)).matcher()[0] == ["cat", "dog", "red car"]
    bad = tmp_path / "bad.json"
    bad.write_text('{"cat": 1}')
    for entries, msg in [(str(tmp_path / "missing.txt"), "cannot read entries file"),
                         (str(bad), "must hold a JSON list"), ([], "the list is empty")]:
        with pytest.raises(RecipeError, match=msg):
            build_recipe({"name": "t", "input": {"path": "x.parquet"}, "output": {"path": str(tmp_path / "o")},
                          "stages": [{"metaclip_balance": {"entries": entries}}]})


def test_default_entries_are_the_demo_vocabulary():
    ents, _ = MetaClipBalance().matcher()
    assert {"red", "circle", "circles"} <= set(ents) and "red circle" not in ents


def _local(texts, **cfg) -> pa.Table:
    n = len(texts)
    rs = schema.run_schema(dict(MetaClipBalance.writes))
    t = schema.conform(pa.table({"uid": [f"u{i:05d}" for i in range(n)], "part": pa.array([0] * n, pa.int32()),
                                 "text": texts, "status": [schema.OK] * n}), rs)
    return run_local([MetaClipBalance(**cfg)], t, rs)


def test_draw_is_a_stable_uniform():
    d = [draw(0, "cat", f"u{i}") for i in range(20000)]
    assert draw(0, "cat", "u1") == d[1] and draw(1, "cat", "u1") != d[1]
    assert all(0 <= x < 1 for x in d) and abs(sum(d) / len(d) - 0.5) < 0.01


def test_head_is_capped_and_tail_kept_in_process():
    out = _local(CORPUS, entries=ENTRIES, t=T, seed=7).to_pylist()
    kept = Counter(e for r in out if r["status"] == schema.OK for e in r["balance_entries"])
    matched = Counter(e for r in out for e in (r["balance_entries"] or []))
    assert matched == {"cat": 403, "dog": 30, "red car": 12, "bird": 12, "fish": 3}
    # head: kept ~ Binomial(403, T/403) plus the "cat and fish" rows the tail entry keeps; 4 sigma
    assert abs(kept["cat"] - T) <= binomial_tolerance(403, T) + 3
    for e in ("dog", "red car", "bird", "fish"):  # tail entries keep every sample
        assert kept[e] == matched[e]
    reasons = Counter(r["reason"] for r in out)
    assert reasons["balance_no_entry"] == 25
    assert reasons["balance_head_subsampled"] == 403 - kept["cat"]
    # keep_unmatched keeps the 25 unmatched rows and changes nothing else
    loose = _local(CORPUS, entries=ENTRIES, t=T, seed=7, keep_unmatched=True).to_pylist()
    assert sum(r["status"] == schema.OK for r in loose) == sum(r["status"] == schema.OK for r in out) + 25
    # a different seed draws a different head sample
    other = _local(CORPUS, entries=ENTRIES, t=T, seed=8).to_pylist()
    assert [r["status"] for r in other] != [r["status"] for r in out]


def test_cap_holds_per_entry_over_many_heads():
    """Ten head entries of different sizes: each kept count within 4 binomial sigmas of t."""
    texts = [f"item{k} sample {i}" for k in range(10) for i in range(60 + 40 * k)]
    out = _local(texts, entries=[f"item{k}" for k in range(10)], t=50).to_pylist()
    kept = Counter(r["balance_entries"][0] for r in out if r["status"] == schema.OK)
    for k in range(10):
        n = 60 + 40 * k
        assert abs(kept[f"item{k}"] - 50) <= binomial_tolerance(n, 50), (k, kept[f"item{k}"])


def _run(tmp_path, name, per_shard, local_max):
    src = tmp_path / "in.parquet"
    if not src.exists():
        pq.write_table(pa.table({"url": [f"http://x/{i}" for i in range(len(CORPUS))], "caption": CORPUS}), src)
    entries = tmp_path / "entries.txt"
    entries.write_text("\n".join(ENTRIES) + "\n")
    recipe = build_recipe({"name": "t", "input": {"path": str(src)},
                           "output": {"path": str(tmp_path / name), "samples_per_shard": per_shard},
                           "ray": {"job_local_max_rows": local_max},
                           "stages": [{"caption_text": {"min_words": 1}},
                                      {"metaclip_balance": {"entries": str(entries), "t": T, "seed": 1}}]})
    Runner(recipe).start()
    return tmp_path / name


def test_runner_partitioning_and_ray_path_agree(tmp_path, ray_address):
    one = _run(tmp_path, "one", 10_000, 10**6)  # one part, decided in the driver
    many = _run(tmp_path, "many", 97, 0)  # five parts, grouped by a Ray shuffle

    def outcome(root):
        t = pq.read_table(str(root / "meta"))
        return {r["uid"]: (r["status"], r["stage"], r["reason"], r["balance_entries"]) for r in t.to_pylist()}

    a, b = outcome(one), outcome(many)
    assert a == b
    assert len(a) == len(CORPUS)  # counts in == counts out
    kept = sum(v[0] == schema.OK for v in a.values())
    manifest = json.loads((many / "manifest.json").read_text())
    assert manifest["counts"]["rows"] == len(CORPUS) and manifest["counts"]["kept"] == kept
    # the report's per-entry table agrees with the rows
    counts = {r["entry"]: r for r in pq.read_table(many / "balance_counts.parquet").to_pylist()}
    assert counts["cat"]["matched"] == 403 and counts["dog"]["balanced"] == counts["dog"]["matched"] == 30
    assert counts["cat"]["balanced"] == sum(1 for v in a.values() if v[0] == schema.OK and "cat" in v[3])
    page = (many / "report.html").read_text()
    assert "Balancing" in page and "could not be rendered" not in page


def test_resume_refuses_a_changed_named_file_or_input(tmp_path, ray_address):
    """A recipe's files (here the entry list; in real runs checkpoints) and the input list are fingerprinted
    at start; resuming over changed ones would mix two configurations in one run, so it is refused."""
    from curate.runner import RunError

    root = _run(tmp_path, "run", 10_000, 10**6)
    entries, src = tmp_path / "entries.txt", tmp_path / "in.parquet"
    manifest = json.loads((root / "manifest.json").read_text())
    assert list(manifest["named_files"]) == [str(entries.resolve())]

    def resume():
        recipe = build_recipe({"name": "t", "input": {"path": str(src)},
                               "output": {"path": str(root), "samples_per_shard": 10_000},
                               "ray": {"job_local_max_rows": 10**6},
                               "stages": [{"caption_text": {"min_words": 1}},
                                          {"metaclip_balance": {"entries": str(entries), "t": T, "seed": 1}}]})
        return Runner(recipe).start(resume=True)

    assert resume()["status"] == "complete"  # unchanged files: a finished run resumes to a no-op
    entries.write_text("\n".join(ENTRIES) + "\nbird\n")
    with pytest.raises(RunError, match=r"entries.txt, named by the recipe, changed since this run started"):
        resume()
    entries.write_text("\n".join(ENTRIES) + "\n")
    os.utime(entries, ns=(0, manifest["named_files"][str(entries.resolve())]["mtime_ns"]))
    assert resume()["status"] == "complete"
    pq.write_table(pa.table({"url": ["http://x/0"], "caption": ["a cat"]}), src)
    with pytest.raises(RunError, match="the input .* changed since this run started"):
        resume()
