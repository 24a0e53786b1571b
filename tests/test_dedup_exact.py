"""exact_dedup keeps the smallest uid per identical image, prefers already-kept samples, ignores inactive rows."""
import pyarrow as pa

from curate import schema
from curate.dedup.exact import ExactDedup
from curate.stage import apply_decisions, run_job_local


def table(uids, shas, texts=None, status=None):
    n = len(uids)
    t = pa.table({"uid": uids, "part": pa.array([0] * n, pa.int32()), "sha256": shas,
                  "text": texts or ["t"] * n, "status": status or ["ok"] * n})
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
