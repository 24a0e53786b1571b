"""`parse_documents`: turn each input document into ordered segments (text / image reference) + image records.

Input layouts (one row per document):
- `obelics`: aligned lists `texts` and `images` (OBELICS, MINT-1T): at each position exactly one of the two
  is set, a paragraph or an image URL.
- `html`: the page itself in an `html` column (a WARC file read by the input reader gives url + html).
- `url`: only the page URL: the page is fetched with curate.download.fetch (the bounded fetcher of the
  image download: total deadline, at most max_html_bytes, same reason codes) and parsed.
`auto` picks the first layout whose columns exist. Image URLs are resolved against the page URL; URLs that
are neither http(s) nor data: are refused (never fetched); references past `max_images` are kept in the
row but marked `image_over_cap` and not fetched.

Bounds on what one document may hold, so one hostile page cannot blow up a part: a document whose text and
image references exceed `max_doc_bytes`, or that references more than `max_images_per_doc` images, fails as
`doc_too_large` / `doc_too_many_images` (nothing of it is kept in the row).
"""
from __future__ import annotations

from typing import ClassVar, Literal
from urllib.parse import urljoin

import pyarrow as pa
from pydantic import Field

from curate import schema
from curate.download import errors
from curate.download.urls import has_credentials, redact
from curate.interleaved import _doc
from curate.stage import Annotations, Stage, register

FETCHABLE = ("http://", "https://", "data:")


def classify_url(url: str | None) -> str | None:
    """None when the URL may be fetched, else the per-image reason code."""
    if not url:
        return "download_invalid_url"
    low = url.strip().lower()
    if low.startswith(("http://", "https://")):
        return None
    if low.startswith("data:"):
        return None
    return "image_url_refused"


@register
class ParseDocuments(Stage):
    """Documents (OBELICS/MINT record, HTML page, or page URL) -> `segments`, `doc_images`, document `text`."""

    name: ClassVar[str] = "parse_documents"
    reads: ClassVar[tuple[str, ...]] = ("url",)
    updates: ClassVar[tuple[str, ...]] = ("text", "url")  # the joined text; the url with credentials redacted
    writes: ClassVar[dict[str, pa.DataType]] = {"segments": _doc.SEGMENTS_T, "doc_images": _doc.IMAGES_T,
                                                "title": pa.string()}
    reasons: ClassVar[dict[str, str]] = {
        **errors.REASONS,
        "html_too_large": "the page is larger than max_html_bytes: not parsed",
        "doc_bad_record": "texts/images lists missing, of different lengths, or with both/neither set at a position",
        "doc_empty": "the document has neither text nor images",
        "doc_too_large": "the document's text plus image references is larger than max_doc_bytes",
        "doc_too_many_images": "the document references more than max_images_per_doc images",
    }

    layout: Literal["auto", "obelics", "html", "url"] = "auto"  # auto: obelics, html or url, by the columns present
    texts_col: str = "texts"  # obelics: list column of paragraphs (null at image positions)
    images_col: str = "images"  # obelics: list column of image URLs (null at text positions)
    html_col: str = "html"  # html layout: the column holding each page's HTML
    max_images: int = Field(100, ge=0, le=100_000)  # images past this are kept but marked image_over_cap
    max_html_bytes: int = Field(5_000_000, ge=1)  # larger pages fail as html_too_large (url layout: fetch cap too)
    max_doc_bytes: int = Field(10_000_000, ge=1, description="text + image URL bytes of one parsed document")
    max_images_per_doc: int = Field(10_000, ge=0, le=1_000_000, description="image references; more fails the doc")
    timeout_s: float = Field(10.0, gt=0)  # url layout: total seconds per page fetch attempt
    retries: int = Field(0, ge=0, le=10)  # url layout: extra tries on transient fetch errors
    threads: int = Field(16, ge=1, le=1024)  # url layout: pages fetched at once per worker

    def _layout(self, table: pa.Table) -> str:
        if self.layout != "auto":
            needed = {"obelics": (self.texts_col, self.images_col), "html": (self.html_col,), "url": ()}[self.layout]
            missing = [c for c in needed if c not in table.column_names]
            if missing:
                raise ValueError(f"parse_documents layout {self.layout}: input has no column {missing[0]!r}")
            return self.layout
        if self.texts_col in table.column_names and self.images_col in table.column_names:
            return "obelics"
        if self.html_col in table.column_names:
            return "html"
        return "url"

    def url_free_columns(self) -> tuple[tuple[str, ...], ...]:
        """Column sets whose presence makes a URL column unneeded (the reader's input check): the layouts
        that read the document from the row itself. A URL then only resolves relative image references."""
        sets = {"obelics": (self.texts_col, self.images_col), "html": (self.html_col,)}
        if self.layout == "auto":
            return tuple(sets.values())
        return (sets[self.layout],) if self.layout in sets else ()

    def _fetch_pages(self, urls: dict[int, str]) -> dict[int, tuple[bytes | None, str | None, str | None]]:
        from curate.download.fetch import FetchError, Limits, fetch_many

        limits = Limits(timeout_s=self.timeout_s, retries=self.retries, max_bytes=self.max_html_bytes)
        out, todo = {}, {}
        for i, url in urls.items():
            if classify_url(url) is not None or url.strip().lower().startswith("data:"):
                out[i] = (None, "download_invalid_url", redact(f"not an http(s) page URL: {url!r}")[:500])
            else:
                todo[i] = url
        for i, result in fetch_many(todo.items(), limits, concurrency=min(self.threads, max(1, len(todo)))):
            if isinstance(result, FetchError):
                code = "html_too_large" if result.reason == "download_too_large" else result.reason
                out[i] = (None, code, str(result))
            else:
                out[i] = (result, None, None)
        return out

    def _over_bounds(self, segs: list[dict]) -> tuple[str, str] | None:
        """(reason, message) when a parsed document is beyond max_images_per_doc or max_doc_bytes."""
        n_images = sum(1 for seg in segs if seg["type"] != "text")
        if n_images > self.max_images_per_doc:
            return "doc_too_many_images", f"{n_images} image references > max_images_per_doc {self.max_images_per_doc}"
        size = sum(len(seg.get("text") or seg.get("src") or "") for seg in segs)  # characters: a lower bound of bytes
        if size > self.max_doc_bytes:
            return "doc_too_large", f"{size}+ bytes of text and image URLs > max_doc_bytes {self.max_doc_bytes}"
        return None

    def _from_html(self, html, base_url) -> tuple[str | None, list[dict]]:
        from curate.interleaved._html import extract

        return extract(html, base_url)

    def annotate(self, active: pa.Table) -> Annotations:
        n = active.num_rows
        layout = self._layout(active)
        urls = active.column("url").to_pylist()
        texts: list = active.column("text").to_pylist()
        segments_out: list = [None] * n
        images_out: list = [None] * n
        titles: list = [None] * n
        ann = Annotations(columns={"segments": segments_out, "doc_images": images_out, "title": titles, "text": texts})

        raw: dict[int, tuple[str | None, list[dict]]] = {}
        if layout == "obelics":
            tcol = active.column(self.texts_col).to_pylist()
            icol = active.column(self.images_col).to_pylist()
            for i, (ts, ims) in enumerate(zip(tcol, icol)):
                if ts is None or ims is None or len(ts) != len(ims) or any((t is None) == (m is None) for t, m in zip(ts, ims)):
                    ann.fail(i, "doc_bad_record",
                             "texts/images must be aligned lists with one of them set per position")
                    continue
                raw[i] = (None, [{"type": "text", "text": t} if t is not None
                                 else {"type": "image", "src": m, "alt": None} for t, m in zip(ts, ims)])
        else:
            if layout == "html":
                pages = dict(enumerate(active.column(self.html_col).to_pylist()))
            else:
                pages = {}
                for i, (data, code, msg) in self._fetch_pages(dict(enumerate(urls))).items():
                    if data is None:
                        ann.fail(i, code, msg)
                    else:
                        pages[i] = data
            for i, page in pages.items():
                if page is None:
                    ann.fail(i, "doc_bad_record", "no html")
                    continue
                size = len(page) if isinstance(page, bytes) else len(page.encode("utf-8", "surrogatepass"))
                if size > self.max_html_bytes:
                    ann.fail(i, "html_too_large", f"{size} bytes > max_html_bytes {self.max_html_bytes}")
                    continue
                raw[i] = self._from_html(page, urls[i])

        for i, (title, segs) in raw.items():
            bound = self._over_bounds(segs)
            if bound:
                ann.fail(i, *bound)
                continue
            segments, images = [], []
            for seg in segs:
                if seg["type"] == "text":
                    if seg["text"] and seg["text"].strip():
                        segments.append({"type": "text", "text": seg["text"], "image": None})
                    continue
                src = seg["src"].strip() if seg["src"] else seg["src"]
                if src and urls[i] and not src.lower().startswith(("data:", "javascript:")):
                    src = urljoin(urls[i], src)  # relative references (obelics records may hold them too)
                rec = _doc.image_record(src, seg.get("alt"), len(segments))
                code = classify_url(src)
                if code is not None:
                    rec.update(status=schema.FAILED, reason=code, error=f"refused URL {str(src)[:200]!r}")
                elif len(images) >= self.max_images:
                    rec.update(status=schema.DROPPED, reason="image_over_cap",
                               error=f"more than max_images={self.max_images} images in the document")
                segments.append({"type": "image", "text": None, "image": len(images)})
                images.append(rec)
            if not segments:
                ann.drop(i, "doc_empty")
            segments_out[i], images_out[i], titles[i] = segments, images, title
            texts[i] = _doc.text_of(segments)
        if any(has_credentials(u) for u in urls if isinstance(u, str)):  # pages fetched with them; never stored
            ann.columns["url"] = [redact(u) if isinstance(u, str) else u for u in urls]
        return ann
