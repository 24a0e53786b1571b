"""exact_dedup keeps the smallest uid (or the earliest row) per identical image, prefers already-kept samples,
ignores inactive rows."""
import pyarrow as pa

from curate import schema
from curate.dedup.exact import ExactDedup
from curate.stage import apply_decisions, run_job_local


def table(uids, shas, texts=None, status=None, rows=None):
    n = len(uids)
    t = pa.table({"uid": uids, "part": pa.array([0] * n, pa.int32()), "sha256": shas,
                  "text": texts or ["t"] * n, "status": status or ["ok"] * n,
                  "row": pa.array(rows if rows is not None else range(n), pa.int64())})
    return schema.conform(t, schema.run_schema({"sha256": pa.string(), "dup_of": pa.string()}))


def test_keeps_first_uid_and_records_dup_of():
    t = table(["c", "a", "b", "d", "e"], ["h1", "h1", "h2", "h1", None])
    job = ExactDedup()
    out = apply_decisions(t, job, run_job_local(job, t))
    by = {r["uid"]: r for r in out.to_pylist()}
    assert by["a"]["status"] == "ok"
    assert by["c"]["status"] == by["d"]["status"] == "dropped"
    assert by["c"]["reason"] == "duplicate_image" and by["c"]["dup_of"] == "a"
    assert by["b"]["status"] == "ok" and by["e"]["status"] == "ok"  # unique and hash-less rows stay


def test_inactive_rows_do_not_count():
    t = table(["a", "b"], ["h", "h"], status=["failed", "ok"])
    job = ExactDedup()
    out = apply_decisions(t, job, run_job_local(job, t))
    assert out.column("status").to_pylist() == ["failed", "ok"]


def test_prior_kept_sample_wins():
    t = table(["a", "z"], ["h", "q"])
    prior = table(["zz"], ["h"])
    prior = prior.set_column(prior.column_names.index("part"), "part", pa.array([-1], pa.int32()))
    job = ExactDedup()
    out = apply_decisions(t, job, run_job_local(job, t, prior))
    assert out.column("status").to_pylist() == ["dropped", "ok"]
    assert out.column("dup_of").to_pylist()[0] == "zz"


def test_text_mode_normalises():
    t = table(["a", "b", "c"], [None] * 3, texts=["A  Red circle", "a red circle", "blue"])
    job = ExactDedup(by="text")
    out = apply_decisions(t, job, run_job_local(job, t))
    assert out.column("reason").to_pylist() == [None, "duplicate_text", None]


def test_keep_earliest_keeps_the_first_input_row_and_a_prior_keeper_still_wins():
    """Rows 0..4 in input order; "c" (row 0) is the earliest copy of h1 although "a" is the smallest uid."""
    t = table(["c", "a", "b", "d", "e"], ["h1", "h1", "h2", "h1", "h2"], rows=[10, 11, 12, 13, 9])
    job = ExactDedup(keep="earliest")
    assert "row" in job.needs()
    by = {r["uid"]: r for r in apply_decisions(t, job, run_job_local(job, t)).to_pylist()}
    assert [by[u]["status"] for u in "cadbe"] == ["ok", "dropped", "dropped", "dropped", "ok"]
    assert by["a"]["dup_of"] == by["d"]["dup_of"] == "c" and by["b"]["dup_of"] == "e"
    prior = table(["zz"], ["h1"], rows=[500])
    prior = prior.set_column(prior.column_names.index("part"), "part", pa.array([-1], pa.int32()))
    out = apply_decisions(t, job, run_job_local(job, t, prior))
    assert {r["uid"]: r["dup_of"] for r in out.to_pylist()}["c"] == "zz"  # already in the dataset: it stays


def test_rows_without_a_caption_are_not_text_duplicates_and_a_pair_needs_image_bytes():
    """by: text used to hash every empty or missing caption alike and drop all of them but one; by: pair
    keyed a row without image bytes as "None:<text>", so image-less rows with one caption were pair-duplicates."""
    t = table(["a", "b", "c", "d", "e"], ["h1", "h2", "h3", None, None], texts=["", None, "  ", "same", "same"])
    text = ExactDedup(by="text")
    assert apply_decisions(t, text, run_job_local(text, t)).column("status").to_pylist() == ["ok", "ok", "ok",
                                                                                             "ok", "dropped"]
    pair = ExactDedup(by="pair")
    assert set(apply_decisions(t, pair, run_job_local(pair, t)).column("status").to_pylist()) == {"ok"}
    same = table(["a", "b"], ["h1", "h1"], texts=["", None])  # the same image, both without a caption: a pair
    assert apply_decisions(same, pair, run_job_local(pair, same)).column("reason").to_pylist() == [None, "duplicate_pair"]
