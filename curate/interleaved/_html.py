"""Ordered text blocks and <img> references from an HTML page, with selectolax (Lexbor's HTML5 parser).

Why selectolax rather than trafilatura: we need every paragraph *and* every image in reading order. Lexbor
parses malformed HTML the way browsers do (unclosed tags, stray markup) and is fast; trafilatura's
main-content heuristics drop short paragraphs and images outside its chosen content block, which would
lose exactly the image-text adjacency interleaved corpora are built from. Boilerplate blocks (script,
style, nav, header, footer, aside, form, ...) are skipped by tag; the walk is iterative, so a page of
thousands of unclosed <div>s cannot overflow the stack.
"""
from __future__ import annotations

from urllib.parse import urljoin

SKIP = frozenset({"script", "style", "noscript", "template", "nav", "header", "footer", "aside", "form",
                  "iframe", "svg", "canvas", "select", "button", "head", "object", "embed", "-comment"})
BLOCK = frozenset({"p", "div", "section", "article", "main", "h1", "h2", "h3", "h4", "h5", "h6", "li", "ul",
                   "ol", "dl", "dt", "dd", "blockquote", "pre", "table", "tr", "td", "th", "figure",
                   "figcaption", "br", "hr", "body", "center", "address", "details", "summary"})
_FLUSH = object()


def extract(html: str | bytes, base_url: str | None = None) -> tuple[str | None, list[dict]]:
    """(title, segments) of a page: segments are {"type": "text", "text"} paragraphs and
    {"type": "image", "src", "alt"} references (src resolved against `base_url`), in document order."""
    from selectolax.lexbor import LexborHTMLParser

    if isinstance(html, bytes):
        html = html.decode("utf-8", errors="replace")
    tree = LexborHTMLParser(html)
    title_node = tree.css_first("title")
    title = " ".join(title_node.text().split()) if title_node is not None else None
    base = tree.css_first("base[href]")
    if base is not None and base_url:
        base_url = urljoin(base_url, base.attributes.get("href") or "")
    root = tree.body or tree.root
    segments: list[dict] = []
    buf: list[str] = []

    def flush():
        text = " ".join("".join(buf).split())
        buf.clear()
        if text:
            segments.append({"type": "text", "text": text})

    stack: list = [root] if root is not None else []
    while stack:
        node = stack.pop()
        if node is _FLUSH:
            flush()
            continue
        tag = node.tag
        if tag == "-text":
            buf.append(node.text(deep=False) or "")
            continue
        if tag in SKIP:
            continue
        if tag == "img":
            attrs = node.attributes
            src = (attrs.get("src") or attrs.get("data-src") or "").strip()
            flush()
            if src:
                segments.append({"type": "image", "src": urljoin(base_url, src) if base_url else src,
                                 "alt": (attrs.get("alt") or "").strip() or None})
            continue
        children = list(node.iter(include_text=True))
        if tag in BLOCK:
            flush()
            stack.append(_FLUSH)
        stack.extend(reversed(children))
    flush()
    return title, segments
