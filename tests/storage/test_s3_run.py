"""A whole run on a real S3-compatible server (moto_server on loopback): an s3:// URL list (its URLs on a
loopback HTTP server) curated into an s3:// run directory, SIGKILLed after its first segment checkpoint
and resumed, then validated, queried, listed by duplicate cluster, reported, refiltered into another s3:// run,
and trained on from the S3 shards; a copy of it retried with --retry-failed (its own test).

The run's Ray workers never see this test's environment (the session's Ray started before the S3 server):
the runner forwards the AWS_* settings to them, which is what a user's cluster needs too. The recipe has
one job (exact_dedup), so the segment checkpoints under _work/ are exercised with the fewest Ray stages."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import fsspec
import pyarrow.parquet as pq
import pytest

from curate.validate import validate
from tests.conftest import curate_inprocess

PER_PART = 10
ROWS = 40
RECIPE = """name: s3-run
input: {url_col: url, text_col: caption}
output: {samples_per_shard: %d}
stages:
  - download: {image_size: 64, resize_mode: center_crop, encode_format: jpg, timeout_s: 1, retries: 0, threads: 2}
  - caption_text: {min_words: 2}
  - exact_dedup: {by: image}
""" % PER_PART
# the fixture's two Ray runs can take minutes on a loaded 2-core machine (under a minute on a quiet one)
pytestmark = pytest.mark.timeout(1500)


def _fs():
    return fsspec.filesystem("s3", skip_instance_cache=True)  # no cached listings: see the bucket as it is


def _meta(fs, prefix: str) -> list[dict]:
    return [r for p in sorted(fs.glob(f"{prefix}/meta/part-*.parquet"))
            for r in pq.read_table(p, filesystem=fs).to_pylist()]


@pytest.fixture(scope="module")
def s3_run(ray_address, s3_corpus, s3_env, tmp_path_factory):
    """(bucket, recipe file) of a run killed after its first segment checkpoint and resumed to completion."""
    import uuid

    from curate.demo.corpus import write_url_list

    root, server = s3_corpus
    tmp = tmp_path_factory.mktemp("s3run")
    recipe = tmp / "recipe.yaml"
    recipe.write_text(RECIPE)
    bucket = f"t-{uuid.uuid4().hex[:12]}"
    fs = _fs()
    fs.mkdir(bucket)
    # each image answers after 150 ms, so downloading the 4 parts takes seconds even on a quiet machine: a
    # wide window to kill the run after its first segment checkpoint and before its job and final parts
    urls = write_url_list(root, server.url + "/slow/150", tmp / "urls.parquet")
    fs.put_file(str(urls), f"{bucket}/lists/urls.parquet")
    args = [sys.executable, "-m", "curate.cli", "run", str(recipe), "-i", f"s3://{bucket}/lists/urls.parquet",
            "-o", f"s3://{bucket}/out"]
    env = {**os.environ, "RAY_ADDRESS": ray_address}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + 900  # minutes under load; seconds on a quiet machine
    while time.time() < deadline and proc.poll() is None:
        if _fs().glob(f"{bucket}/out/_work/segment0/part-*.parquet"):
            break
        time.sleep(0.1)
    assert proc.poll() is None, "run ended before its first checkpoint could be killed: " + proc.stdout.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    fs = _fs()
    assert json.loads(fs.cat_file(f"{bucket}/out/manifest.json"))["status"] != "complete"
    assert fs.glob(f"{bucket}/out/_work/segment0/part-*.parquet")  # the resume has checkpoints to start from
    assert len(fs.glob(f"{bucket}/out/meta/part-*.parquet")) < ROWS // PER_PART
    res = subprocess.run([*args, "--resume"], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return bucket, recipe


def test_run_kill_resume_validate_query_report_refilter_train(s3_run, tmp_path, capsys):
    bucket, _ = s3_run
    out = f"s3://{bucket}/out"
    # every input row exactly once; one tar per part, each named by its part's meta rows (no orphans)
    fs = _fs()
    parts = sorted(fs.glob(f"{bucket}/out/meta/part-*.parquet"))
    assert len(parts) == ROWS // PER_PART
    rows = _meta(fs, f"{bucket}/out")
    assert len(rows) == ROWS and len({r["uid"] for r in rows}) == ROWS
    tars = {p.rsplit("/", 1)[1] for p in fs.glob(f"{bucket}/out/shards/*.tar")}
    assert tars == {f"{k:06d}.tar" for k in range(len(parts))}
    assert not fs.exists(f"{bucket}/out/_work")
    problems, stats = validate(out)
    assert problems == [] and stats["kept"] > 0 and stats["members"] == 3 * stats["kept"]

    # query, clusters, report, refilter and train run in this process (no interpreter start-up each)
    res = curate_inprocess("query", out, "select status, count(*) as n from samples group by status order by status",
                           "-f", "json", capsys=capsys)
    assert res.returncode == 0, res.stderr
    counts = {r["status"]: r["n"] for r in json.loads(res.stdout)}
    assert sum(counts.values()) == ROWS and counts["ok"] == stats["kept"]
    dups = [r for r in rows if r.get("dup_of")]  # dropped as a copy of a kept sample
    res = curate_inprocess("clusters", out, "--column", "dup_of", "-f", "json", capsys=capsys)
    assert res.returncode == 0, res.stderr
    listed = json.loads(res.stdout)
    assert sum(c["size"] - 1 for c in listed) == len(dups) and all(c["kept"] == 1 for c in listed)
    fs.rm(f"{bucket}/out/report.html")
    res = curate_inprocess("report", out, capsys=capsys)
    assert res.returncode == 0, res.stderr
    assert "failed" not in res.stderr, res.stderr[-2000:]  # every section drew (the caption histogram once failed on s3)
    page = fs.cat_file(f"{bucket}/out/report.html").decode()
    assert "Funnel" in page and "data:image/jpeg;base64," in page  # sample thumbnails read from the s3 shards
    assert 'alt="caption length"' in page  # the word histogram streams the meta parts from s3

    res = curate_inprocess("refilter", out, "--where", "width >= 64 and length(text) > 25", "-o", f"s3://{bucket}/out2",
                           capsys=capsys)
    assert res.returncode == 0, res.stderr
    problems, stats2 = validate(f"s3://{bucket}/out2")
    assert problems == [] and 0 < stats2["kept"] < stats["kept"] and stats2["rows"] == ROWS
    thumbs = [r for p in fs.glob(f"{bucket}/out2/thumbs/part-*.parquet")
              for r in pq.read_table(p, filesystem=fs, columns=["reason", "thumb"]).to_pylist()]
    assert any(r["reason"] == "refilter_where" and r["thumb"] for r in thumbs)  # read from the s3 shards

    res = curate_inprocess("train", f"s3://{bucket}/out2", "--samples-seen", "16", "--batch-size", "8", "--workers", "0",
                           "-o", str(tmp_path / "train"), capsys=capsys)
    assert res.returncode == 0, res.stderr[-2000:]
    log = [json.loads(x) for x in (tmp_path / "train" / "log.jsonl").read_text().splitlines()]
    assert log and log[-1]["samples_seen"] == 16


def test_retry_failed_on_s3(s3_run, ray_address, cli):
    """Failed rows are retried as new parts of the same s3 run; every other row is untouched; counts exact."""
    bucket, recipe = s3_run
    fs = _fs()
    fs.copy(f"{bucket}/out/", f"{bucket}/retry/", recursive=True)  # a copy: the other test reads the original
    before = {r["uid"]: r for r in _meta(fs, f"{bucket}/retry")}
    failed = {u for u, r in before.items() if r["status"] == "failed"}
    assert failed, "the corpus has rows that fail to download (404, timeouts, corrupt files)"
    old_parts = len(fs.glob(f"{bucket}/retry/meta/part-*.parquet"))
    res = cli("run", str(recipe), "--retry-failed", f"s3://{bucket}/retry", "--set", "download.retries=1",
              timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    fs = _fs()  # a new client: the old one remembers the ETags of the meta parts the retry rewrote
    after = {r["uid"]: r for r in _meta(fs, f"{bucket}/retry")}
    assert set(after) == set(before)
    untouched = ("status", "stage", "reason", "shard", "key", "part", "sha256")
    for u in set(before) - failed:
        assert {k: after[u].get(k) for k in untouched} == {k: before[u].get(k) for k in untouched}, u
    assert all(after[u]["part"] >= old_parts for u in failed)  # each retried, in a new part
    manifest = json.loads(fs.cat_file(f"{bucket}/retry/manifest.json"))
    n_failed = sum(r["status"] == "failed" for r in after.values())
    assert manifest["status"] == "complete" and manifest["counts"]["rows"] == ROWS
    assert sum(manifest["counts"]["failed"].values()) == n_failed
    assert manifest["counts"]["kept"] == sum(r["status"] == "ok" for r in after.values())
    assert manifest["batches"][-1]["kind"] == "retry-failed" and manifest["batches"][-1]["rows"] == len(failed)
    assert validate(f"s3://{bucket}/retry")[0] == []
