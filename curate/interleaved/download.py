"""`doc_download`: fetch every image of every document with the image-text download machinery.

The same fields, bounded fetcher (curate.download.fetch: total deadline, max_bytes, http(s)-only redirects),
Resizer, truncation check and reason codes as the `download` stage; the difference is the unit: one row holds many images, so each
image's outcome (status, reason, sha256, sizes) is written into its `doc_images` record and its bytes
into `doc_image_bytes`. A document whose referenced images all failed is kept (`on_all_failed: keep`,
a text-only document) or dropped as `doc_all_images_failed`. At most `max_images_per_doc` images of one
document are fetched (later ones: `image_over_cap`), whatever the parse stage let through. Image URLs with
credentials are fetched with them and stored redacted (curate.download.urls.redact).
"""
from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from curate import schema
from curate.download import urls as urlfmt
from curate.download.image import ImageFetch
from curate.interleaved import _doc
from curate.stage import register


@register
class DocDownload(ImageFetch):
    """Download and resize the images of each document; per-image status inside the row."""

    name: ClassVar[str] = "doc_download"
    reads: ClassVar[tuple[str, ...]] = ("doc_images",)
    writes: ClassVar[dict[str, pa.DataType]] = {"doc_images": _doc.IMAGES_T, "doc_image_bytes": _doc.BYTES_T}
    reasons: ClassVar[dict[str, str]] = {
        "doc_all_images_failed": "every image the document references failed or was refused (on_all_failed: drop)",
    }

    on_all_failed: Literal["keep", "drop"] = "keep"  # a document with no image left: keep it text-only, or drop it
    max_data_url_bytes: int = Field(1_000_000, ge=0)  # longer data: URLs (chars) fail; 0 refuses all
    max_images_per_doc: int = Field(10_000, ge=0, le=1_000_000)  # later images: image_over_cap, not fetched

    @model_validator(mode="before")
    @classmethod
    def _no_verify_hash(cls, data):
        """`verify_hash`/`hash_col` are not settings here: interleaved inputs (OBELICS/MINT records, HTML,
        WARC) carry no per-image hash to check against. Earlier versions accepted them and did nothing, and
        saved them at their defaults in every run's recipe.yaml; those values are dropped so such a run still
        resumes, any other value is refused."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for key, unset in (("verify_hash", None), ("hash_col", "input_sha256")):
            if key in data and data.pop(key) != unset:
                raise ValueError(f"doc_download has no {key} setting: documents carry no per-image hash to "
                                 "check (download.verify_hash checks image-text rows)")
        return data

    def process(self, table: pa.Table) -> pa.Table:
        n = table.num_rows
        active = np.flatnonzero(schema.active_mask(table).to_numpy(zero_copy_only=False))
        docs = table.column("doc_images").to_pylist()
        payload: list = [None] * n
        items = []
        for i in active:
            recs = docs[i] or []
            payload[i] = [None] * len(recs)
            fetched = 0
            for j, rec in enumerate(recs):
                if rec["status"] != schema.OK:
                    continue
                if fetched >= self.max_images_per_doc:
                    rec.update(status=schema.DROPPED, reason="image_over_cap",
                               error=f"more than max_images_per_doc={self.max_images_per_doc} images in the document")
                    continue
                fetched += 1
                url = rec["url"]
                if url.lower().startswith("data:") and len(url) > self.max_data_url_bytes:
                    rec.update(status=schema.FAILED, reason="data_url_too_large",
                               error=f"{len(url)} characters > max_data_url_bytes {self.max_data_url_bytes}")
                    continue
                items.append(((int(i), j), url))
        for (i, j), result in self.fetch_all(items, self.limits(allow_data_urls=True)):
            rec = docs[i][j]
            if isinstance(result, tuple):
                rec.update(status=schema.FAILED, reason=result[0], error=result[1])
                continue
            payload[i][j] = result.pop("bytes")
            rec.update(result)
        for i in active:
            for rec in docs[i] or ():
                if urlfmt.has_credentials(rec["url"]):
                    rec["url"] = urlfmt.redact(rec["url"])
        drop = [False] * n
        if self.on_all_failed == "drop":
            for i in active:
                recs = docs[i] or []
                drop[i] = bool(recs) and not any(r["status"] == schema.OK for r in recs)
        table = schema.put_column(table, "doc_images", docs, _doc.IMAGES_T)
        table = schema.put_column(table, "doc_image_bytes", payload, _doc.BYTES_T)
        if any(drop):
            table = schema.mark(table, pa.array(drop), schema.DROPPED, self.name, "doc_all_images_failed")
        return table
