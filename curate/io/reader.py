"""Read URL lists (Parquet, CSV, JSONL; a file or a folder of them) and split them into input parts.

Splitting streams record batches, so the list never has to fit in memory at once. Each part becomes a
small Parquet file of the core input columns that a worker reads by itself.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as pads

from curate import schema
from curate.io import atomic

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "csv", ".jsonl": "json",
           ".ndjson": "json", ".json": "json"}


class InputError(Exception):
    """Bad input: the message is one line meant for the user."""


@dataclass
class InputSpec:
    path: str
    format: str = "auto"
    url_col: str = "url"
    text_col: str | None = "caption"  # None: no text column (documents get their text from a parse stage)
    id_col: str | None = None
    source: str | None = None
    modality: str = "image-text"


def detect_format(path: Path) -> str:
    from curate.interleaved._warc import is_warc

    if path.is_file() and is_warc(path):
        return "warc"
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith((".", "_")))
    fmts = {FORMATS.get(p.suffix.lower()) for p in files} - {None}
    if not files:
        raise InputError(f"input folder {path} holds no files")
    if len(fmts) != 1:
        raise InputError(f"cannot tell the format of {path} from its file names; set input.format to parquet, csv or jsonl")
    return fmts.pop()


def open_dataset(spec: InputSpec) -> pads.Dataset:
    path = Path(spec.path)
    if not path.exists():
        raise InputError(f"input not found: {path}")
    if not os.access(path, os.R_OK):
        raise InputError(f"input not readable: {path}")
    fmt = detect_format(path) if spec.format == "auto" else {"jsonl": "json"}.get(spec.format, spec.format)
    try:
        if fmt == "warc":  # a crawl archive: its HTML responses as (url, html) rows, for document recipes
            from curate.interleaved._warc import read_warc

            return pads.dataset(read_warc(path))
        if fmt == "csv":
            delim = "\t" if path.suffix.lower() == ".tsv" else ","
            file_format = pads.CsvFileFormat(parse_options=pacsv.ParseOptions(delimiter=delim, newlines_in_values=True))
            return pads.dataset(str(path), format=file_format)
        return pads.dataset(str(path), format=fmt)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, ValueError) as err:
        raise InputError(f"cannot read {path} as {fmt}: {str(err).splitlines()[0]}") from None


def check_columns(spec: InputSpec, ds: pads.Dataset) -> None:
    names = ds.schema.names
    for role, col in (("url_col", spec.url_col), ("text_col", spec.text_col), ("id_col", spec.id_col)):
        if col is not None and col not in names:
            raise InputError(f"input has no column {col!r} (input.{role}); its columns are: {', '.join(names)}")


def fingerprint(path: Path) -> dict:
    """Identity of the input used to refuse resuming a run over a changed list."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {"path": str(path.resolve()), "files": len(files), "bytes": sum(p.stat().st_size for p in files),
            "mtime_ns": max(p.stat().st_mtime_ns for p in files)}


def _uid(source: str, url: str | None, text: str | None, occurrence: int) -> str:
    h = hashlib.sha1(f"{source}\0{url}\0{text}\0{occurrence}".encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:20]


RESERVED = set(schema.CORE_COLUMNS) | schema.PAYLOAD_COLUMNS


def split_parts(spec: InputSpec, rows_per_part: int, part_path, first_part: int = 0) -> tuple[list[int], dict]:
    """Stream the input into parts of `rows_per_part` rows; returns (rows per part, extra column types).

    Extra input columns (not url/text/id) are carried along; ones that clash with curate's columns are
    renamed input_<name>.
    """
    ds = open_dataset(spec)
    check_columns(spec, ds)
    source = spec.source or Path(spec.path).stem
    used = {spec.url_col, spec.text_col, spec.id_col}
    extras = {n: ("input_" + n if n in RESERVED else n) for n in ds.schema.names if n not in used}
    seen: dict[bytes, int] = {}
    ids: set = set()
    sizes: list[int] = []
    buf: list[pa.Table] = []
    buffered = 0
    row = 0
    extra_types: dict[str, pa.DataType] = {}

    def flush(tables):
        t = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
        k = first_part + len(sizes)
        t = t.append_column("part", pa.array([k] * t.num_rows, pa.int32()))
        atomic.write_parquet(t, part_path(k))
        sizes.append(t.num_rows)

    try:
        batches = ds.to_batches(batch_size=min(rows_per_part, 65536))
        for batch in batches:
            if batch.num_rows == 0:
                continue
            urls = batch.column(spec.url_col).cast(pa.string()).to_pylist()
            texts = (batch.column(spec.text_col).cast(pa.string()).to_pylist() if spec.text_col
                     else [None] * batch.num_rows)
            if spec.id_col:
                uids = [None if v is None else str(v) for v in batch.column(spec.id_col).to_pylist()]
                for u in uids:
                    if u is None or u in ids:
                        raise InputError(f"input id column {spec.id_col!r} has a {'missing' if u is None else 'repeated'} value {u!r}")
                    ids.add(u)
            else:
                uids = []
                for u, t in zip(urls, texts):
                    k = hashlib.blake2b(f"{u}\0{t}".encode("utf-8", "surrogatepass"), digest_size=12).digest()
                    occ = seen.get(k, 0)
                    seen[k] = occ + 1
                    uids.append(_uid(source, u, t, occ))
            n = batch.num_rows
            cols = {
                "uid": pa.array(uids, pa.string()),
                "source": pa.array([source] * n, pa.string()),
                "modality": pa.array([spec.modality] * n, pa.string()),
                "row": pa.array(range(row, row + n), pa.int64()),
                "url": pa.array(urls, pa.string()),
                "text": pa.array(texts, pa.string()),
            }
            for orig, new in extras.items():
                cols[new] = batch.column(orig)
                extra_types[new] = batch.schema.field(orig).type
            row += n
            table = pa.table(cols)
            while table.num_rows:
                take = min(rows_per_part - buffered, table.num_rows)
                buf.append(table.slice(0, take))
                buffered += take
                table = table.slice(take)
                if buffered == rows_per_part:
                    flush(buf)
                    buf, buffered = [], 0
        if buf:
            flush(buf)
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read {spec.path}: {str(err).splitlines()[0]}") from None
    if row == 0:
        raise InputError(f"input {spec.path} has no rows")
    return sizes, extra_types
