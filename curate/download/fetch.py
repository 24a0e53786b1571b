"""One bounded HTTP fetcher for images, document pages and videos.

Why not img2dataset's `download_image` any more: its timeout is urllib's per-socket-read timeout, so a
server that sends one byte a second (body or headers) never times out, and `r.read()` takes whatever the
server sends, so a 10 GB body or a gzip bomb takes the worker's memory. Here every request has:
- one wall-clock deadline (`timeout_s`) for connect, headers, redirects and body: a watchdog thread shuts
  the socket down when it passes, however the server dribbles (DNS is bounded by the system resolver's own
  timeouts, which we cannot interrupt);
- a byte bound (`max_bytes`) checked against Content-Length first, then counted while streaming, on the
  decoded bytes (gzip/deflate are decoded here, `max_bytes + 1` at most per step, so a bomb stops at
  `max_bytes`);
- redirects followed by hand: at most `max_redirects`, and only to http(s) (file:, ftp:, data: ... are
  refused with a reason);
- a short body (fewer bytes than Content-Length) as `download_truncated`, never as a shorter image.
What img2dataset does we keep: its thread-per-request shape (urllib's http.client underneath, which
measured half the CPU per request of an aiohttp event loop here), its User-Agent string (with the optional
token) and its X-Robots-Tag opt-out rule. Retries are for transient failures only (timeouts, resets,
408/429/5xx): re-asking a 404 is wasted time. Each attempt has its own `timeout_s`. Unlike urllib we do
not go through *_proxy environment variables.
"""
from __future__ import annotations

import base64
import heapq
import http.client
import itertools
import math
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from multiprocessing.pool import ThreadPool
from urllib.parse import unquote, urljoin, urlsplit

from curate.download import errors, urls

USER_AGENT = "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:72.0) Gecko/20100101 Firefox/72.0"  # img2dataset's
REDIRECTS = (301, 302, 303, 307, 308)
RETRYABLE = {"download_timeout", "download_connection_error", "download_http_408", "download_http_429",
             "download_http_500", "download_http_502", "download_http_503", "download_http_504"}
CHUNK = 1 << 16


@dataclass(frozen=True)
class Limits:
    """What one request may take. `timeout_s` is the total per attempt; `read_timeout_s` (optional) also
    fails a transfer that sends nothing for that long (videos: a long total, a short stall limit)."""

    timeout_s: float = 10.0
    max_bytes: int = 32 << 20
    retries: int = 0
    max_redirects: int = 5
    read_timeout_s: float | None = None
    user_agent_token: str | None = None
    disallowed_header_directives: frozenset[str] = frozenset()
    # Content-Type prefixes refused before the body is read (videos: text/html is never a video)
    refuse_content_types: tuple[str, ...] = ()
    extra_headers: tuple[tuple[str, str], ...] = field(default=())
    # inline `data:` URLs (documents embed images that way): decoded here, never a network request
    allow_data_urls: bool = False

    def user_agent(self) -> str:
        if self.user_agent_token:
            return f"{USER_AGENT} (compatible; {self.user_agent_token}; +https://github.com/rom1504/img2dataset)"
        return USER_AGENT


class FetchError(Exception):
    """A per-URL failure with its public reason code (declared in curate.download.errors.REASONS)."""

    def __init__(self, reason: str, message: str):
        super().__init__(urls.redact(message)[:500])
        self.reason = reason


class _Body:
    """Collects the body, decoding gzip/deflate, and stops at max_bytes decoded bytes."""

    def __init__(self, encoding: str, max_bytes: int):
        self.max_bytes, self.buf = max_bytes, bytearray()
        enc = encoding.strip().lower()
        self.gzip = enc in ("gzip", "x-gzip")
        if enc in ("", "identity"):
            self.z = None
        elif enc in ("gzip", "x-gzip"):
            self.z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif enc == "deflate":
            self.z = "deflate"  # zlib-wrapped or raw: decided on the first bytes
        else:
            raise FetchError("download_bad_encoding", f"Content-Encoding {encoding!r} is not supported")

    def _add(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) > self.max_bytes:
            raise FetchError("download_too_large", f"body larger than max_bytes {self.max_bytes} (stream cut off)")

    def feed(self, chunk: bytes) -> None:
        if self.z is None:
            return self._add(chunk)
        if self.z == "deflate":  # RFC 9110 says zlib format; some servers send raw deflate: look at 2 bytes
            self.pending = getattr(self, "pending", b"") + chunk
            if len(self.pending) < 2:
                return None
            chunk, head = self.pending, self.pending
            zlib_header = head[0] & 0x0F == 8 and (head[0] << 8 | head[1]) % 31 == 0
            self.z = zlib.decompressobj(zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS)
        try:
            data = chunk
            while data:
                self._add(self.z.decompress(data, self.max_bytes - len(self.buf) + 1))
                data = self.z.unconsumed_tail
                if not data and self.z.eof and self.z.unused_data and self.gzip:  # next gzip member
                    data, self.z = self.z.unused_data, zlib.decompressobj(16 + zlib.MAX_WBITS)
        except zlib.error as err:
            raise FetchError("download_bad_encoding", f"corrupt compressed body: {err}") from None

    def finish(self) -> bytes:
        if isinstance(self.z, str):  # deflate with fewer than 2 body bytes
            raise FetchError("download_truncated", "compressed body ends before its end marker")
        if self.z is not None:
            try:
                self._add(self.z.flush())
            except zlib.error as err:
                raise FetchError("download_bad_encoding", f"corrupt compressed body: {err}") from None
            if not self.z.eof:
                raise FetchError("download_truncated", "compressed body ends before its end marker")
        return bytes(self.buf)


def _http_error(status: int) -> FetchError:
    code = f"download_http_{status}" if status in errors.HTTP_CODES else "download_http_error"
    return FetchError(code, f"HTTP Error {status}")


def _disallowed(headers, limits: Limits) -> bool:
    """img2dataset's X-Robots-Tag rule (downloader.is_disallowed), restated so that fetching does not import
    img2dataset's downloader (fsspec, exifread). A header value is `[token:] directive, directive`; it applies
    when it names no user-agent token or ours, and disallows when one directive is in the configured set."""
    for value in headers.get_all("X-Robots-Tag") or ():
        token, sep, rest = value.partition(":")
        directives = {d.strip().lower() for d in (rest if sep else value).split(",")}
        ua_token = token.lower() if sep else None
        if (ua_token is None or ua_token == limits.user_agent_token) and directives & limits.disallowed_header_directives:
            return True
    return False


class _Watchdog:
    """One daemon thread that shuts down a socket when its request's deadline passes.

    Socket timeouts bound one recv, not a request: a server sending a byte a second satisfies every recv.
    shutdown() from another thread wakes a blocked recv (it returns EOF), so the request ends on time.
    """

    def __init__(self):
        self._heap: list = []
        self._cv = threading.Condition()
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, deadline: float, sock: socket.socket) -> list:
        entry = [deadline, next(self._seq), sock, False]  # [deadline, tie-break, socket, fired]
        with self._cv:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="curate-fetch-deadlines", daemon=True)
                self._thread.start()
            heapq.heappush(self._heap, entry)
            self._cv.notify()
        return entry

    def swap(self, entry: list, sock):
        """Watch `sock` (the TLS socket that replaced the plain one) for the same deadline."""
        with self._cv:
            if entry[2] is not None:
                entry[2] = sock
        return sock

    def cancel(self, entry: list) -> None:
        with self._cv:
            entry[2] = None  # lazily dropped when it reaches the top of the heap

    def _run(self) -> None:
        with self._cv:
            while True:
                while self._heap and self._heap[0][2] is None:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cv.wait()
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait > 0:
                    self._cv.wait(wait)
                    continue
                entry = heapq.heappop(self._heap)
                entry[3] = True
                try:
                    entry[2].shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


_WATCHDOG = _Watchdog()
_SSL = None


def _ssl_context() -> ssl.SSLContext:
    global _SSL
    if _SSL is None:
        _SSL = ssl.create_default_context()
    return _SSL


def _open(url: str, limits: Limits, deadline: float, resolve: Callable[[str], str] | None):
    """Connect and send the request; returns (connection, response, watchdog entry)."""
    parts = urlsplit(url)
    https = parts.scheme == "https"
    hostport = parts.netloc.rpartition("@")[2]
    host = parts.hostname or ""
    port = parts.port or (443 if https else 80)
    headers = {"Host": hostport, "User-Agent": limits.user_agent(), "Accept-Encoding": "gzip, deflate",
               "Accept": "*/*", "Connection": "close", **dict(limits.extra_headers)}
    if parts.username is not None:  # userinfo is sent as Basic auth, as urllib and browsers do
        cred = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(cred).decode("ascii")
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("deadline")
    timeout = min(limits.read_timeout_s or math.inf, remaining)
    conn = (http.client.HTTPSConnection(host, port, timeout=timeout, context=_ssl_context()) if https
            else http.client.HTTPConnection(host, port, timeout=timeout))
    entry = None
    try:
        # connect by hand so the deadline watches the socket before the TLS handshake too
        conn.sock = socket.create_connection((resolve(host) if resolve else host, port), timeout)
        entry = _WATCHDOG.watch(deadline, conn.sock)
        if https:
            conn.sock = _WATCHDOG.swap(entry, _ssl_context().wrap_socket(conn.sock, server_hostname=host))
        conn.request("GET", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""), headers=headers)
        return conn, conn.getresponse(), entry
    except BaseException as err:
        if entry is not None:
            _WATCHDOG.cancel(entry)
        conn.close()
        if entry is not None and entry[3]:  # the watchdog cut a dribbling handshake or header block
            raise TimeoutError("deadline") from None
        raise err


def _once(url: str, limits: Limits, deadline: float, resolve) -> tuple[bytes | None, str | None]:
    """One request: (body, None), or (None, redirect target). Raises FetchError or socket/http errors."""
    conn, resp, entry = _open(url, limits, deadline, resolve)
    try:
        if resp.status in REDIRECTS:
            location = resp.getheader("Location")
            if not location:
                raise FetchError("download_http_error", f"HTTP {resp.status} redirect without a Location")
            return None, urljoin(url, location.strip())
        if resp.status >= 300:
            raise _http_error(resp.status)
        if limits.disallowed_header_directives and _disallowed(resp.headers, limits):
            raise FetchError("download_disallowed", "Use of image disallowed by X-Robots-Tag directive")
        ctype = (resp.getheader("Content-Type") or "").split(";")[0].strip().lower()
        if limits.refuse_content_types and ctype.startswith(limits.refuse_content_types):
            raise FetchError("download_content_type", f"Content-Type {ctype!r} refused")
        if resp.length is not None and resp.length > limits.max_bytes:
            raise FetchError("download_too_large", f"Content-Length {resp.length} > max_bytes {limits.max_bytes}")
        body = _Body(resp.getheader("Content-Encoding") or "", limits.max_bytes)
        while True:
            chunk = resp.read1(CHUNK)
            if not chunk:
                break
            body.feed(chunk)
        if entry[3]:
            raise TimeoutError("deadline")
        if resp.length:  # http.client's read1 stops at EOF without complaining about a short body
            raise FetchError("download_truncated", f"body {resp.length} bytes shorter than its Content-Length")
        return body.finish(), None
    except BaseException as err:
        if entry[3] and not isinstance(err, FetchError):
            raise TimeoutError("deadline") from None  # what the watchdog's shutdown looks like to a reader
        if entry[3] and isinstance(err, FetchError) and err.reason in ("download_truncated", "download_bad_encoding"):
            raise TimeoutError("deadline") from None
        raise
    finally:
        _WATCHDOG.cancel(entry)
        conn.close()


def _get(url: str, limits: Limits, resolve=None) -> bytes:
    """One attempt: the request and its redirects, all within timeout_s."""
    deadline = time.monotonic() + limits.timeout_s
    current = url
    for _hop in range(limits.max_redirects + 1):
        data, target = _once(current, limits, deadline, resolve)
        if target is None:
            return data
        scheme = urlsplit(target).scheme.lower()
        if scheme not in ("http", "https"):
            raise FetchError("download_redirect_refused", f"redirect to a {scheme or 'relative'}: URL refused ({target[:200]})")
        try:
            current = urls.normalize(target)
        except urls.InvalidURL as err:
            raise FetchError("download_redirect_refused", f"redirect to an invalid URL: {err}") from None
    raise FetchError("download_too_many_redirects", f"more than max_redirects {limits.max_redirects} redirects")


def _error_of(err: BaseException, limits: Limits) -> FetchError:
    """A FetchError with the reason code for an exception raised by the socket, ssl or http.client."""
    name = f"{type(err).__name__}: {err}"
    if isinstance(err, FetchError):
        return err
    if isinstance(err, TimeoutError):  # socket.timeout is TimeoutError
        if str(err) == "deadline" or not limits.read_timeout_s:
            return FetchError("download_timeout", f"no complete answer within timeout_s {limits.timeout_s}")
        return FetchError("download_timeout", f"nothing received for read_timeout_s {limits.read_timeout_s}")
    if isinstance(err, socket.gaierror):
        return FetchError("download_dns_error", name)
    if isinstance(err, ConnectionRefusedError):
        return FetchError("download_connection_refused", name)
    if isinstance(err, http.client.IncompleteRead):
        return FetchError("download_truncated", f"body shorter than announced ({name})")
    if isinstance(err, (ConnectionError, ssl.SSLError, http.client.RemoteDisconnected)):
        return FetchError("download_connection_error", name)
    if isinstance(err, http.client.HTTPException):  # bad status line, header line too long, > 100 headers
        return FetchError("download_bad_response", name)
    if isinstance(err, OSError):
        return FetchError("download_connection_error", name)
    if isinstance(err, ValueError):
        return FetchError("download_invalid_url", name)
    return FetchError("download_error", name)


def _data_url(url: str, limits: Limits) -> bytes:
    """The bytes of a data: URL (urllib's own RFC 2397 parser; offline), bounded by max_bytes."""
    import urllib.request

    if len(url) > 3 * limits.max_bytes + 1024:  # base64 or %XX text is at most 3x its bytes: a cheap first cut
        raise FetchError("download_too_large", f"data: URL of {len(url)} characters > max_bytes {limits.max_bytes}")
    try:
        with urllib.request.DataHandler().data_open(urllib.request.Request(url.strip())) as resp:
            data = resp.read()
    except Exception as err:  # noqa: BLE001 - malformed data: URL (bad base64, no comma): one row
        raise FetchError("download_invalid_url", f"malformed data: URL ({type(err).__name__}: {err})") from None
    if len(data) > limits.max_bytes:
        raise FetchError("download_too_large", f"data: URL of {len(data)} bytes > max_bytes {limits.max_bytes}")
    return data


def fetch(url: str, limits: Limits, resolve: Callable[[str], str] | None = None) -> bytes:
    """The decoded body at `url`, or FetchError. Retries transient failures `limits.retries` times.

    `resolve` maps a host name to the address to connect to (tests: an IDNA name to 127.0.0.1); the
    request still names the host (Host header, TLS server name).
    """
    if limits.allow_data_urls and isinstance(url, str) and url.lstrip()[:5].lower() == "data:":
        return _data_url(url, limits)
    try:
        target = urls.normalize(url)
    except urls.InvalidURL as err:
        raise FetchError("download_invalid_url", str(err)) from None
    for attempt in range(limits.retries + 1):
        try:
            return _get(target, limits, resolve)
        except Exception as exc:  # noqa: BLE001 - every failure is one row with a reason
            err = _error_of(exc, limits)
        if err.reason not in RETRYABLE or attempt == limits.retries:
            raise err
        time.sleep(min(2.0, 0.1 * 2 ** attempt))
    raise AssertionError("unreachable")


def fetch_many(items: Iterable[tuple[object, str]], limits: Limits, concurrency: int = 32,
               buffer: int | None = None, resolve=None) -> Iterator[tuple[object, bytes | FetchError]]:
    """Yield (key, body bytes or FetchError) for each (key, url), in completion order.

    At most `concurrency` requests run at once (a thread each, like img2dataset) and at most `buffer`
    (default 2 x concurrency) fetched results wait for the consumer, so memory stays near
    buffer x max_bytes however slow the consumer is.
    """
    gate = threading.Semaphore(buffer or 2 * concurrency)

    def gated():
        for item in items:
            gate.acquire()
            yield item

    def one(item):
        key, url = item
        try:
            return key, fetch(url, limits, resolve)
        except FetchError as err:
            return key, err

    with ThreadPool(concurrency) as pool:
        for result in pool.imap_unordered(one, gated()):
            try:
                yield result
            finally:
                gate.release()
