"""Text in input rows must be UTF-8: a row whose text is not fails alone at `input` as `input_bad_text`.

Arrow's JSON reader and Parquet files can hold string values that are not UTF-8 (a latin-1 `caf\\xe9`);
such a value used to pass into the input parts and raise UnicodeDecodeError wherever a later stage, the
metadata writer or the report read it back. The policy, the same for every input kind: nothing is decoded
with replacement characters (a kept sample's text is exactly the input's); a row holding a value that is
not UTF-8 keeps its place, fails at `input` with reason `input_bad_text`, and its `error` says where
(file:line, file and record, tar member or caption file), which column and which byte. Its values that
are not UTF-8 are null, so every later stage, the metadata and the report only ever see valid strings.

`check_batch` is the net the split puts every batch through (curate/io/reader.py); the readers that see
lines or files (curate/io/jsonlines.py, curate/io/wds_input.py) say it sooner, with a finer `where`.
"""
from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from curate import schema

REASON = "input_bad_text"
schema.declare_reasons({
    REASON: "a text value of the input row (caption, URL, JSON line, caption file, tar text member) is not "
            "UTF-8; the row fails alone, its `error` says where and which byte (re-encode the input as UTF-8)",
})
FIX = "re-encode it as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
NOT_TEXT = "not UTF-8 text"


def decode_error(err: UnicodeDecodeError, data: bytes) -> str:
    """The offending byte and where it is, for a message: "byte 0xe9 at offset 3 (after 'caf')"."""
    before = data[max(err.start - 20, 0):err.start].decode("utf-8", "replace")
    return f"byte 0x{data[err.start]:02x} at offset {err.start} (after {before!r})"


def decode(data: bytes) -> tuple[str | None, str | None]:
    """(text, None) for UTF-8 bytes, else (None, why): never a replacement character."""
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as err:
        return None, f"{NOT_TEXT}: {decode_error(err, data)}; {FIX}"


def _has_text(t: pa.DataType) -> bool:
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return True
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _has_text(t.value_type)
    if pa.types.is_map(t):
        return _has_text(t.key_type) or _has_text(t.item_type)
    if pa.types.is_struct(t):
        return any(_has_text(t.field(i).type) for i in range(t.num_fields))
    return False


def _strings(arr: pa.Array):
    """The string values (as bytes, unchecked) nested anywhere in `arr` (slices respected)."""
    t = arr.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        yield from (v for v in arr.cast(pa.binary() if pa.types.is_string(t) else pa.large_binary()).to_pylist()
                    if v is not None)
    elif pa.types.is_map(t):  # (as a list of its key/value structs: the slice's entries only)
        yield from _strings(arr.view(pa.list_(pa.struct([t.key_field, t.item_field]))).flatten())
    elif pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        yield from _strings(arr.flatten())
    elif pa.types.is_struct(t):
        for i in range(t.num_fields):
            yield from _strings(pc.struct_field(arr, [i]))


def _problem(values) -> str | None:
    """Why one row's string values are not all UTF-8 (its first bad byte), None when they are."""
    for v in values:
        try:
            v.decode("utf-8")
        except UnicodeDecodeError as err:
            return decode_error(err, v)
    return None


def _bad_rows(col: pa.Array) -> dict[int, str]:
    """{row: why} for the rows of a column whose values are not UTF-8 (Python decodes each: this runs only
    on a column Arrow found invalid)."""
    t = col.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        binary = pa.binary() if pa.types.is_string(t) else pa.large_binary()
        rows = ([] if v is None else [v] for v in col.cast(binary).to_pylist())
    else:
        rows = (_strings(col.slice(i, 1)) for i in range(len(col)))
    return {i: why for i, vals in enumerate(rows) if (why := _problem(vals))}


def check_batch(batch: pa.RecordBatch | pa.Table, where) -> pa.RecordBatch | pa.Table:
    """The batch, with each row that holds a value that is not UTF-8 failed (`_reason` input_bad_text,
    `_error` "`where(i)`: column 'c' is not UTF-8: byte ..."), its bad values null. A batch that is
    valid (one C++ pass over its strings) comes back as it is. A row already failed (a `_reason`) keeps it."""
    try:
        batch.validate(full=True)
        return batch
    except pa.ArrowInvalid:
        pass
    if isinstance(batch, pa.Table):
        batch = batch.combine_chunks()
    cols = {name: batch.column(name) for name in batch.schema.names}
    cols = {n: (c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c) for n, c in cols.items()}
    errors: dict[int, str] = {}
    for name, col in list(cols.items()):
        if name in ("_reason", "_error") or not _has_text(col.type):
            continue
        try:
            col.validate(full=True)
            continue
        except pa.ArrowInvalid:
            pass
        bad = _bad_rows(col)
        for i, why in bad.items():
            errors.setdefault(i, f"{where(i)}: column {name!r} is {NOT_TEXT}: {why}; {FIX}"[:500])
        drop = set(bad)  # take() with a null index: a null, the bad bytes are not copied along
        cols[name] = col.take(pa.array([None if i in drop else i for i in range(len(col))], pa.int64()))
    n = batch.num_rows
    reason = cols.get("_reason", pa.nulls(n, pa.string()))
    error = cols.get("_error", pa.nulls(n, pa.string()))
    had = reason.to_pylist()
    cols["_reason"] = pa.array([r if r is not None or i not in errors else REASON for i, r in enumerate(had)],
                               pa.string())
    cols["_error"] = pa.array([e if had[i] is not None or i not in errors else errors[i]
                               for i, e in enumerate(error.to_pylist())], pa.string())
    return pa.RecordBatch.from_arrays(list(cols.values()), names=list(cols))

