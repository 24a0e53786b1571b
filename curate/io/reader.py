"""Read the input (URL lists in Parquet, CSV, JSONL; WebDataset tars; a folder of images) and split it into
input parts.

Splitting streams record batches, so the list never has to fit in memory at once. Each part becomes a
small Parquet file of the core input columns that a worker reads by itself. Inputs that carry their images
(webdataset, images, Parquet with image bytes) do not need a `download` stage: their rows hold where the
bytes are (or the bytes themselves), and the `load_image` stage reads them in the workers.

uids: `source` (part of every uid) is the recipe's `input.source`, or else a fingerprint of the input's
content (its first bytes), so renaming or moving the input keeps every uid.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.json as pajson

from curate import schema
from curate.io import atomic, inputfs, storage, utf8, wds_input
from curate.io.jsonlines import JsonLines, NoGoodRecords
from curate.io.uids import Uids

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "csv", ".jsonl": "json",
           ".ndjson": "json", ".json": "json"}
# formats whose rows carry their images (no download stage: load_image reads them)
IMAGE_FORMATS = ("webdataset", "images")
# CSV/JSON rows may be this large (a 5 MB caption is legal); Arrow's default block of 1 MB rejects any row
# that straddles two blocks, which failed a whole input over one long caption
BLOCK_BYTES = 64 << 20


class InputError(Exception):
    """Bad input: the message is one line meant for the user."""


@dataclass
class InputSpec:
    path: str
    format: str = "auto"
    url_col: str | None = "url"  # None: no URL column
    text_col: str | None = "caption"  # None: no text column (documents get their text from a parse stage)
    id_col: str | None = None
    source: str | None = None
    modality: str = "image-text"
    image_col: str | None = None  # Parquet column of image bytes (binary or {bytes, path}); auto when None
    # column sets that carry a whole document (parse_documents' OBELICS texts+images, html): an input with
    # all columns of one set needs no URL column
    url_free_columns: tuple[tuple[str, ...], ...] = ()


def detect_format(path: Path) -> str:
    from curate.interleaved._warc import is_warc

    if inputfs.is_pattern(str(path)) or str(path).lower().endswith(inputfs.TARS):
        return "webdataset"
    if not storage.is_remote(path) and path.is_file() and is_warc(path):
        return "warc"
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith((".", "_")))
    if not files:
        raise InputError(f"input folder {path} holds no files")
    suffixes = {p.suffix.lower().lstrip(".") for p in files}
    if "tar" in suffixes or any(p.name.lower().endswith(inputfs.GZIP_TARS) for p in files):
        return "webdataset"
    if suffixes & set(wds_input.IMAGE_EXTS):
        return "images"
    fmts = {FORMATS.get(p.suffix.lower()) for p in files} - {None}
    if len(fmts) != 1:
        raise InputError(f"cannot tell the format of {path} from its file names; set input.format to parquet, csv or jsonl")
    return fmts.pop()


def resolve_format(spec: InputSpec) -> str:
    """The input's format: as the recipe says, or detected from its file names."""
    path = storage.as_path(spec.path)  # a UPath for s3://... (Path would collapse the //)
    if spec.format == "auto" and not inputfs.is_pattern(spec.path):
        if not inputfs.exists(str(spec.path)):  # (an http URL: a HEAD, not fsspec's GET of the whole file)
            raise InputError(f"input not found: {path}")
        if not storage.is_remote(path) and not os.access(path, os.R_OK):
            raise InputError(f"input not readable: {path}")
    return detect_format(path) if spec.format == "auto" else {"jsonl": "json"}.get(spec.format, spec.format)


def open_dataset(spec: InputSpec) -> pads.Dataset:
    path = storage.as_path(spec.path)
    if not inputfs.exists(str(spec.path)):  # (an http URL: a HEAD, not fsspec's GET of the whole file)
        raise InputError(f"input not found: {path}")
    if not storage.is_remote(path) and not os.access(path, os.R_OK):
        raise InputError(f"input not readable: {path}")
    fmt = resolve_format(spec)
    if fmt in IMAGE_FORMATS:
        raise InputError(f"{path} is {fmt} input, not a table")
    inner, fs = storage.arrow(path)
    try:
        if fmt == "warc":  # a crawl archive: its HTML responses as (url, html) rows, for document recipes
            from curate.interleaved._warc import read_warc

            return pads.dataset(read_warc(path))
        if fmt == "csv":
            delim = "\t" if path.suffix.lower() == ".tsv" else ","
            # check_utf8 off: a cell that is not UTF-8 fails its row in the split (curate/io/utf8.py), where
            # Arrow refused the whole file over it
            file_format = pads.CsvFileFormat(parse_options=pacsv.ParseOptions(delimiter=delim, newlines_in_values=True),
                                              read_options=pacsv.ReadOptions(block_size=BLOCK_BYTES),
                                              convert_options=pacsv.ConvertOptions(check_utf8=False))
            return pads.dataset(inner, format=file_format, filesystem=fs)
        if fmt == "json":
            return _json_dataset(path, inner, fs)
        return pads.dataset(inner, format=fmt, filesystem=fs)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, ValueError) as err:
        raise InputError(f"cannot read {path} as {fmt}: {str(err).splitlines()[0]}") from None


# input path -> (its fingerprint, what reads it): Arrow's dataset when its typed read takes the whole
# file, else the line-by-line reader; checked once per input version (check_input and split_parts both ask)
_JSON_READERS: dict[str, tuple[dict, object]] = {}


class _Counted:
    """A dataset whose row count is known (counting a JSON file parses all of it): count_rows() answers
    from it, everything else is the dataset's."""

    def __init__(self, ds: pads.Dataset, rows: int):
        self._ds, self._rows = ds, rows

    def count_rows(self, **kwargs) -> int:
        return self._ds.count_rows(**kwargs) if kwargs else self._rows

    def __getattr__(self, name):
        return getattr(self._ds, name)


def _json_dataset(path, inner, fs):
    """The JSON input's reader: Arrow's typed dataset (the fast path) when it reads every line; when it
    refuses the file (one record with a number among strings, one line that is not JSON) or reads a string
    that is not UTF-8 (Arrow's JSON reader does not check), a JsonLines that reads the other lines and makes
    each bad line a failed row (input_bad_record; input_bad_text for text that is not UTF-8), so one bad
    record no longer refuses the whole input, nor passes bytes on that fail a later stage. A file of which
    no line is a JSON object stays a one-line error."""
    key, stamp = str(path), fingerprint(path)
    cached = _JSON_READERS.get(key)
    if cached is not None and cached[0] == stamp and stamp:
        return cached[1]
    try:
        ds = pads.dataset(inner, format=pads.JsonFileFormat(read_options=pajson.ReadOptions(block_size=BLOCK_BYTES)),
                          filesystem=fs)
        # parses every line: a bad one raises here, not in the middle of split_parts; the count is kept
        found = _Counted(ds, _valid_rows(ds))
    except pa.ArrowInvalid as err:
        files = [f for f in _input_files(str(path)) if not Path(f).name.startswith((".", "_"))]
        found = JsonLines(files, BLOCK_BYTES, why=str(err).splitlines()[0])
        try:
            found.schema  # noqa: B018 (reads the sample: raises when no line is a JSON object)
        except NoGoodRecords as none:
            raise InputError(f"cannot read {path} as json: {none}{_utf8_hint(path, err)}") from None
    _JSON_READERS[key] = (stamp, found)
    return found


def _valid_rows(ds: pads.Dataset) -> int:
    """The rows of a JSON dataset, each batch's strings checked: ArrowInvalid when one is not UTF-8 (Arrow's
    JSON reader takes any bytes in a string; one C++ pass, about what count_rows costs)."""
    rows = 0
    for batch in ds.to_batches():
        batch.validate(full=True)
        rows += batch.num_rows
    return rows


def _utf8_hint(path, err: BaseException) -> str:
    """For Arrow's bare "Invalid UTF8 payload": where the first non-UTF-8 line is (local files, first 256 MB)
    and how to fix it; "" for any other error."""
    if "utf8" not in str(err).lower().replace("-", ""):
        return ""
    where = ""
    try:
        with open(path, "rb") as f:
            seen = 0
            for n, line in enumerate(f, 1):
                seen += len(line)
                if seen > 256 << 20:
                    break
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as bad:
                    where = f" at line {n} (byte {bad.start} of the line: {line[bad.start:bad.start + 1]!r})"
                    break
    except OSError:  # an object-store path or a folder: no line number, the advice stands
        pass
    return f"{where}; the file is not UTF-8 text: re-encode it (e.g. iconv -f latin1 -t utf-8 IN > OUT)"


def check_columns(spec: InputSpec, ds: pads.Dataset) -> None:
    names = ds.schema.names
    try:
        image = wds_input.image_column(ds.schema, spec.image_col)
    except ValueError as err:
        raise InputError(str(err)) from None
    for role, col in (("url_col", spec.url_col), ("text_col", spec.text_col), ("id_col", spec.id_col),
                      ("image_col", spec.image_col)):
        if col is None or col in names or (role == "url_col" and (
                image is not None or any(all(c in names for c in cols) for cols in spec.url_free_columns))):
            continue  # rows that carry their image (or their whole document) need no URL
        hint = ""
        binary = [f.name for f in ds.schema if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type)]
        if role == "url_col" and binary:  # image bytes under a name image_column does not guess (photo, ...)
            hint = (f"; if {binary[0]!r} holds image bytes, set input.image_col: {binary[0]} and start the recipe "
                    "with load_image instead of download")
        raise InputError(f"input has no column {col!r} (input.{role}); its columns are: {', '.join(names)}{hint}")


def url_problem(spec: InputSpec) -> str | None:
    """Why a table input gives `download` nothing to fetch (no url column, or no row with a URL), None when
    some row has a URL. Read up to the first URL: a whole column only when every value is null."""
    if spec.url_col is None:
        return "has no URL column (input.url_col is null)"
    ds = open_dataset(spec)
    if spec.url_col not in ds.schema.names:
        return f"has no column {spec.url_col!r} (input.url_col)"
    try:
        for batch in ds.to_batches(columns=[spec.url_col]):
            if batch.num_rows and batch.column(0).null_count < batch.num_rows:
                return None
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as err:
        raise InputError(f"cannot read {spec.path}: {str(err).splitlines()[0]}") from None
    return f"has no URL in its column {spec.url_col!r} (input.url_col: every value is null)"


# what a single file given as WebDataset input is when it is not a tar: (first bytes, name for the user, format)
_NOT_TAR_MAGIC = ((b"PAR1", "a Parquet file", "parquet"), (b"\x1f\x8b", "gzip-compressed", None),
                  (b"WARC/", "a WARC crawl archive", "warc"))


def _not_a_tar(path: str) -> str | None:
    """Why a single file given to `input.format: webdataset` is no tar (by its first bytes, then its name),
    None when it may be one. Before this check a Parquet file was indexed as a tar: all its rows became one
    input_tar_error row, and the run went on."""
    try:
        with inputfs.open_read(path) as f:
            head = f.read(512)
    except OSError:
        return None  # indexing reports it (a failed row, or a refused URL)
    if len(head) >= 262 and head[257:262] == b"ustar":
        return None
    found = next(((what, fmt) for magic, what, fmt in _NOT_TAR_MAGIC if head.startswith(magic)), None)
    if found is None:
        suffix = "." + path.rsplit(".", 1)[-1].lower() if "." in path.rsplit("/", 1)[-1] else ""
        if suffix not in FORMATS:
            return None  # an old (pre-POSIX) tar has no magic: indexing decides
        found = (f"a {FORMATS[suffix]} file by its name", {"json": "jsonl"}.get(FORMATS[suffix], FORMATS[suffix]))
    what, fmt = found
    fix = (f"set input.format: {fmt} (--set input.format={fmt}), with load_image for image bytes or download "
           "for URLs" if fmt else "decompress it (WebDataset input reads plain .tar files)")
    return f"{path} is {what}, not a WebDataset tar (input.format is webdataset): {fix}"


def _index_batches(spec: InputSpec, fmt: str):
    """Index tables of an input that carries its images (see curate/io/wds_input.py)."""
    try:
        if fmt == "webdataset":
            yield from wds_input.tar_batches(spec.path)
        else:
            yield from wds_input.image_batches(spec.path, text_col=spec.text_col)
    except (OSError, ValueError, pa.ArrowInvalid) as err:
        raise InputError(f"cannot read {fmt} input {spec.path}: {str(err).splitlines()[0]}") from None
    except Exception as err:
        # a store refusing the listing (an http(s) brace range answered 403: aiohttp's ClientResponseError)
        # is the user's to fix, not a bug in curate (exit 1)
        if not (storage.is_remote(spec.path) and storage.is_remote_failure(err)):
            raise
        http = storage.scheme(spec.path) in storage.HTTP_SCHEMES
        raise InputError(f"cannot read {fmt} input {spec.path}: {storage.access_error(err, http=http)}") from None


def check_input(spec: InputSpec) -> bool:
    """Check the input can be read and has what the recipe needs; True when its rows carry their images."""
    fmt = resolve_format(spec)
    if fmt == "webdataset" and not inputfs.is_pattern(spec.path) and not inputfs.isdir(spec.path):
        why = _not_a_tar(spec.path)
        if why:
            raise InputError(why)
    if fmt in IMAGE_FORMATS:
        if next(_index_batches(spec, fmt), None) is None:
            raise InputError(f"input {spec.path} has no samples")
        return True
    ds = open_dataset(spec)
    check_columns(spec, ds)
    if ds.count_rows() == 0:
        raise InputError(f"input {spec.path} has no rows")
    return wds_input.image_column(ds.schema, spec.image_col) is not None


def _input_files(path: str) -> list[str]:
    if inputfs.is_pattern(path) or not Path(path).exists():
        try:
            return inputfs.expand(path, ("",))
        except (OSError, ValueError):
            return []
    p = Path(path)
    return [str(p)] if p.is_file() else sorted(str(x) for x in p.rglob("*") if x.is_file())


def fingerprint(path: str | Path) -> dict:
    """Identity of the input used to refuse resuming a run over a changed list ({} when it is gone): the
    files' count, total size and newest mtime; for remote files, instead of mtimes, `version`, a digest of
    each file's storage.remote_version (an ETag, an http server's validators, or the sha256 of the bytes of
    a file whose server gives none), so a same-size rewrite of an input URL is refused too."""
    files = _input_files(str(path))
    if not files:
        return {}
    stats = [Path(p).stat() for p in files] if all(Path(p).exists() for p in files) else []
    out = {"path": str(Path(path).resolve()) if Path(path).exists() else str(path), "files": len(files),
           "bytes": sum(s.st_size for s in stats), "mtime_ns": max(s.st_mtime_ns for s in stats) if stats else None}
    if not stats:
        versions = [(p, *storage.remote_version(p)) if storage.is_remote(p) else (p, inputfs.size(p), "")
                    for p in files]
        out["bytes"] = sum(size for _, size, _ in versions)
        out["version"] = hashlib.sha256("\n".join(f"{p} {v}" for p, _, v in versions).encode()).hexdigest()[:32]
    return out


def content_source(path: str) -> str:
    """The default `source`: a hash of the input's first 64 KiB (of its first file), not its name, so a
    renamed or moved input keeps its uids."""
    files = _input_files(path)
    if not files:
        raise InputError(f"input not found: {path}")
    with inputfs.open_read(files[0], raw=True) as f:  # the file's own bytes (a .tar.gz as stored)
        head = f.read(64 * 1024)
    return "in-" + hashlib.blake2b(head, digest_size=6).hexdigest()


RESERVED = set(schema.CORE_COLUMNS) | schema.PAYLOAD_COLUMNS


def reserved_columns() -> set[str]:
    """Names an input column may not keep: curate's own columns and every column a stage writes."""
    from curate.stage import load_builtin_steps

    out = set(RESERVED)
    for step in load_builtin_steps().values():
        out |= set(step.writes)
    return out


def _file_batches(ds, batch_size: int):
    """(batch, file, rows of that file before it) of a dataset, file by file where it has files (Arrow's
    file datasets), so a bad row can be named by its file and record; (batch, None, None) otherwise."""
    if isinstance(ds, JsonLines) or not hasattr(ds, "get_fragments"):
        for batch in ds.to_batches(batch_size=batch_size):
            yield batch, None, None
        return
    for frag in ds.get_fragments():
        done = 0
        # the dataset's schema, not the file's own: files whose types differ (int32 / int64, a CSV column
        # guessed per file) or that lack a column read as the dataset does, as ds.to_batches did
        for batch in frag.to_batches(schema=ds.schema, batch_size=batch_size):
            yield batch, getattr(frag, "path", None), done
            done += batch.num_rows


def _checked(batches, path: str):
    """The input's batches with each row whose text is not UTF-8 failed alone (curate/io/utf8.py), named by
    file and record (table files), tar/file and key (image inputs), else by its record in the input."""
    seen = 0
    for item in batches:
        batch, file, before = item if isinstance(item, tuple) else (item, None, None)
        names = batch.schema.names
        if file is not None:
            where = (lambda i, f=file, b=before: f"{f}: record {b + i + 1}")
        elif "input_key" in names and "input_file" in names:
            keys, files = batch.column("input_key"), batch.column("input_file")
            where = (lambda i, k=keys, f=files: f"{f[i].as_py() or path} sample {k[i].as_py()!r}")
        else:
            where = (lambda i, b=seen: f"{path}: record {b + i + 1}")
        seen += batch.num_rows
        yield utf8.check_batch(batch, where)


def split_parts(spec: InputSpec, rows_per_part: int, part_path, first_part: int = 0) -> tuple[list[int], dict]:
    """Stream the input into parts of `rows_per_part` rows; returns (rows per part, extra column types).

    Extra input columns (not url/text/id) are carried along; ones that clash with curate's columns (core
    columns and any column a stage writes: sha256, width, status, ...) are renamed input_<name>.
    """
    fmt = resolve_format(spec)
    image_col = None
    if fmt in IMAGE_FORMATS:
        batches = _index_batches(spec, fmt)  # with the recipe's text_col: an image folder's mapping column
        # the index's own columns: the caption (whichever column or file it came from) is `caption`
        spec = InputSpec(**{**spec.__dict__, "url_col": "url", "text_col": "caption", "id_col": spec.id_col})
    else:
        ds = open_dataset(spec)
        check_columns(spec, ds)
        image_col = wds_input.image_column(ds.schema, spec.image_col)
        batches = _file_batches(ds, min(rows_per_part, 65536))
    batches = _checked(batches, spec.path)  # text that is not UTF-8 fails its row here, not a later stage
    first = next(batches, None)
    if first is None:
        raise InputError(f"input {spec.path} has no rows")
    names = first.schema.names
    source = spec.source or content_source(spec.path)
    internal = {"_reason", "_error"}
    used = {spec.url_col, spec.text_col, spec.id_col, image_col} | internal
    reserved = reserved_columns()
    extras = {n: ("input_" + n if n in reserved else n) for n in names if n not in used}
    keyed = "input_key" in names  # samples with their own key (tar member, file path): part of the uid
    default_uids = Uids(source)
    ids: set = set()
    sizes: list[int] = []
    buf: list[pa.Table] = []
    buffered = 0
    row = 0
    extra_types: dict[str, pa.DataType] = {}

    def flush(tables):
        # (promote: a batch with a row failed at input has status/reason columns that the others lack)
        t = pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]
        k = first_part + len(sizes)
        t = t.append_column("part", pa.array([k] * t.num_rows, pa.int32()))
        atomic.write_parquet(t, part_path(k))
        sizes.append(t.num_rows)

    def all_batches():
        yield first
        yield from batches

    try:
        for batch in all_batches():
            if batch.num_rows == 0:
                continue
            n = batch.num_rows
            urls = (batch.column(spec.url_col).cast(pa.string()) if spec.url_col in names
                    else pa.nulls(n, pa.string()))
            texts = (batch.column(spec.text_col).cast(pa.string()) if spec.text_col
                     else pa.nulls(n, pa.string()))
            if spec.id_col:
                uids = [None if v is None else str(v) for v in batch.column(spec.id_col).to_pylist()]
                for u in uids:
                    if u is None or u in ids:
                        raise InputError(f"input id column {spec.id_col!r} has a {'missing' if u is None else 'repeated'} value {u!r}")
                    ids.add(u)
            else:
                uids = default_uids.of_batch(urls, texts, batch.column("input_key") if keyed else None)
            cols = {
                "uid": uids if isinstance(uids, (pa.Array, pa.ChunkedArray)) else pa.array(uids, pa.string()),
                "source": pa.repeat(pa.scalar(source, pa.string()), n),
                "modality": pa.repeat(pa.scalar(spec.modality, pa.string()), n),
                "row": pa.array(np.arange(row, row + n, dtype=np.int64)),
                "url": urls,
                "text": texts,
            }
            if "_reason" in batch.schema.names:  # rows that failed while read or indexed: failed from the start
                reason = batch.column("_reason")
                failed = pc.is_valid(reason)
                cols["status"] = pc.if_else(failed, schema.FAILED, pa.scalar(None, pa.string()))
                cols["stage"] = pc.if_else(failed, "input", pa.scalar(None, pa.string()))
                cols["reason"] = reason
                cols["error"] = batch.column("_error")
            for orig, new in extras.items():
                cols[new] = batch.column(orig)
                extra_types[new] = batch.schema.field(orig).type
            if image_col is not None:
                cols["input_image_bytes"] = wds_input.embedded_image(pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch, image_col)
                extra_types["input_image_bytes"] = pa.binary()
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
        raise InputError(f"cannot read {spec.path}: {str(err).splitlines()[0]}{_utf8_hint(spec.path, err)}") from None
    if row == 0:
        raise InputError(f"input {spec.path} has no rows")
    return sizes, extra_types
