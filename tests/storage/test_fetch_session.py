"""One fetch session per invocation, wherever its code runs (storage.fetch_session): a file whose http
server sends no validator (no ETag, Last-Modified, Content-MD5 or Digest) is downloaded once per machine
and invocation and every reader in it sees the same bytes.

Against a real loopback server (tests/storage/flapping_http.py) that sends no validator, counts GETs and
answers every GET with other bytes of the same size, so a second download is counted and seen.
Before: (a) on a Ray the caller had started (a notebook's `ray.init()` before Pipeline.run) the workers had
no session, so each stage call downloaded the file again and the parts read different bytes; (b) `train`,
`eval` and `experiment` ran outside any session and streamed remote shards at every read.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from curate.io import storage
from tests.storage.flapping_http import serve, served

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def server(tmp_path, monkeypatch):
    """tests/storage/flapping_http.py's server; the fetch cache under tmp_path, no session open."""
    monkeypatch.setenv("CURATE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(storage.FETCH_SESSION_ENV, raising=False)
    with serve() as (handler, base):
        yield handler, base


def test_a_nested_session_joins_the_open_one_and_ends_with_it(monkeypatch):
    monkeypatch.delenv(storage.FETCH_SESSION_ENV, raising=False)
    with storage.fetch_session() as outer:
        with storage.fetch_session() as inner:  # an experiment's training inside the experiment
            assert inner == outer
        assert os.environ[storage.FETCH_SESSION_ENV] == outer  # the inner one did not end the outer
        with storage.fetch_session("driver's") as named:  # a task of another invocation, on a reused worker
            assert named == os.environ[storage.FETCH_SESSION_ENV] == "driver's"
        assert os.environ[storage.FETCH_SESSION_ENV] == outer
    assert storage.FETCH_SESSION_ENV not in os.environ
    with storage.fetch_session() as again:
        assert again != outer  # the next invocation: a session of its own


def test_within_a_session_the_first_copy_published_is_the_one_every_reader_gets(server):
    """Two workers of one run fetching a versionless file at once: the second finds no finished copy yet
    (here: the first's record is not written), downloads other bytes, and must still read the first copy.
    Before, its copy replaced the first, so readers before and after it saw different bytes."""
    handler, base = server
    handler.files["/list.txt"] = b"L" * 512
    with storage.fetch_session():
        first = storage.local_file(f"{base}/list.txt")
        (first.parent / ".source.json").unlink()  # the moment before the first worker recorded its copy
        again = storage.local_file(f"{base}/list.txt")
        assert handler.gets["/list.txt"] == 2 and again == first
        assert again.read_bytes() == served(b"L" * 512, 1)
        assert not [p for p in first.parent.iterdir() if p.name.startswith(".fetch-")]  # no leftover



def test_the_copy_another_worker_published_is_recorded_by_the_worker_that_reads_it(server):
    """The second worker of the case above reads the first one's copy: it records that copy's digest when
    the first has not (it died between publishing and recording, or has not got there yet). Before, the
    session's copy stayed unrecorded: every later read downloaded the file again to find the copy there,
    and remote_version (a resume's input check, an experiment's fingerprint) said "sha256=", no digest."""
    handler, base = server
    handler.files["/list.txt"] = b"L" * 512
    with storage.fetch_session():
        first = storage.local_file(f"{base}/list.txt")
        (first.parent / ".source.json").unlink()  # the first worker died before it recorded its copy
        storage.local_file(f"{base}/list.txt")
        digest = hashlib.sha256(first.read_bytes()).hexdigest()
        assert storage.remote_version(f"{base}/list.txt") == (512, f"sha256={digest}")
        assert storage.local_file(f"{base}/list.txt") == first and handler.gets["/list.txt"] == 2  # no third GET


CALLER_RAY = r"""
import json, sys
import pyarrow.dataset as pads
import ray

ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, logging_level="ERROR")  # the caller's Ray
try:
    from curate import Pipeline

    run = Pipeline.from_dict({
        "name": "t", "input": {"path": sys.argv[1], "format": "parquet"},
        "output": {"path": sys.argv[2], "samples_per_shard": 2},
        "ray": {"in_process_max_rows": 0},
        "stages": [{"tests.storage.session_plugin:ReadsUrl": {"url": sys.argv[3] + "/list.txt"}},
                   {"tests.storage.session_plugin:ReadsUrlModel": {"url": sys.argv[3] + "/weights.bin"}}]}).run()
    t = pads.dataset(str(run.meta), format="parquet").to_table()
    print(json.dumps({"parts": len(set(t.column("part").to_pylist())),
                      "read": {c: sorted(set(t.column(c).to_pylist())) for c in ("read_sha256", "weights_sha256")}}))
finally:
    ray.shutdown()
"""


def test_a_run_on_a_ray_the_caller_started_fetches_a_versionless_file_once(server, tmp_path):
    """A notebook's `ray.init(num_cpus=1)`, then Pipeline.run over 3 parts with a task stage that reads a
    file with no validator at each call and a model stage (an actor) that reads another in its setup and at
    each call: one
    download of each for the run, and every part read the same bytes (before: a download per task call,
    each with other bytes)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    handler, base = server
    handler.files["/list.txt"], handler.files["/weights.bin"] = b"L" * 512, b"W" * 4096
    pq.write_table(pa.table({"url": [f"http://x/{i}" for i in range(6)], "caption": [f"c {i}" for i in range(6)]}),
                   tmp_path / "in.parquet")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", storage.FETCH_SESSION_ENV)}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", CALLER_RAY, str(tmp_path / "in.parquet"), str(tmp_path / "out"),
                           base], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["parts"] == 3
    assert handler.gets == {"/list.txt": 1, "/weights.bin": 1}
    first = {p: hashlib.sha256(served(handler.files[p], 1)).hexdigest() for p in handler.files}
    w = first["/weights.bin"]
    assert out["read"] == {"read_sha256": [first["/list.txt"]], "weights_sha256": [f"{w} {w}"]}
