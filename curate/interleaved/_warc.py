"""Read HTML responses out of a WARC file (warcio) into rows of (url, html) for the document pipeline."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa


def is_warc(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith((".warc", ".warc.gz"))


def read_warc(path: Path, max_html_bytes: int = 20 << 20) -> pa.Table:
    """Every `response` record with an HTML content type, as a table (url, html, warc_date).

    Pages above `max_html_bytes` keep their first bytes only (the parse stage refuses them by its own,
    lower cap with a reason, instead of us reading gigabytes into memory here).
    """
    from warcio.archiveiterator import ArchiveIterator
    from warcio.exceptions import ArchiveLoadFailed

    urls, pages, dates = [], [], []
    records = 0
    try:
        with open(path, "rb") as fh:
            for record in ArchiveIterator(fh):
                if not str(record.format).startswith("warc"):  # warcio falls back to ARC on any garbage
                    continue
                records += 1
                if record.rec_type != "response" or record.http_headers is None:
                    continue
                ctype = (record.http_headers.get_header("Content-Type") or "").lower()
                if "html" not in ctype:
                    continue
                body = record.content_stream().read(max_html_bytes + 1)
                urls.append(record.rec_headers.get_header("WARC-Target-URI"))
                pages.append(body.decode("utf-8", errors="replace"))
                dates.append(record.rec_headers.get_header("WARC-Date"))
    except ArchiveLoadFailed as err:
        raise ValueError(f"{path} is not a readable WARC file: {str(err).splitlines()[0]}") from None
    if records == 0 and path.stat().st_size > 0:  
        raise ValueError(f"{path} is not a readable WARC file: no WARC records in {path.stat().st_size} bytes")
    return pa.table({"url": pa.array(urls, pa.string()), "html": pa.array(pages, pa.string()),
                     "warc_date": pa.array(dates, pa.string())})
