"""An adversarial HTTP server on 127.0.0.1 for the hostile-input tests: servers that drip, stall, reset,
lie about lengths, send bombs, redirect to other schemes, or answer HTML for an image.

API (small on purpose; other hostile tests import it):

    from tests.hostile.server import HostileServer, hostile_server   # hostile_server: a pytest fixture

    with HostileServer() as srv:          # or the module-scoped `hostile_server` fixture
        srv.url("/ok.jpg")                # -> "http://127.0.0.1:PORT/ok.jpg"
        srv.routes["/mine.png"] = lambda h: h.send_bytes(png_bytes, "image/png")   # add a case

A route is a function of the request handler (`Handler`, a BaseHTTPRequestHandler with helpers
`send_bytes`, `redirect`, `drip`, `wait`), looked up by the request path after percent-decoding (so
"/bilder/grün.jpg" answers "/bilder/gr%C3%BCn.jpg"); the query string is ignored. Unknown paths get 404.
Handlers that wait (drip, stall, endless bodies) stop when the client goes away or the server stops, so
`stop()` returns promptly. The server runs in a thread of the test process (stdlib ThreadingHTTPServer):
slow handlers sleep, they do not burn the test's CPU.
"""
from __future__ import annotations

import io
import socket
import struct
import threading
import time
import zlib
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import pytest

DRIP_INTERVAL_S = 1.0  # the slow-drip handlers send one byte per interval
HUGE = 10 << 30  # what the "huge" handlers claim / would send (10 GiB): far beyond any max_bytes
BOMB_DECODED = 256 << 20  # the gzip bomb decodes to 256 MiB of zeros (about 260 KB on the wire)


@lru_cache(maxsize=None)
def jpeg(size: int = 64, seed: int = 0) -> bytes:
    """A small, valid, textured JPEG (with its EOI marker)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    arr = (np.linspace(0, 255, size)[None, :, None] + rng.integers(0, 40, (size, size, 3))).clip(0, 255)
    buf = io.BytesIO()
    Image.fromarray(arr.astype("uint8")).save(buf, "JPEG", quality=90)
    return buf.getvalue()


@lru_cache(maxsize=None)
def gzip_bomb(decoded: int = BOMB_DECODED) -> bytes:
    """A valid gzip member that decodes to `decoded` zero bytes, built in milliseconds: after a full
    flush, deflate's output for the same 1 MiB of zeros repeats exactly, so one block is repeated."""
    block_in = b"\0" * (1 << 20)
    n = decoded // len(block_in)
    c = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    first = c.compress(block_in) + c.flush(zlib.Z_FULL_FLUSH)
    again = c.compress(block_in) + c.flush(zlib.Z_FULL_FLUSH)
    tail = c.flush(zlib.Z_FINISH)[:-8]  # final empty block, without the trailer
    crc = 0
    for _ in range(n):
        crc = zlib.crc32(block_in, crc)
    return first + again * (n - 1) + tail + struct.pack("<II", crc, (n * len(block_in)) & 0xFFFFFFFF)


def gzip_bytes(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args):  # quiet: pytest shows failures, not access logs
        pass

    def _route(self):
        path = unquote(urlsplit(self.path).path)
        self.server.hits[path] = self.server.hits.get(path, 0) + 1
        route = self.server.owner.routes.get(path)
        try:
            if route is None:
                self.send_bytes(b"not found", "text/plain", status=404)
            else:
                route(self)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the client gave up: that is what the slow cases are for

    do_GET = _route

    # --- helpers for routes ---------------------------------------------------------------------------

    def stopping(self) -> bool:
        return self.server.owner.stopped.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; False when the server is stopping (then the handler should return)."""
        return not self.server.owner.stopped.wait(seconds)

    def send_bytes(self, body: bytes, ctype: str = "image/jpeg", status: int = 200, length: int | None = None,
                   headers: dict | None = None) -> None:
        """Answer `status` with `body`; `length` overrides Content-Length (a lie), -1 omits it (then the
        connection closes after the body)."""
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        length = len(body) if length is None else length
        if length >= 0:
            self.send_header("Content-Length", str(length))
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        if length != len(body):
            self.close_connection = True

    def redirect(self, location: str, status: int = 302) -> None:
        self.send_response(status)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def drip(self, body: bytes, interval: float = DRIP_INTERVAL_S, ctype: str = "image/jpeg") -> None:
        """Send `body` one byte per `interval` (after honest headers) until done or the client leaves."""
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        for i in range(len(body)):
            self.wfile.write(body[i:i + 1])
            self.wfile.flush()
            if not self.wait(interval):
                return

    def endless(self, ctype: str = "image/jpeg", length: int | None = None, chunk: int = 1 << 16) -> None:
        """Send zeros forever (or until `HUGE`), claiming Content-Length `length` if given."""
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        if length is not None:
            self.send_header("Content-Length", str(length))
        else:
            self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        block, sent = b"\0" * chunk, 0
        while sent < HUGE and not self.stopping():
            self.wfile.write(block)
            sent += chunk

    def reset(self) -> None:
        """Abort the connection with a TCP RST (SO_LINGER 0), without any answer."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()


def _drip_headers(h: Handler) -> None:
    """A status line, then header bytes one per second: never a complete header block."""
    h.wfile.write(b"HTTP/1.1 200 OK\r\n")
    h.wfile.flush()
    for byte in b"X-Slow: " + b"a" * 10_000:
        h.wfile.write(bytes([byte]))
        h.wfile.flush()
        if not h.wait(DRIP_INTERVAL_S):
            return


def stall(h: Handler, ctype: str = "image/jpeg") -> None:
    """Honest headers, then nothing (until the server stops)."""
    h.send_response(200)
    h.send_header("Content-Type", ctype)
    h.send_header("Content-Length", str(len(jpeg())))
    h.end_headers()
    h.wfile.flush()
    h.wait(3600)
    h.close_connection = True


def _reset_mid_body(h: Handler) -> None:
    body = jpeg()
    h.send_response(200)
    h.send_header("Content-Type", "image/jpeg")
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body[: len(body) // 2])
    h.wfile.flush()
    h.reset()


def default_routes() -> dict:
    """The built-in cases, by path. Copy and extend per test (`srv.routes[...] = ...`)."""
    good, bomb = jpeg(), gzip_bomb()  # built now, not while a timed request waits for them
    return {
        "/": lambda h: h.send_bytes(b"ok", "text/plain"),
        "/ok.jpg": lambda h: h.send_bytes(good),
        "/bilder/grün.jpg": lambda h: h.send_bytes(jpeg(64, 1)),
        "/a b/c.jpg": lambda h: h.send_bytes(jpeg(64, 2)),
        "/gzip.jpg": lambda h: h.send_bytes(gzip_bytes(good), headers={"Content-Encoding": "gzip"}),
        "/deflate.jpg": lambda h: h.send_bytes(zlib.compress(good), headers={"Content-Encoding": "deflate"}),
        "/auth.jpg": lambda h: (h.send_bytes(good) if h.headers.get("Authorization")
                                else h.send_bytes(b"who are you", "text/plain", status=401)),
        "/slow-drip.jpg": lambda h: h.drip(good),
        "/slow-headers.jpg": _drip_headers,
        "/stall.jpg": stall,
        "/reset.jpg": lambda h: h.reset(),
        "/reset-mid-body.jpg": _reset_mid_body,
        "/huge-length.jpg": lambda h: h.endless(length=HUGE),
        "/huge-stream.jpg": lambda h: h.endless(),
        "/short.jpg": lambda h: h.send_bytes(good[: len(good) // 2], length=len(good)),
        "/gzip-bomb.jpg": lambda h: h.send_bytes(bomb, headers={"Content-Encoding": "gzip"}),
        "/brotli.jpg": lambda h: h.send_bytes(good, headers={"Content-Encoding": "br"}),
        "/loop-a": lambda h: h.redirect("/loop-b"),
        "/loop-b": lambda h: h.redirect("/loop-a"),
        "/redirect-ok": lambda h: h.redirect("/ok.jpg", 301),
        "/redirect-file": lambda h: h.redirect("file:///etc/passwd"),
        "/redirect-ftp": lambda h: h.redirect("ftp://127.0.0.1/ok.jpg"),
        "/redirect-data": lambda h: h.redirect("data:image/jpeg;base64,/9j/4AAQSkZJRg=="),
        "/html.jpg": lambda h: h.send_bytes(b"<!doctype html><html><body>not an image</body></html>", "text/html"),
        "/robots.jpg": lambda h: h.send_bytes(good, headers={"X-Robots-Tag": "noai"}),
        "/404.jpg": lambda h: h.send_bytes(b"gone", "text/plain", status=404),
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default listen backlog is 5: with every route fetched at once the kernel drops SYNs
    # and the client retries them a second later, so a redirect loop's hops ran past the deadline in CI.
    request_queue_size = 256
    owner: HostileServer
    hits: dict

    def handle_error(self, request, client_address):  # clients that hang up are the point, not news
        pass


class HostileServer:
    """The adversarial loopback server: `routes` (path -> handler function), `url(path)`, start/stop."""

    def __init__(self, routes: dict | None = None):
        self.routes = default_routes() if routes is None else dict(routes)
        self.stopped = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> HostileServer:
        self.stopped.clear()
        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.owner, self._server.hits = self, {}
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="hostile-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)
            self._server = None

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def hits(self) -> dict:
        """Requests per (decoded) path since start."""
        return self._server.hits

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> HostileServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@pytest.fixture(scope="module")
def hostile_server():
    """A started HostileServer for the module; stopped (slow handlers released) at the end."""
    with HostileServer() as srv:
        yield srv


def wait_ready(srv: HostileServer, timeout: float = 5.0) -> None:
    """Block until the server answers (it is ready as soon as start() returns; for external callers)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", srv.port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError("hostile server did not start")
