"""The sample row: one Arrow schema for every input sample, its outcome, scores and placement.

Columns are append-only: stages declare the columns they add (with types) and never rename or
remove one. Every input row becomes exactly one row here, kept, dropped or failed.
"""
from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

OK, DROPPED, FAILED = "ok", "dropped", "failed"
STATUSES = (OK, DROPPED, FAILED)

# Columns every run has, in this order. Stage columns follow in recipe order.
CORE_COLUMNS: dict[str, pa.DataType] = {
    "uid": pa.string(),  # stable id: hash of source + url + text (+ occurrence), or the corpus' own id
    "source": pa.string(),  # input name (file stem unless the recipe names it)
    "modality": pa.string(),  # image-text | video-text | interleaved
    "part": pa.int32(),  # input partition: part k -> meta/part-k.parquet and shards/k.tar
    "row": pa.int64(),  # row number in the input list
    "url": pa.string(),
    "text": pa.string(),
    "status": pa.string(),  # ok | dropped | failed
    "stage": pa.string(),  # the stage that decided (null while ok)
    "reason": pa.string(),  # snake_case code from REASONS
    "error": pa.string(),  # free-text message for failures
    "shard": pa.string(),  # shards/NNNNNN.tar for kept samples
    "key": pa.string(),  # member basename inside the shard
}

# Binary payload columns travel between stages but never go into meta/*.parquet.
# doc_image_bytes: curate.interleaved; input_image_bytes: image bytes that came with the input (Parquet)
PAYLOAD_COLUMNS = {"image", "video", "keyframes", "doc_image_bytes", "input_image_bytes", "extra_members"}
# an input sample's other tar members (label, mask, array), carried to the output sample (curate/io/members.py)
EXTRA_MEMBERS_TYPE = pa.list_(pa.struct([("ext", pa.string()), ("data", pa.binary())]))

# Rows a stage derives from another row (video clips cut from a video) carry the source row's uid here;
# input rows have it null. Counts in == counts out is checked on the rows where it is null; the source
# row stays too, with its own outcome (e.g. dropped / split_into_clips).
PARENT_COLUMN = "parent_uid"

# Vector columns (CLIP embeddings) travel between stages but are written to the embeddings/ sidecar
# (embeddings/part-k.parquet: uid + vectors), not into meta/*.parquet or the per-sample json.
SIDECAR_COLUMNS = {"clip_image_embedding", "clip_text_embedding"}

# Reason codes are public API: every drop and failure carries one of these.
REASONS: dict[str, str] = {}


def declare_reasons(reasons: dict[str, str]) -> None:
    """Add reason codes to the public vocabulary (stages call this at import)."""
    for code, doc in reasons.items():
        if not code.replace("_", "").isalnum() or code.lower() != code:
            raise ValueError(f"reason code must be snake_case: {code!r}")
        REASONS.setdefault(code, doc)


declare_reasons(
    {
        "duplicate_image": "byte-identical image to the kept sample in dup_of (exact_dedup; which one is kept: its `keep`)",
        "duplicate_text": "same normalised text as the kept sample in dup_of (exact_dedup)",
        "duplicate_pair": "same image bytes and same normalised text as the kept sample in dup_of",
        "stage_error": "a stage raised on this row; the message is in `error`",
        "split_into_clips": "a video whose clips continue as their own rows (`parent_uid` = this uid)",
    }
)


def run_schema(stage_columns: dict[str, pa.DataType]) -> pa.Schema:
    """The full row schema of a run: core columns then every stage's columns."""
    fields = dict(CORE_COLUMNS)
    for name, typ in stage_columns.items():
        if name in fields and fields[name] != typ:
            raise ValueError(f"column {name!r} declared twice with different types: {fields[name]} vs {typ}")
        fields[name] = typ
    return pa.schema([pa.field(n, t) for n, t in fields.items()])


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Add missing columns as nulls, cast, and order columns as `schema` says; extra columns are kept at the end."""
    cols, fields = [], []
    for field in schema:
        if field.name in table.column_names:
            col = table.column(field.name)
            if col.type != field.type:
                col = col.cast(field.type)
        else:
            col = pa.nulls(table.num_rows, field.type)
        cols.append(col)
        fields.append(field)
    for name in table.column_names:
        if name not in schema.names:
            cols.append(table.column(name))
            fields.append(table.schema.field(name))
    return pa.Table.from_arrays(cols, schema=pa.schema(fields))


def input_rows(table: pa.Table) -> int:
    """Rows that came from the input list (not derived from another row by a stage)."""
    if PARENT_COLUMN not in table.column_names:
        return table.num_rows
    return table.column(PARENT_COLUMN).null_count


def meta_schema(schema: pa.Schema) -> pa.Schema:
    """The schema of meta/*.parquet: the run schema without payload bytes."""
    return pa.schema([f for f in schema if f.name not in PAYLOAD_COLUMNS | SIDECAR_COLUMNS])


def active_mask(table: pa.Table) -> pa.ChunkedArray:
    """Rows still in play (status ok): the only rows a stage may change."""
    return pc.equal(table.column("status"), OK)


def set_rows(table: pa.Table, mask, values: dict[str, object]) -> pa.Table:
    """Return `table` with `values` written into the rows where `mask` is true.

    Values are scalars (same value for every selected row) or full-length arrays/lists (the selected
    positions are taken from them).
    """
    mask = pa.array(mask, pa.bool_()) if not isinstance(mask, (pa.Array, pa.ChunkedArray)) else mask
    for name, value in values.items():
        col = table.column(name)
        if isinstance(value, (list, tuple, pa.Array, pa.ChunkedArray)):
            new = pa.array(value, col.type) if isinstance(value, (list, tuple)) else value.cast(col.type)
        else:
            new = pa.scalar(value, col.type)
        table = table.set_column(table.column_names.index(name), name, pc.if_else(mask, new, col))
    return table


def put_column(table: pa.Table, name: str, values, typ: pa.DataType) -> pa.Table:
    """`table` with column `name` holding `values` (a list, one per row) as `typ`: replaced if it exists,
    appended otherwise (stages outside a runner see tables without their declared columns)."""
    arr = pa.array(values, typ)
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, arr)
    return table.append_column(pa.field(name, typ), arr)


def mark(table: pa.Table, mask, status: str, stage: str, reason, error=None) -> pa.Table:
    """Mark the rows under `mask` as dropped/failed by `stage` with `reason` (scalar or per-row list)."""
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}")
    values = {"status": status, "stage": stage, "reason": reason}
    if error is not None:
        values["error"] = error
    return set_rows(table, mask, values)


def counts(table: pa.Table) -> dict[str, dict[str, int]]:
    """Funnel counts: {"ok": {"": n}, "dropped": {"stage/reason": n}, "failed": {...}}."""
    out: dict[str, dict[str, int]] = {s: {} for s in STATUSES}
    if table.num_rows == 0:
        return out
    grouped = table.select(["status", "stage", "reason"]).group_by(["status", "stage", "reason"]).aggregate(
        [("status", "count")]
    )
    for row in grouped.to_pylist():
        key = "" if row["status"] == OK else f"{row['stage']}/{row['reason']}"
        out[row["status"]][key] = out[row["status"]].get(key, 0) + row["status_count"]
    return out
