"""A whole run on a real S3-compatible server (moto_server on loopback): an s3:// URL list (its URLs on a
loopback HTTP server) curated into an s3:// run directory, SIGKILLed after its first committed part and
resumed, then validated, queried, refiltered into another s3:// run, and trained on from the S3 shards.

The run's Ray workers never see this test's environment (the session's Ray started before the S3 server):
the runner forwards the AWS_* settings to them, which is what a user's cluster needs too."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import fsspec
import pyarrow.parquet as pq

from curate.io import storage
from curate.validate import validate

PER_PART = 10
ROWS = 60


def _fs():
    return fsspec.filesystem("s3", skip_instance_cache=True)  # no cached listings: see the bucket as it is


def test_run_kill_resume_validate_query_refilter_train(ray_address, s3_corpus, bucket, tmp_path, cli, capsys):
    from tests.conftest import curate_inprocess

    from curate.demo.corpus import write_url_list

    root, server = s3_corpus
    local = write_url_list(root, server.url, tmp_path / "urls.parquet")
    _fs().put_file(str(local), f"{bucket}/lists/urls.parquet")
    src, out = f"s3://{bucket}/lists/urls.parquet", f"s3://{bucket}/out"
    args = ["run", "image_text", "-i", src, "-o", out, "--set", f"output.samples_per_shard={PER_PART}",
            "--set", "download.threads=2"]
    proc = subprocess.Popen([sys.executable, "-m", "curate.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env={**os.environ, "RAY_ADDRESS": ray_address})
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if _fs().glob(f"{bucket}/out/meta/part-*.parquet"):
            break
        time.sleep(0.1)
    assert proc.poll() is None, "run ended before its first commit could be killed: " + proc.stdout.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    fs = _fs()
    assert json.loads(fs.cat_file(f"{bucket}/out/manifest.json"))["status"] != "complete"
    committed = fs.glob(f"{bucket}/out/meta/part-*.parquet")
    assert committed and len(committed) < ROWS // PER_PART

    res = cli(*args, "--resume", timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]

    # every input row exactly once; one tar per part, each named by its part's meta rows (no orphans)
    fs = _fs()
    parts = sorted(fs.glob(f"{bucket}/out/meta/part-*.parquet"))
    assert len(parts) == ROWS // PER_PART
    rows = [r for p in parts for r in pq.read_table(p, filesystem=fs, columns=["uid", "status", "shard"]).to_pylist()]
    assert len(rows) == ROWS and len({r["uid"] for r in rows}) == ROWS
    tars = {p.rsplit("/", 1)[1] for p in fs.glob(f"{bucket}/out/shards/*.tar")}
    assert tars == {f"{k:06d}.tar" for k in range(len(parts))}
    assert not fs.exists(f"{bucket}/out/_work")
    problems, stats = validate(out)
    assert problems == [] and stats["kept"] > 0 and stats["members"] == 3 * stats["kept"]

    # query, refilter and train run in this process (no interpreter start-up each): same entry point
    res = curate_inprocess("query", out, "select status, count(*) as n from samples group by status order by status", "-f", "json", capsys=capsys)
    assert res.returncode == 0, res.stderr
    counts = {r["status"]: r["n"] for r in json.loads(res.stdout)}
    assert sum(counts.values()) == ROWS and counts["ok"] == stats["kept"]

    res = curate_inprocess("refilter", out, "--where", "width >= 64 and length(text) > 25", "-o", f"s3://{bucket}/out2",
                           capsys=capsys)
    assert res.returncode == 0, res.stderr
    problems, stats2 = validate(f"s3://{bucket}/out2")
    assert problems == [] and 0 < stats2["kept"] < stats["kept"] and stats2["rows"] == ROWS

    res = curate_inprocess("train", f"s3://{bucket}/out2", "--samples-seen", "16", "--batch-size", "8", "--workers", "0",
                           "-o", str(tmp_path / "train"), capsys=capsys)
    assert res.returncode == 0, res.stderr[-2000:]
    log = [json.loads(x) for x in (tmp_path / "train" / "log.jsonl").read_text().splitlines()]
    assert log and storage.is_remote(out)
