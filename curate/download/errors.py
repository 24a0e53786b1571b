"""Public reason codes of the fetchers (curate.download.fetch sets them directly), and `classify` for
error messages of other downloaders (urllib's, as img2dataset reports them)."""
from __future__ import annotations

import re

HTTP_CODES = (400, 401, 403, 404, 408, 410, 429, 500, 502, 503, 504)

REASONS: dict[str, str] = {
    **{f"download_http_{c}": f"the server answered HTTP {c}" for c in HTTP_CODES},
    "download_http_error": "the server answered another HTTP error status",
    "download_timeout": "no complete answer within timeout_s (total per attempt: DNS, connect, headers, "
                        "redirects and body; after retries)",
    "download_too_large": "the body is larger than max_bytes (Content-Length, or counted while streaming, "
                          "after gzip/deflate decoding)",
    "download_truncated": "the connection closed before Content-Length bytes (or before the end of the "
                          "compressed stream) arrived",
    "download_redirect_refused": "a redirect to a URL that is not http(s) (file:, ftp:, data:, ...) or not a URL",
    "download_too_many_redirects": "more than max_redirects redirects (a loop, or a long chain)",
    "download_bad_encoding": "a Content-Encoding other than gzip/deflate/identity, or a corrupt compressed body",
    "download_bad_response": "the answer is not valid HTTP (malformed status line, oversized headers)",
    "download_content_type": "the Content-Type says the body is not what this stage fetches",
    "download_connection_refused": "nothing listens at that host and port",
    "download_connection_error": "the connection broke (reset, closed early, TLS failure)",
    "download_dns_error": "the host name does not resolve",
    "download_invalid_url": "the URL is empty, malformed or not http(s)",
    "download_disallowed": "an X-Robots-Tag header forbids this use (noai, noimageai, ...)",
    "download_error": "any other download failure; see `error`",
}

_HTTP = re.compile(r"HTTP Error (\d{3})")


def classify(message: str) -> str:
    """Return the reason code for a downloader error message."""
    m = _HTTP.search(message)
    if m:
        code = int(m.group(1))
        return f"download_http_{code}" if code in HTTP_CODES else "download_http_error"
    low = message.lower()
    if "timed out" in low or "timeout" in low:
        return "download_timeout"
    if "x-robots-tag" in low:
        return "download_disallowed"
    if "connection refused" in low:
        return "download_connection_refused"
    if "name or service not known" in low or "nodename nor servname" in low or "getaddrinfo" in low:
        return "download_dns_error"
    if "unknown url type" in low or "no host given" in low or "invalid url" in low or "url can't contain" in low:
        return "download_invalid_url"
    if any(s in low for s in ("connection reset", "remote end closed", "broken pipe", "ssl", "incompleteread")):
        return "download_connection_error"
    return "download_error"
