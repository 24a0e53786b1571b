"""Hostile servers and hostile URLs against the real fetcher, the real download stage and one real run.

Everything talks to tests/hostile/server.py on 127.0.0.1 (no other traffic). Each case asserts the row's
status and reason and, for the cases that try to hang or flood, the wall time and the memory bound.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import tarfile
import threading
import time

import pyarrow as pa
import pyarrow.dataset as pads
import pytest

from curate import schema
from curate.download import urls
from curate.download.fetch import FetchError, Limits, fetch, fetch_many
from curate.download.image import Download
from curate.interleaved.parse import ParseDocuments
from curate.stage import run_local
from tests.conftest import curate_inprocess
from tests.hostile.server import hostile_server, jpeg, stall  # noqa: F401 - hostile_server is a fixture

TIMEOUT_S = 2.0
SLACK_S = 1.5  # scheduling on a loaded 2-core machine
MAX_BYTES = 1 << 20

# path -> reason (None: the body comes back). Every built-in route of the server is listed.
CASES = {
    "/ok.jpg": None, "/bilder/grün.jpg": None, "/a b/c.jpg": None, "/gzip.jpg": None, "/deflate.jpg": None,
    "/redirect-ok": None, "/html.jpg": None, "/": None,
    "/slow-drip.jpg": "download_timeout", "/slow-headers.jpg": "download_timeout", "/stall.jpg": "download_timeout",
    "/reset.jpg": "download_connection_error", "/reset-mid-body.jpg": "download_connection_error",
    "/huge-length.jpg": "download_too_large", "/huge-stream.jpg": "download_too_large",
    "/short.jpg": "download_truncated", "/gzip-bomb.jpg": "download_too_large", "/brotli.jpg": "download_bad_encoding",
    "/loop-a": "download_too_many_redirects", "/loop-b": "download_too_many_redirects",
    "/redirect-file": "download_redirect_refused", "/redirect-ftp": "download_redirect_refused",
    "/redirect-data": "download_redirect_refused", "/robots.jpg": "download_disallowed",
    "/auth.jpg": "download_http_401", "/404.jpg": "download_http_404",
}
SLOW = {"/slow-drip.jpg", "/slow-headers.jpg", "/stall.jpg"}


def _limits(**kw) -> Limits:
    return Limits(**{"timeout_s": TIMEOUT_S, "max_bytes": MAX_BYTES,
                     "disallowed_header_directives": frozenset({"noai"}), **kw})


class PeakRSS:
    """Samples this process's RSS every 5 ms while in the block; `growth` is peak minus start, in bytes."""

    def __enter__(self):
        import psutil

        self._proc, self._stop = psutil.Process(), threading.Event()
        self.start = self.peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.growth = self.peak - self.start


def test_every_hostile_route_is_one_reason_within_its_time(hostile_server):
    assert set(CASES) == set(hostile_server.routes), "each server route needs an expected outcome here"
    items = [(p, hostile_server.url(p)) for p in CASES]
    t0 = time.monotonic()
    got, took = {}, {}
    for path, result in fetch_many(items, _limits(), concurrency=len(items)):
        got[path] = result.reason if isinstance(result, FetchError) else None
        took[path] = time.monotonic() - t0
        if isinstance(result, bytes) and path.endswith(".jpg") and path != "/html.jpg":
            assert result[:3] == b"\xff\xd8\xff" and result.endswith(b"\xff\xd9"), path  # decoded, whole
    assert got == CASES
    for path in SLOW:  # one slow host costs timeout_s, not forever
        assert TIMEOUT_S - 0.1 <= took[path] <= TIMEOUT_S + SLACK_S, (path, took[path])
    fast = {p: t for p, t in took.items() if p not in SLOW}
    assert max(fast.values()) < TIMEOUT_S + SLACK_S, fast


def test_error_messages_carry_no_credentials(hostile_server):
    url = hostile_server.url("/404.jpg?token=s3cr3t").replace("//", "//alice:hunter2@")
    with pytest.raises(FetchError) as e:
        fetch(url, _limits())
    assert e.value.reason == "download_http_404"
    refused = "http://bob:pa55@127.0.0.1:1/x.jpg?X-Amz-Signature=abc"
    with pytest.raises(FetchError) as e:
        fetch(refused, _limits())
    assert e.value.reason == "download_connection_refused"
    for text in (str(e.value), urls.redact(url)):
        assert not any(s in text for s in ("hunter2", "alice", "s3cr3t", "pa55", "abc")), text
    # credentials are still used for the request itself
    assert fetch(hostile_server.url("/auth.jpg").replace("//", "//u:p@"), _limits()) == jpeg()


def test_bombs_and_floods_stay_within_memory(hostile_server):
    limits = _limits(max_bytes=4 << 20)
    for path in ("/gzip-bomb.jpg", "/huge-stream.jpg"):  # 256 MiB of zeros / 10 GiB stream
        with PeakRSS() as mem:
            with pytest.raises(FetchError) as e:
                fetch(hostile_server.url(path), limits)
        assert e.value.reason == "download_too_large"
        assert mem.growth < 48 << 20, (path, mem.growth >> 20)


def test_slow_drip_with_retries_is_bounded_per_attempt(hostile_server):
    t0 = time.monotonic()
    with pytest.raises(FetchError) as e:
        fetch(hostile_server.url("/slow-drip.jpg"), _limits(timeout_s=1.0, retries=1))
    assert e.value.reason == "download_timeout"
    assert 2.0 <= time.monotonic() - t0 <= 2.0 + 0.3 + SLACK_S  # two attempts + backoff


def test_video_fetch_stall_and_drip_are_bounded(hostile_server):
    """Videos get a long total (max_seconds) and a short stall limit (timeout_s): both end the transfer."""
    from curate.video import fetch as video_fetch

    hostile_server.routes["/stall.mp4"] = lambda h: stall(h, "video/mp4")
    hostile_server.routes["/drip.mp4"] = lambda h: h.drip(b"\0" * 100, 0.2, "video/mp4")
    for path, kw, bound in (("/stall.mp4", dict(timeout_s=1.0, max_seconds=30), 1.0),
                            ("/drip.mp4", dict(timeout_s=1.0, max_seconds=2.0), 2.0)):  # bytes keep coming
        t0 = time.monotonic()
        with pytest.raises(video_fetch.FetchError) as e:
            video_fetch.fetch(hostile_server.url(path), max_bytes=1 << 20, **kw)
        assert e.value.reason == "download_timeout" and not e.value.dropped
        assert bound - 0.1 <= time.monotonic() - t0 <= bound + SLACK_S, path
    hostile_server.routes["/endless.mp4"] = lambda h: h.endless("video/mp4")
    with pytest.raises(video_fetch.FetchError) as e:
        video_fetch.fetch(hostile_server.url("/endless.mp4"), timeout_s=1, max_bytes=1 << 20, max_seconds=5)
    assert e.value.reason == "video_too_large" and e.value.dropped  # limits are decisions for videos
    with pytest.raises(video_fetch.FetchError) as e:
        video_fetch.fetch(hostile_server.url("/redirect-file"), timeout_s=1, max_bytes=1 << 20, max_seconds=5)
    assert e.value.reason == "download_redirect_refused"


@pytest.mark.parametrize("given, sent", [
    ("  http://Example.ORG/bilder/grün.jpg\n", "http://example.org/bilder/gr%C3%BCn.jpg"),
    ("http://grün.example/x", "http://xn--grn-ioa.example/x"),
    ("https://bücher.de:8443/ä?q=ö ü&r=%C3%A4", "https://xn--bcher-kva.de:8443/%C3%A4?q=%C3%B6%20%C3%BC&r=%C3%A4"),
    ("http://x.org/already%20encoded/%E2%82%AC", "http://x.org/already%20encoded/%E2%82%AC"),  # no double-encoding
    ("http://x.org/a b/\"q\"<>", "http://x.org/a%20b/%22q%22%3C%3E"),
    ("http://u:pä@x.org", "http://u:p%C3%A4@x.org/"),
    ("http://x.org/p#fragment", "http://x.org/p"),
])
def test_urls_are_sent_as_browsers_send_them(given, sent):
    assert urls.normalize(given) == sent


@pytest.mark.parametrize("bad", ["", "   ", "ftp://x.org/a.jpg", "file:///etc/passwd", "data:image/png;base64,AA",
                                 "javascript:alert(1)", "http://", "http://x.org:99999/", "http://a:b:c/",
                                 "http://-grün.example/", "http://a<b>.org/", "//x.org/a.jpg", None])
def test_unfetchable_urls_are_invalid(bad):
    with pytest.raises(urls.InvalidURL):
        urls.normalize(bad)


def test_redact_hides_userinfo_and_credential_params():
    assert urls.redact("https://me:pw@h.org/a?x=1&token=T&sig=S#f") == "https://***@h.org/a?x=1&token=***&sig=***#f"
    assert urls.redact("see http://u@h/ and http://h/?X-Amz-Credential=K;") == "see http://***@h/ and http://h/?X-Amz-Credential=***;"
    assert urls.redact("http://h.org/key=value/a@b") == "http://h.org/key=value/a@b"  # '@' in a path is not userinfo
    assert not urls.has_credentials("http://h.org/a?key=1") and urls.has_credentials("http://a:b@h.org/")


def test_idn_host_is_fetched_by_its_ascii_name(hostile_server):
    """No non-loopback name resolves here, so `resolve` maps the IDNA name to 127.0.0.1 (and refuses any
    other name): the request proves the fetcher connects for, and names, `xn--grn-ioa.example`."""
    asked = []

    def loopback(host):
        asked.append(host)
        if host != "xn--grn-ioa.example":
            raise socket.gaierror(f"test resolver: unknown host {host}")
        return "127.0.0.1"

    url = f"http://grün.example:{hostile_server.port}/bilder/grün.jpg"
    assert fetch(url, _limits(), resolve=loopback) == jpeg(64, 1)
    assert asked == ["xn--grn-ioa.example"]
    hostile_server.routes["/host"] = lambda h: h.send_bytes(h.headers["Host"].encode(), "text/plain")
    assert fetch(url.replace("/bilder/grün.jpg", "/host"), _limits(), resolve=loopback) == \
        f"xn--grn-ioa.example:{hostile_server.port}".encode()
    with pytest.raises(FetchError) as e:
        fetch(f"http://ünknown.example:{hostile_server.port}/", _limits(), resolve=loopback)
    assert e.value.reason == "download_dns_error"


def _table(urls_: list) -> pa.Table:
    n = len(urls_)
    t = pa.table({"uid": [f"u{i}" for i in range(n)], "url": pa.array(urls_, pa.string()),
                  "text": [f"t{i}" for i in range(n)], "status": ["ok"] * n, "row": list(range(n)), "part": [0] * n})
    return t


def test_download_stage_rows_and_redacted_urls(hostile_server):
    step = Download(timeout_s=TIMEOUT_S, max_bytes=MAX_BYTES, threads=8, image_size=32)
    given = [hostile_server.url("/bilder/grün.jpg"), "  " + hostile_server.url("/a b/c.jpg") + " ",
             hostile_server.url("/auth.jpg").replace("//", "//u:hunter2@"), hostile_server.url("/slow-drip.jpg"),
             hostile_server.url("/html.jpg"), hostile_server.url("/redirect-file"),
             "ftp://127.0.0.1/x.jpg", "http://bob:pw@127.0.0.1:1/", None]
    step._resizer()  # import OpenCV and img2dataset's resizer before the clock starts
    t0 = time.monotonic()
    out = run_local([step], _table(given), schema.run_schema(step.writes)).to_pylist()
    assert time.monotonic() - t0 < TIMEOUT_S + SLACK_S + 3
    assert [(r["status"], r["reason"]) for r in out] == [
        ("ok", None), ("ok", None), ("ok", None), ("failed", "download_timeout"), ("failed", "image_decode_error"),
        ("failed", "download_redirect_refused"), ("failed", "download_invalid_url"),
        ("failed", "download_connection_refused"), ("failed", "download_invalid_url")]
    assert out[0]["sha256"] == hashlib.sha256(jpeg(64, 1)).hexdigest()
    assert out[2]["url"] == hostile_server.url("/auth.jpg").replace("//", "//***@")  # fetched with, stored without
    assert out[7]["url"] == "http://***@127.0.0.1:1/"
    assert out[1]["url"] == given[1]  # otherwise the URL stays as given
    assert not any("hunter2" in str(v) or "pw@" in str(v) for r in out for v in r.values())


def test_parse_documents_bounds_size_and_image_count():
    n_img = 5
    texts = [["p" * 50, None] * n_img, ["x" * 2000, None], ["ok", None]]
    images = [[v for i in range(n_img) for v in (None, f"http://h/{i}.jpg")], [None, "http://h/a.jpg"],
              [None, "http://h/b.jpg"]]
    n = 3
    t = pa.table({"uid": [f"d{i}" for i in range(n)], "url": [f"http://h/{i}.html" for i in range(n)],
                  "text": pa.array([None] * n, pa.string()), "status": ["ok"] * n, "row": list(range(n)),
                  "part": [0] * n, "texts": texts, "images": images})
    step = ParseDocuments(max_images_per_doc=4, max_doc_bytes=1000)
    out = run_local([step], t, schema.run_schema(step.writes)).to_pylist()
    assert [(r["status"], r["reason"]) for r in out] == [
        ("failed", "doc_too_many_images"), ("failed", "doc_too_large"), ("ok", None)]
    assert out[0]["doc_images"] is None and len(out[2]["doc_images"]) == 1


def _snapshot(root) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file()}


def test_download_run_with_hostile_urls_stays_in_its_folder(ray_address, hostile_server, tmp_path, capsys):
    cases = {"/ok.jpg": ("ok", None), "/bilder/grün.jpg": ("ok", None), "/slow-drip.jpg": ("failed", "download_timeout"),
             "/redirect-file": ("failed", "download_redirect_refused"), "/gzip-bomb.jpg": ("failed", "download_too_large"),
             "/short.jpg": ("failed", "download_truncated")}
    given = [hostile_server.url(p) for p in cases] + [hostile_server.url("/ok.jpg").replace("//", "//me:hunter2@")]
    src = tmp_path / "in"
    src.mkdir()
    (src / "urls.jsonl").write_text("".join(json.dumps({"url": u, "caption": f"c{i}"}) + "\n" for i, u in enumerate(given)))
    out = tmp_path / "out"
    before = _snapshot(tmp_path)
    cwd_before = sorted(os.listdir("."))
    res = curate_inprocess("run", "download_only", "--input", str(src / "urls.jsonl"), "--output", str(out),
                           "--set", f"download.timeout_s={TIMEOUT_S}", "--set", f"download.max_bytes={MAX_BYTES}",
                           capsys=capsys, env={"RAY_ADDRESS": ray_address})
    assert res.returncode == 0, res.stdout + res.stderr
    # (no wall-time assertion here: Ray start-up dominates and varies with load; the per-request bound is
    # asserted above, and bench/hostile.py measures a slow host among 1,000 good ones)
    rows = sorted(pads.dataset(str(out / "meta"), format="parquet").to_table().to_pylist(), key=lambda r: r["row"])
    assert [(r["status"], r["reason"]) for r in rows] == [*cases.values(), ("ok", None)]
    assert rows[-1]["url"] == hostile_server.url("/ok.jpg").replace("//", "//***@")
    members = {}
    for tar in out.glob("shards/*.tar"):
        with tarfile.open(tar) as tf:
            members.update({m.name: tf.extractfile(m).read() for m in tf.getmembers()})
    assert sum(name.endswith(".jpg") for name in members) == 3
    everything = b"".join(members.values()) + b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file())
    assert b"hunter2" not in everything and b"root:x:0:0" not in everything  # no credential, no /etc/passwd
    assert _snapshot(tmp_path).keys() - before.keys() == {k for k in _snapshot(tmp_path) if k.startswith("out/")}
    assert {k: v for k, v in _snapshot(tmp_path).items() if not k.startswith("out/")} == before
    assert sorted(os.listdir(".")) == cwd_before


def test_body_decoding_edge_cases():
    """gzip with two members, raw (headerless) deflate, bodies fed a byte at a time, corrupt and short streams."""
    import gzip
    import zlib

    from curate.download.fetch import _Body

    data = bytes(range(256)) * 400
    cases = {"gzip": gzip.compress(data[:50_000]) + gzip.compress(data[50_000:]),
             "deflate": zlib.compress(data), "DEFLATE": zlib.compress(data)[2:-4]}
    for enc, wire in cases.items():
        body = _Body(enc, 1 << 20)
        for i in range(len(wire)):
            body.feed(wire[i:i + 1])
        assert body.finish() == data, enc
    for enc, wire, reason in (("gzip", b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\xff\xff\xff", "download_bad_encoding"),
                              ("gzip", gzip.compress(data)[:500], "download_truncated"),
                              ("deflate", b"x", "download_truncated")):
        with pytest.raises(FetchError) as e:
            body = _Body(enc, 1 << 20)
            body.feed(wire)
            body.finish()
        assert e.value.reason == reason, (enc, wire[:10])
