"""Fetch one video (http/https URL or local path) into memory, bounded in bytes and time.

HTTP goes through curate.download.fetch, the one bounded fetcher (total deadline, byte bound counted while
streaming, http(s)-only redirects): here its total deadline is `max_seconds` (a video transfer is long) and
`timeout_s` is the stall limit (no byte for that long fails the transfer). Its reason codes for limits map
to the video ones, which are decisions (dropped), not failures: video_too_large, video_content_type.
"""
from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from curate.download import fetch as fetching
from curate.download import urls as urlfmt

# Content types that are certainly not a video; anything else (video/*, octet-stream, none) gets probed.
NOT_VIDEO = ("text/", "image/", "application/json", "application/xml", "application/xhtml", "application/javascript",
             "application/pdf")
RETRYABLE = fetching.RETRYABLE
LIMIT_REASONS = {"download_too_large": "video_too_large", "download_content_type": "video_content_type"}


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


def _http(url: str, timeout_s: float, max_bytes: int, max_seconds: float, retries: int = 0,
          want_video: bool = True) -> bytes:
    limits = fetching.Limits(timeout_s=max_seconds, read_timeout_s=timeout_s, max_bytes=max_bytes, retries=retries,
                             refuse_content_types=NOT_VIDEO if want_video else ())
    try:
        return fetching.fetch(url, limits)
    except fetching.FetchError as err:
        if err.reason in LIMIT_REASONS:
            raise FetchError(LIMIT_REASONS[err.reason], str(err), dropped=True) from None
        raise FetchError(err.reason, str(err)) from None


def fetch(url: str | None, *, timeout_s: float, max_bytes: int, max_seconds: float, retries: int = 0) -> bytes:
    """The bytes at `url` (at most max_bytes), or FetchError with a reason code. A null or blank URL says
    so: read as a local path it was the current folder ("no such file: .")."""
    if url is None or not url.strip():
        raise FetchError("download_invalid_url", "the row has no URL (null)" if url is None else f"empty URL: {url!r}")
    if is_local(url):
        return _local(url, max_bytes)
    try:
        urlfmt.normalize(url)
    except urlfmt.InvalidURL as err:
        raise FetchError("download_invalid_url", urlfmt.redact(f"{err}: {url!r}")[:500]) from None
    return _http(url, timeout_s, max_bytes, max_seconds, retries)


def read_text(ref: str, timeout_s: float, max_bytes: int = 4 << 20) -> str:
    """A small text sidecar (WebVTT) by URL or local path."""
    if is_local(ref):
        return _local(ref, max_bytes).decode("utf-8-sig", "replace")
    return _http(ref, timeout_s, max_bytes, timeout_s * 4, want_video=False).decode("utf-8-sig", "replace")
