"""URLs as the web writes them, and without their credentials wherever they are shown.

URL lists scraped from the web hold what people typed and what pages contain: surrounding whitespace,
non-ASCII paths (`/bilder/grün.jpg`), internationalised host names (`grün.example`). Browsers send those
as `/bilder/gr%C3%BCn.jpg` and `xn--grn-hoa.example`; `normalize` does the same (WHATWG URL rules: only
non-ASCII, controls, space and `"#<>`{}` (path) / `"#<>'` (query) are percent-encoded, so an existing
`%XX` is never encoded twice; hosts go through IDNA 2008 with UTS #46 mapping, like browsers).

`redact` is for everything a person reads (error messages, the `url` column of metadata, the shard json
and the report): the userinfo (`user:pass@`) becomes `***@` and the values of query parameters that are
credentials by name (token, signature, X-Amz-Credential, ...) become `***`. The fetch itself uses the
unredacted URL; only what is written or printed is redacted.
"""
from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

import idna

_PATH_ENCODE = frozenset(' "#<>?`{}')
_QUERY_ENCODE = frozenset(" \"#<>'")
_FORBIDDEN_HOST = frozenset(' "#%/<>?@[\\]^|')  # WHATWG forbidden host code points (plus '"')
_USERINFO_ENCODE = frozenset(' "#<>?`{}/:;=@[\\]^|')

SECRET_PARAMS = ("password", "passwd", "pwd", "token", "access_token", "auth", "api_key", "apikey", "secret",
                 "client_secret", "sig", "signature", "x-amz-signature", "x-amz-credential",
                 "x-amz-security-token", "x-goog-signature", "x-goog-credential")
# linear-time patterns: no nested quantifiers
_USERINFO = re.compile(r"(//)[^/?#\s]*@")
_SECRET = re.compile(r"([?&;](?:" + "|".join(re.escape(p) for p in SECRET_PARAMS) + r")=)[^&;#\s]*", re.I)


class InvalidURL(ValueError):
    """The text cannot be a fetchable http(s) URL; the message says why."""


def _encode(text: str, unsafe: frozenset) -> str:
    if text.isascii() and not any(c in unsafe or ord(c) < 0x21 or ord(c) == 0x7F for c in text):
        return text
    out = []
    for c in text:
        if c in unsafe or ord(c) < 0x21 or ord(c) >= 0x7F:
            out.append("".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass")))
        else:
            out.append(c)
    return "".join(out)


def encode_host(host: str) -> str:
    """ASCII form of a host name: IDNA 2008 (UTS #46 mapped, as browsers do) for non-ASCII labels."""
    if host.startswith("["):  # IPv6 literal
        return host
    if host.isascii():
        if any(c in _FORBIDDEN_HOST or ord(c) < 0x21 or ord(c) == 0x7F for c in host):
            raise InvalidURL(f"host {host!r} holds characters a host name cannot have")
        return host.lower()
    try:
        return idna.encode(host, uts46=True).decode("ascii")
    except idna.IDNAError as err:
        raise InvalidURL(f"host {host!r} is not a valid internationalised domain name ({err})") from None


def normalize(url: str) -> str:
    """The URL a browser would request for `url`: stripped, IDNA host, percent-encoded, no fragment.

    Raises InvalidURL for anything that is not an absolute http(s) URL with a host.
    """
    if not isinstance(url, str):
        raise InvalidURL(f"not a string: {type(url).__name__}")
    text = url.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as err:
        raise InvalidURL(f"malformed URL ({err})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise InvalidURL(f"not an http(s) URL (scheme {scheme or 'none'!r})")
    netloc = parts.netloc
    hostport = netloc.rpartition("@")[2]
    host = hostport[: hostport.rindex("]") + 1] if hostport.startswith("[") else hostport.partition(":")[0]
    if not host:
        raise InvalidURL("no host in URL")
    userinfo = netloc.rpartition("@")[0] if "@" in netloc else None
    new = encode_host(host) + (f":{port}" if port is not None else "")
    if userinfo is not None:
        user, sep, password = userinfo.partition(":")
        new = _encode(user, _USERINFO_ENCODE) + sep + _encode(password, _USERINFO_ENCODE) + "@" + new
    path = _encode(parts.path, _PATH_ENCODE) or "/"
    return urlunsplit((scheme, new, path, _encode(parts.query, _QUERY_ENCODE), ""))


def has_credentials(url: str | None) -> bool:
    return bool(url) and bool(_USERINFO.search(url) or _SECRET.search(url))


def redact(text: str | None) -> str | None:
    """`text` (a URL or a message holding URLs) with userinfo and credential query values replaced by ***."""
    if not text:
        return text
    return _SECRET.sub(r"\1***", _USERINFO.sub(r"\1***@", text))
