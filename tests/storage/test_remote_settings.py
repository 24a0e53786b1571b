"""Checkpoint and entry-list settings given as URLs (issue 14 item 1): clip_score's filter checkpoint on s3
(moto_server on loopback), metaclip_balance's entries on s3, over loopback HTTP and as file://, all fetched
through fsspec into the machine's cache (bounded, keyed by URL and ETag); a missing one fails the recipe
with one line naming the setting and the URL. hf:// goes through the same fsspec call but cannot be
tested here (no internet)."""
from __future__ import annotations

import functools
import http.server
import json
import threading
import uuid

import fsspec
import pytest

from curate.io import storage
from tests.conftest import curate_inprocess


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CURATE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "fetched"


@pytest.fixture(scope="module")
def filter_ckpt(tmp_path_factory):
    """A curate-tiny checkpoint as `curate train` writes it (random weights: scores, not quality, are compared)."""
    import open_clip
    import torch

    from curate.train import checkpoints, configs

    configs.register()
    torch.manual_seed(0)
    model = open_clip.create_model("curate-tiny")
    return checkpoints.save(tmp_path_factory.mktemp("ckpt") / "filter.pt",
                            {"state_dict": model.state_dict(), "config": {"model": "curate-tiny"}})


def _put(bucket: str, name: str, data: bytes) -> str:
    fsspec.filesystem("s3", skip_instance_cache=True).pipe_file(f"{bucket}/{name}", data)
    return f"s3://{bucket}/{name}"


def test_clip_score_checkpoint_from_s3(filter_ckpt, bucket, cache, tmp_path, capsys):
    from curate.demo import images
    from curate.scorers.clip_score import ClipScore

    url = _put(bucket, "models/filter.pt", filter_ckpt.read_bytes())
    rng = __import__("numpy").random.default_rng(0)
    imgs = [images.encode(images.render(rng, format="jpeg")[0], "jpeg", 90) for _ in range(3)]
    texts = ["a red circle", "a blue square", "a green triangle"]
    remote, local = ClipScore(checkpoint=url), ClipScore(checkpoint=str(filter_ckpt))
    remote.setup()
    local.setup()
    assert remote.score(imgs, texts)[0].tolist() == local.score(imgs, texts)[0].tolist()
    cached = list(cache.glob("*/filter.pt"))
    assert len(cached) == 1 and cached[0].read_bytes() == filter_ckpt.read_bytes()

    # in a recipe: a present URL validates (dry run: nothing runs, nothing written); a missing one is one line
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nstages:\n  - download: {}\n  - clip_score: {checkpoint: CKPT}\n")
    urls = tmp_path / "urls.csv"
    urls.write_text("url,caption\nhttp://127.0.0.1:9/a.jpg,a red circle\n")
    r = curate_inprocess("run", recipe, "-i", urls, "-o", tmp_path / "out",
                         "--set", f"clip_score.checkpoint={url}", "--dry-run", capsys=capsys)
    assert r.returncode == 0, r.stderr
    missing = f"s3://{bucket}/models/missing.pt"
    r = curate_inprocess("run", recipe, "-i", urls, "-o", tmp_path / "out", "--set",
                         f"clip_score.checkpoint={missing}", capsys=capsys)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert "clip_score.checkpoint" in lines[0] and missing in lines[0] and "does not exist" in lines[0]
    assert not (tmp_path / "out").exists()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_entries_from_s3_http_and_file_urls(bucket, cache, tmp_path):
    from curate.balance.metaclip import MetaClipBalance, read_entries

    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "entries.txt").write_text("red\ncircle\n\nblue square\n")
    (tmp_path / "www" / "entries.json").write_text('["red", "circle"]')
    s3_url = _put(bucket, "lists/entries.txt", b"red\ncircle\n\nblue square\n")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(_Quiet, directory=str(tmp_path / "www")))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        http_url = f"http://127.0.0.1:{server.server_address[1]}/entries.json"
        assert read_entries(s3_url) == ["red", "circle", "blue square"]
        assert read_entries(http_url) == ["red", "circle"]  # .json kept in the cached name: parsed as JSON
        assert read_entries(f"file://{tmp_path}/www/entries.txt") == ["red", "circle", "blue square"]
        stage = MetaClipBalance(entries=s3_url, t=1)
        assert stage.matcher()[0] == ["red", "circle", "blue square"]
        with pytest.raises(ValueError, match=f"metaclip_balance.entries: {http_url[:-5]}nope.txt does not exist"):
            MetaClipBalance(entries=http_url[:-5] + "nope.txt")
    finally:
        server.shutdown()
        server.server_close()


def test_fetch_cache_is_keyed_by_version_and_bounded(bucket, cache, monkeypatch):
    monkeypatch.setattr(storage, "FETCH_CACHE_BYTES", 15)  # room for the newer file (13 bytes), not both
    url = _put(bucket, f"f-{uuid.uuid4().hex[:6]}.txt", b"one\n")
    first = storage.local_file(url, "x.entries")
    assert first.read_bytes() == b"one\n" and storage.local_file(url, "x.entries") == first  # a hit: same file
    _put(bucket, url.split("/", 3)[3], b"two, changed\n")  # a new version (new ETag) is fetched again
    second = storage.local_file(url, "x.entries")
    assert second != first and second.read_bytes() == b"two, changed\n"
    assert not first.exists() and [p.name for p in cache.glob("*/*.txt")] == [second.name]  # LRU pruned
    with pytest.raises(storage.StorageError, match="x.entries: .* over the 4-byte limit"):
        storage.local_file(url, "x.entries", max_bytes=4)


def test_resume_refuses_a_rewritten_checkpoint_url(bucket, cache, tmp_path, monkeypatch):
    """A file a setting names by URL is fingerprinted at start (size and ETag) like a local one: rewriting
    the object under the same URL (a retrained checkpoint uploaded again) and resuming would mix two
    configurations in one run, so it is refused; the same object resumes; an endpoint-like http URL is
    not probed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from curate.recipe import RecipeError, build_recipe
    from curate.runner import Runner, RunError

    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # a small run stays in this process
    url = _put(bucket, "lists/entries.txt", b"cat\ndog\n")
    src, root = tmp_path / "in.parquet", tmp_path / "out"
    pq.write_table(pa.table({"url": [f"http://x/{i}" for i in range(40)],
                             "caption": [f"a {'cat' if i % 2 else 'dog'} photo {i}" for i in range(40)]}), src)

    def runner():
        return Runner(build_recipe({"name": "t", "input": {"path": str(src)}, "output": {"path": str(root)},
                                    "stages": [{"caption_text": {"min_words": 1}},
                                               {"metaclip_balance": {"entries": url, "t": 5, "seed": 1}}]}))

    assert runner().start()["status"] == "complete"
    saved = json.loads((root / "manifest.json").read_text())["named_files"]
    assert list(saved) == [url] and saved[url]["bytes"] == 8 and saved[url]["version"]
    assert runner().start(resume=True)["status"] == "complete"  # the same object: a no-op resume
    _put(bucket, "lists/entries.txt", b"cat\ndog\nbird\n")
    with pytest.raises(RunError, match=f"{url}, named by the recipe, changed since this run started"):
        runner().start(resume=True)
    fsspec.filesystem("s3", skip_instance_cache=True).rm_file(url)
    with pytest.raises(RecipeError, match=f"{url} does not exist"):  # refused before the run is opened
        runner().start(resume=True)
    probed = []  # endpoints are not probed: an unreachable one would also give None, so count the calls
    monkeypatch.setattr(storage, "_remote_file", lambda u, w: probed.append(u))
    assert storage.remote_identity("http://127.0.0.1:9/v1") is None and probed == []
