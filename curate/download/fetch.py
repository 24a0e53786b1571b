"""One bounded HTTP fetcher for images, document pages and videos (aiohttp on one event-loop thread).

Why not img2dataset's `download_image` any more: its timeout is urllib's per-socket-read timeout, so a
server that sends one byte a second (body or headers) never times out, and `r.read()` takes whatever the
server sends, so a 10 GB body or a gzip bomb takes the worker's memory. Here every request has:
- one wall-clock deadline (`timeout_s`) for everything: DNS, connect, headers, redirects and body;
- a byte bound (`max_bytes`) checked against Content-Length first, then counted while streaming, on the
  decoded bytes (gzip/deflate are decoded here, `max_bytes + 1` at most per step, so a bomb stops at
  `max_bytes`);
- redirects followed by hand: at most `max_redirects`, and only to http(s) (file:, ftp:, data: ... are
  refused with a reason);
- a short body (fewer bytes than Content-Length) as `download_truncated`, never as a shorter image.
What img2dataset does we keep: its User-Agent string (with the optional token) and its X-Robots-Tag opt-out
rule. Retries are for transient failures only (timeouts, resets, 408/429/5xx):
re-asking a 404 is wasted time. Each attempt has its own `timeout_s`.

Why aiohttp: its total timeout is a real deadline (a cancelled coroutine, not a socket option), it caps
header sizes, and one event loop holds hundreds of slow connections without a thread each. The callers are
synchronous, so `fetch_many` runs the loop on a helper thread and hands results back through a queue, with
at most `buffer` fetched-but-unconsumed results in memory.
"""
from __future__ import annotations

import asyncio
import queue
import threading
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

from curate.download import errors, urls

USER_AGENT = "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:72.0) Gecko/20100101 Firefox/72.0"  # img2dataset's
REDIRECTS = (301, 302, 303, 307, 308)
RETRYABLE = {"download_timeout", "download_connection_error", "download_http_408", "download_http_429",
             "download_http_500", "download_http_502", "download_http_503", "download_http_504"}


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
        if self.z == "deflate":  # RFC 9110 says zlib format; some servers send raw deflate
            zlib_header = len(chunk) >= 2 and chunk[0] & 0x0F == 8 and (chunk[0] << 8 | chunk[1]) % 31 == 0
            self.z = zlib.decompressobj(zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS)
        try:
            data = chunk
            while data:
                self._add(self.z.decompress(data, self.max_bytes - len(self.buf) + 1))
                data = self.z.unconsumed_tail
        except zlib.error as err:
            raise FetchError("download_bad_encoding", f"corrupt compressed body: {err}") from None

    def finish(self) -> bytes:
        if self.z is not None and not isinstance(self.z, str):
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
    """img2dataset's X-Robots-Tag rule (downloader.is_disallowed), restated: importing img2dataset here would
    block the event loop for seconds. A header value is `[token:] directive, directive`; it applies when it
    names no user-agent token or ours, and disallows when one directive is in the configured set."""
    for value in headers.getall("X-Robots-Tag", ()):
        token, sep, rest = value.partition(":")
        directives = {d.strip().lower() for d in (rest if sep else value).split(",")}
        ua_token = token.lower() if sep else None
        if (ua_token is None or ua_token == limits.user_agent_token) and directives & limits.disallowed_header_directives:
            return True
    return False


async def _get(session, url: str, limits: Limits) -> bytes:
    import yarl

    headers = {"User-Agent": limits.user_agent(), "Accept-Encoding": "gzip, deflate", **dict(limits.extra_headers)}
    current = url
    for _hop in range(limits.max_redirects + 1):
        async with session.get(yarl.URL(current, encoded=True), headers=headers, allow_redirects=False) as resp:
            if resp.status in REDIRECTS:
                location = resp.headers.get("Location")
                if not location:
                    raise FetchError("download_http_error", f"HTTP {resp.status} redirect without a Location")
                target = urljoin(current, location.strip())
                scheme = urlsplit(target).scheme.lower()
                if scheme not in ("http", "https"):
                    raise FetchError("download_redirect_refused",
                                     f"redirect to a {scheme or 'relative'}: URL refused ({target[:200]})")
                try:
                    current = urls.normalize(target)
                except urls.InvalidURL as err:
                    raise FetchError("download_redirect_refused", f"redirect to an invalid URL: {err}") from None
                continue
            if resp.status >= 300:
                raise _http_error(resp.status)
            if limits.disallowed_header_directives and _disallowed(resp.headers, limits):
                raise FetchError("download_disallowed", "Use of image disallowed by X-Robots-Tag directive")
            ctype = (resp.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if limits.refuse_content_types and ctype.startswith(limits.refuse_content_types):
                raise FetchError("download_content_type", f"Content-Type {ctype!r} refused")
            length = resp.content_length
            if length is not None and length > limits.max_bytes:
                raise FetchError("download_too_large", f"Content-Length {length} > max_bytes {limits.max_bytes}")
            body = _Body(resp.headers.get("Content-Encoding", ""), limits.max_bytes)
            async for chunk in resp.content.iter_any():
                body.feed(chunk)
            return body.finish()
    raise FetchError("download_too_many_redirects", f"more than max_redirects {limits.max_redirects} redirects")


def _error_of(err: BaseException, limits: Limits) -> FetchError:
    """A FetchError with the reason code for an exception raised by aiohttp or the event loop."""
    import aiohttp

    name = f"{type(err).__name__}: {err}"
    if isinstance(err, FetchError):
        return err
    if isinstance(err, (asyncio.TimeoutError, TimeoutError)):
        return FetchError("download_timeout", f"no complete answer within timeout_s {limits.timeout_s}")
    if isinstance(err, aiohttp.ClientConnectorDNSError):
        return FetchError("download_dns_error", name)
    if isinstance(err, aiohttp.ClientConnectorError):
        if isinstance(err.os_error, ConnectionRefusedError):
            return FetchError("download_connection_refused", name)
        return FetchError("download_connection_error", name)
    if isinstance(err, aiohttp.ClientPayloadError):
        if "ContentLengthError" in name or "not completed" in name:
            return FetchError("download_truncated", f"body shorter than its Content-Length ({name})")
        return FetchError("download_connection_error", name)
    if isinstance(err, aiohttp.ClientResponseError):  # unparsable status line, oversized headers
        return FetchError("download_bad_response", name)
    if isinstance(err, (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, ConnectionError)):
        return FetchError("download_connection_error", name)
    if isinstance(err, (aiohttp.InvalidURL, ValueError)):
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


async def fetch_async(session, url: str, limits: Limits) -> bytes:
    """The decoded body at `url`, or FetchError. Retries transient failures `limits.retries` times."""
    if limits.allow_data_urls and isinstance(url, str) and url.lstrip()[:5].lower() == "data:":
        return _data_url(url, limits)
    try:
        target = urls.normalize(url)
    except urls.InvalidURL as err:
        raise FetchError("download_invalid_url", str(err)) from None
    for attempt in range(limits.retries + 1):
        try:
            # wait_for cancels the whole attempt (DNS, connect, headers, redirects, body) at the deadline
            return await asyncio.wait_for(_get(session, target, limits), limits.timeout_s)
        except Exception as exc:  # noqa: BLE001 - every failure is one row with a reason
            err = _error_of(exc, limits)
        if err.reason not in RETRYABLE or attempt == limits.retries:
            raise err
        await asyncio.sleep(min(2.0, 0.1 * 2 ** attempt))
    raise AssertionError("unreachable")


def session(limits: Limits, concurrency: int, resolver=None):
    """An aiohttp session for `concurrency` parallel requests. `resolver` (an aiohttp AbstractResolver) is for
    tests that map names to 127.0.0.1; trust_env keeps urllib's behaviour of honouring *_proxy variables."""
    import aiohttp

    connector = aiohttp.TCPConnector(limit=concurrency, ttl_dns_cache=300, resolver=resolver)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=limits.read_timeout_s, sock_read=limits.read_timeout_s)
    return aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False, trust_env=True,
                                 cookie_jar=aiohttp.DummyCookieJar())


_DONE = object()


def fetch_many(items: Iterable[tuple[object, str]], limits: Limits, concurrency: int = 32,
               buffer: int | None = None, resolver=None) -> Iterator[tuple[object, bytes | FetchError]]:
    """Yield (key, body bytes or FetchError) for each (key, url), in completion order.

    At most `concurrency` requests are in flight and at most `buffer` (default 2 x concurrency) results
    wait for the consumer, so memory stays near buffer x max_bytes however slow the consumer is.
    """
    results: queue.Queue = queue.Queue()
    gate = threading.Semaphore(buffer or 2 * concurrency)
    stop = threading.Event()

    async def produce():
        inflight = asyncio.Semaphore(concurrency)
        tasks: set = set()

        async def one(key, url, sess):
            try:
                results.put((key, await fetch_async(sess, url, limits)))
            except FetchError as err:
                results.put((key, err))
            finally:
                inflight.release()

        async with session(limits, concurrency, resolver) as sess:
            for key, url in items:
                if not gate.acquire(blocking=False):
                    await asyncio.to_thread(gate.acquire)
                if stop.is_set():
                    break
                await inflight.acquire()
                task = asyncio.create_task(one(key, url, sess))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*tasks)

    def run():
        try:
            asyncio.run(produce())
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, which raises it
            results.put(err)
        results.put(_DONE)

    thread = threading.Thread(target=run, name="curate-fetch", daemon=True)
    thread.start()
    try:
        while True:
            item = results.get()
            if item is _DONE:
                break
            if isinstance(item, BaseException):
                raise item
            try:
                yield item
            finally:
                gate.release()
    finally:
        stop.set()
        for _ in range(buffer or 2 * concurrency):
            gate.release()
        thread.join()


def fetch(url: str, limits: Limits, resolver=None) -> bytes:
    """The body at one URL, or FetchError (a synchronous wrapper over fetch_many)."""
    for _key, result in fetch_many([(None, url)], limits, concurrency=1, resolver=resolver):
        if isinstance(result, FetchError):
            raise result
        return result
    raise AssertionError("unreachable")
