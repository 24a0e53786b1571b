"""The fetch cache over http(s) (storage.local_file) and a resumed run's identity of an http input, against a
real loopback server that sends an ETag, only Last-Modified, or no validator at all, and counts downloads.

Before: the cache key of an http file was its ETag or else "size:" (fsspec names the header "Last-Modified",
which the key never read), so a same-size rewrite of a file served without an ETag reused the stale copy;
and a resumed run recorded an http input by its size alone, so it read a same-size rewrite unrefused.
"""
from __future__ import annotations

import email.utils
import hashlib
import http.server
import io
import json
import tarfile
import threading

import pytest

from curate.io import inputfs, storage


class _Server(http.server.BaseHTTPRequestHandler):
    """Files from `files` ({path: bytes}), with the validators of `mode` ("etag", "last-modified", "none"),
    Range requests answered only when `ranges`; `gets` counts downloads (GETs) per path, `whole` those
    answered with the whole file (no Range asked, or Range ignored)."""
    files: dict = {}
    mtimes: dict = {}
    gets: dict = {}
    whole: dict = {}
    mode = "none"
    ranges = False

    def log_message(self, *args):
        pass

    def _head(self) -> bytes | None:
        data = self.files.get(self.path)
        if data is None:
            self.send_error(404)
            return None
        span = self.headers.get("Range") if self.ranges else None
        if span:
            start, _, end = span.removeprefix("bytes=").partition("-")
            start, end = int(start), min(int(end or len(data) - 1), len(data) - 1)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            data = data[start:end + 1]
        else:
            self.send_response(200)
            if self.command == "GET":
                self.whole[self.path] = self.whole.get(self.path, 0) + 1
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Accept-Ranges", "bytes" if self.ranges else "none")
        if self.mode == "etag":
            self.send_header("ETag", '"%s"' % hashlib.md5(self.files[self.path]).hexdigest())
        if self.mode == "last-modified":
            self.send_header("Last-Modified", email.utils.formatdate(self.mtimes[self.path], usegmt=True))
        self.end_headers()
        return data

    def do_HEAD(self):
        self._head()

    def do_GET(self):
        data = self._head()
        if data is not None:
            self.gets[self.path] = self.gets.get(self.path, 0) + 1
            self.wfile.write(data)


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A fresh handler class (its own files and counts) served on loopback; yields (handler, base URL)."""
    monkeypatch.setenv("CURATE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(storage.FETCH_SESSION_ENV, raising=False)
    handler = type("Handler", (_Server,), {"files": {}, "mtimes": {}, "gets": {}, "whole": {}})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield handler, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()
    inputfs.ranges_supported.cache_clear()  # the port may be reused by another test's server


def _write(handler, path: str, data: bytes, mtime: float) -> None:
    handler.files[path], handler.mtimes[path] = data, mtime


@pytest.mark.parametrize("mode", ["etag", "last-modified"])
def test_a_validated_file_is_fetched_once_and_again_after_a_same_size_rewrite(server, mode):
    handler, base = server
    handler.mode = mode
    _write(handler, "/model.pt", b"A" * 1000, 1_700_000_000)
    for _ in range(2):  # two invocations (each its own fetch session) and a call outside any
        with storage.fetch_session():
            assert storage.local_file(f"{base}/model.pt").read_bytes() == b"A" * 1000
    assert storage.local_file(f"{base}/model.pt").read_bytes() == b"A" * 1000
    assert handler.gets["/model.pt"] == 1  # unchanged: never downloaded again
    _write(handler, "/model.pt", b"B" * 1000, 1_700_000_060)  # retrained: same size, a minute later
    with storage.fetch_session():
        assert storage.local_file(f"{base}/model.pt").read_bytes() == b"B" * 1000
    assert handler.gets["/model.pt"] == 2


def test_a_file_with_no_validator_is_reused_only_within_its_session(server):
    handler, base = server
    _write(handler, "/shard.tar", b"A" * 1000, 0)
    url = f"{base}/shard.tar"
    with storage.fetch_session():  # one run: its driver and workers share one download
        first = storage.local_file(url)
        assert storage.local_file(url) == first and first.read_bytes() == b"A" * 1000
        assert handler.gets["/shard.tar"] == 1
    _write(handler, "/shard.tar", b"B" * 1000, 0)  # same size, and nothing says it changed
    with storage.fetch_session():  # the next run fetches it again
        assert storage.local_file(url).read_bytes() == b"B" * 1000
        assert handler.gets["/shard.tar"] == 2
    _write(handler, "/shard.tar", b"C" * 1000, 0)
    assert storage.local_file(url).read_bytes() == b"C" * 1000  # outside a session: every call fetches
    assert handler.gets["/shard.tar"] == 3
    # what a resumed run records for it: the bytes' digest (fetched once into the session, then reused)
    with storage.fetch_session():
        assert storage.remote_version(url) == (1000, "sha256=" + hashlib.sha256(b"C" * 1000).hexdigest())
        assert storage.local_file(url).read_bytes() == b"C" * 1000
    assert handler.gets["/shard.tar"] == 4


def _tar(fill: bytes) -> bytes:
    """A WebDataset tar of two samples whose images are `fill` bytes (same size for any fill byte)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for key in ("00000", "00001"):
            for ext, data in (("jpg", fill * 600), ("txt", f"caption {key}".encode())):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size, info.mtime = len(data), 0
                tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


@pytest.mark.parametrize("mode,ranges", [("none", False), ("none", True), ("last-modified", True)])
def test_a_resumed_run_refuses_a_same_size_rewrite_of_its_http_input(server, tmp_path, monkeypatch, mode, ranges):
    """An http WebDataset input, with or without Range support, whose server sends no validator or only
    Last-Modified: the run records its identity, a no-op resume of the same bytes passes, and a resume
    after a same-size rewrite is refused before anything is read."""
    from curate.recipe import build_recipe
    from curate.runner import Runner, RunError

    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # a small run stays in this process
    handler, base = server
    handler.mode, handler.ranges = mode, ranges
    _write(handler, "/in.tar", _tar(b"A"), 1_700_000_000)
    url, root = f"{base}/in.tar", tmp_path / "out"

    def runner():
        return Runner(build_recipe({"name": "t", "input": {"path": url, "format": "webdataset", "source": "s"},
                                    "output": {"path": str(root)},
                                    "stages": [{"caption_text": {"min_words": 1}}]}))

    assert runner().start()["status"] == "complete"
    saved = json.loads((root / "manifest.json").read_text())["input"]
    assert saved["version"] and saved["bytes"] == len(_tar(b"A"))
    assert runner().start(resume=True)["status"] == "complete"  # the same bytes: a no-op resume
    _write(handler, "/in.tar", _tar(b"B"), 1_700_000_060)
    assert len(_tar(b"B")) == len(_tar(b"A"))
    with pytest.raises(RunError, match="the input .* changed since this run started"):
        runner().start(resume=True)


def test_a_run_reads_an_http_tar_served_with_ranges_by_range_only(server, tmp_path, monkeypatch):
    """An http WebDataset tar from a server that answers Range and sends Last-Modified: the run checks,
    indexes, fingerprints and reads it with HEAD and Range requests, never a download of the whole file.
    Before, fsspec's http isdir (it lists the URL: the whole response, read for links) and exists (a GET)
    downloaded the tar four times and started five more downloads of it before the first Range read."""
    from curate.recipe import build_recipe
    from curate.runner import Runner

    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # the whole-file reads were the driver's: in-process
    handler, base = server
    handler.mode, handler.ranges = "last-modified", True
    _write(handler, "/in.tar", _tar(b"A"), 1_700_000_000)
    recipe = build_recipe({"name": "t", "input": {"path": f"{base}/in.tar", "format": "webdataset", "source": "s"},
                           "output": {"path": str(tmp_path / "out"), "samples_per_shard": 1},
                           "stages": [{"caption_text": {"min_words": 1}}]})
    manifest = Runner(recipe).start()
    assert manifest.status == "complete" and manifest.counts.rows == 2
    assert handler.gets["/in.tar"] > 0 and "/in.tar" not in handler.whole, handler.whole
    assert (tmp_path / "out" / "shards" / "000001.tar").exists()


@pytest.mark.parametrize("mode", ["last-modified", "none"])
def test_an_experiment_fingerprint_sees_a_same_size_rewrite_of_an_http_shard(server, tmp_path, mode):
    """curate.train.fingerprint's digest cache keyed an http shard by URL, size and ETag/LastModified (a key
    fsspec never fills: it names the header Last-Modified), so a same-size rewrite kept its stale digest and
    an experiment reused runs trained on other bytes. Now: keyed by the file's version; none, not cached."""
    from curate.train.data import DataError
    from curate.train.fingerprint import DigestCache

    handler, base = server
    handler.mode = mode
    _write(handler, "/000000.tar", b"A" * 1000, 1_700_000_000)
    cache = DigestCache(tmp_path / "digests.json")
    assert cache.digest(f"{base}/000000.tar") == (1000, hashlib.sha256(b"A" * 1000).hexdigest())
    _write(handler, "/000000.tar", b"B" * 1000, 1_700_000_060)
    assert cache.digest(f"{base}/000000.tar") == (1000, hashlib.sha256(b"B" * 1000).hexdigest())
    assert len(cache.entries) == (2 if mode == "last-modified" else 0)
    with pytest.raises(DataError, match="does not exist"):
        cache.digest(f"{base}/missing.tar")


def test_a_retry_fetches_a_file_with_no_validator_once_like_a_run(server, tmp_path, monkeypatch):
    """--retry-failed is one invocation like a run: a file whose server sends no validator (an entries list
    here) is fetched once for all its uses. Before, a retry ran outside any fetch session, so each use
    downloaded it again into a folder of its own (one per part and per job step)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from curate.recipe import build_recipe
    from curate.runner import Runner

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    handler, base = server
    _write(handler, "/entries.txt", b"red\nblue\ncircle\n", 0)
    texts = [f"a red circle {i}" + (" flaky" if i % 3 == 0 else "") for i in range(12)]
    pq.write_table(pa.table({"url": [f"http://x/{i}" for i in range(12)], "caption": texts}), tmp_path / "in.parquet")

    def recipe(fixed: bool):
        return build_recipe({"name": "t", "input": {"path": str(tmp_path / "in.parquet"), "format": "parquet"},
                             "output": {"path": str(tmp_path / "out"), "samples_per_shard": 2},
                             "stages": [{"tests.e2e.retry_plugin:Flaky": {"fixed": fixed}},
                                        {"metaclip_balance": {"entries": f"{base}/entries.txt", "t": 100}}]})

    rec = recipe(False)  # (checking the setting reads it once, outside the run)
    handler.gets.clear()
    assert Runner(rec).start().counts.failed == {"flaky/stage_error": 4}
    run_gets = handler.gets["/entries.txt"]
    rec = recipe(True)
    handler.gets.clear()
    manifest = Runner(rec).retry_failed()
    assert manifest.status == "complete" and manifest.counts.kept == 12
    assert handler.gets["/entries.txt"] == run_gets == 1
