"""WebDataset tars read over http(s) from a server that ignores Range requests (`python -m http.server`, the
server a new user tries first): a real loopback server, the reader's index and the load_image stage.

fsspec's HTTP file reads blocks by Range; from such a server every read not at byte 0 failed, so each of
the tar's samples failed load_image with stage_error. The tar is now read from a whole copy in the fetch
cache (curate.io.inputfs.open_read).
"""
from __future__ import annotations

import functools
import http.server
import tarfile
import threading

import fsspec
import pytest

from curate.io import inputfs, reader
from tests.io.test_inputs import add, jpeg, load, split


@pytest.fixture
def served(tmp_path, monkeypatch):
    """(folder, base URL) of a loopback http.server (SimpleHTTPRequestHandler: no Range support)."""
    monkeypatch.setenv("CURATE_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "srv"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    inputfs.ranges_supported.cache_clear()  # the port may be reused by another test's server


def test_webdataset_tar_over_http_without_range_support(served, tmp_path):
    root, base = served
    images = {f"{i:05d}": jpeg((i * 20, 9, 200 - i * 20)) for i in range(6)}
    with tarfile.open(root / "shard.tar", "w") as tar:
        for key, data in images.items():
            add(tar, f"{key}.jpg", data)
            add(tar, f"{key}.txt", f"caption {key}".encode())
    url = f"{base}/shard.tar"
    with pytest.raises(ValueError, match="range requests"):  # the server really ignores Range
        with fsspec.open(url, "rb").open() as f:
            f.seek(1000)
            f.read(10)
    spec = reader.InputSpec(path=url, format="webdataset", source="s")
    assert reader.check_input(spec) is True
    sizes, extras, parts = split(spec, tmp_path, per=4)
    assert sizes == [4, 2]
    rows = load(parts, extras)
    assert [(r["status"], r["reason"]) for r in rows] == [("ok", None)] * 6
    assert {r["input_key"]: r["image"] for r in rows} == images  # exactly the bytes of each member
    assert rows[0]["text"] == "caption 00000"
