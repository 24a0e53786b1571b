"""Fetch one video (http/https URL or local path) into memory, streamed in chunks and bounded.

Why not img2dataset's fetcher: it reads a whole response before looking at it, so an endless stream or a
multi-gigabyte file would exhaust memory. Here the body is read 1 MiB at a time and abandoned as soon as
it passes `max_bytes` (or the Content-Length says it will) or the transfer passes `max_seconds`.
"""
from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlsplit

from curate.download import errors

CHUNK = 1 << 20
# Content types that are certainly not a video; anything else (video/*, octet-stream, none) gets probed.
NOT_VIDEO = ("text/", "image/", "application/json", "application/xml", "application/xhtml", "application/javascript",
             "application/pdf")
RETRYABLE = {"download_timeout", "download_connection_error", "download_http_429", "download_http_500",
             "download_http_502", "download_http_503", "download_http_504", "download_http_408"}


class FetchError(Exception):
    """A per-URL failure with its public reason code; `dropped` for limits (a decision), else failed."""

    def __init__(self, reason: str, message: str, dropped: bool = False):
        super().__init__(message)
        self.reason, self.dropped = reason, dropped


def is_local(url: str) -> bool:
    return url.startswith("file://") or "://" not in url


def _local(url: str, max_bytes: int) -> bytes:
    path = Path(unquote(urlsplit(url).path) if url.startswith("file://") else url)
    if not path.is_file():
        raise FetchError("download_invalid_url", f"no such file: {path}")
    size = path.stat().st_size
    if size > max_bytes:
        raise FetchError("video_too_large", f"{size} bytes > max_bytes {max_bytes}", dropped=True)
    with open(path, "rb") as f:
        return f.read(max_bytes + 1)


def _http(url: str, timeout_s: float, max_bytes: int, max_seconds: float, user_agent: str,
          want_video: bool = True) -> bytes:
    req = urllib.request.Request(url, headers={"User-Agent": user_agent})
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            ctype = (resp.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if want_video and ctype.startswith(NOT_VIDEO):
                raise FetchError("video_content_type", f"Content-Type {ctype!r} is not a video", dropped=True)
            length = resp.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise FetchError("video_too_large", f"Content-Length {length} > max_bytes {max_bytes}", dropped=True)
            buf = bytearray()
            while True:
                chunk = resp.read(CHUNK)
                if not chunk:
                    break
                buf += chunk
                if len(buf) > max_bytes:
                    raise FetchError("video_too_large", f"more than max_bytes {max_bytes} (stream cut off)", dropped=True)
                if time.monotonic() - t0 > max_seconds:
                    raise FetchError("download_timeout", f"transfer longer than max_seconds {max_seconds}")
            return bytes(buf)
    except FetchError:
        raise
    except (urllib.error.URLError, OSError, ValueError) as err:
        message = f"HTTP Error {err.code}: {err.reason}" if isinstance(err, urllib.error.HTTPError) else str(err)
        raise FetchError(errors.classify(message), message[:500]) from None
    except Exception as err:  # noqa: BLE001 - http.client's IncompleteRead and friends: a row, not a crash
        raise FetchError(errors.classify(f"{type(err).__name__}: {err}"), f"{type(err).__name__}: {err}"[:500]) from None


def fetch(url: str, *, timeout_s: float, max_bytes: int, max_seconds: float, retries: int = 0,
          user_agent: str = "curate/0.1 (+video)") -> bytes:
    """The bytes at `url` (at most max_bytes), or FetchError with a reason code."""
    if is_local(url):
        return _local(url, max_bytes)
    if not url.lower().startswith(("http://", "https://")):
        raise FetchError("download_invalid_url", f"not an http(s) URL or local path: {url!r}"[:500])
    for attempt in range(retries + 1):
        try:
            return _http(url, timeout_s, max_bytes, max_seconds, user_agent)
        except FetchError as err:
            if err.reason not in RETRYABLE or attempt == retries:
                raise
            time.sleep(min(2.0, 0.1 * 2 ** attempt))
    raise AssertionError("unreachable")


def read_text(ref: str, timeout_s: float, max_bytes: int = 4 << 20) -> str:
    """A small text sidecar (WebVTT) by URL or local path."""
    if is_local(ref):
        return _local(ref, max_bytes).decode("utf-8-sig", "replace")
    return _http(ref, timeout_s, max_bytes, timeout_s * 4, "curate/0.1 (+video)", want_video=False).decode(
        "utf-8-sig", "replace")
