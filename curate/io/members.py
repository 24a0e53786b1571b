"""Which tar members a kept sample has, and what its caption members hold: the one place that decides it.

The shard writer writes exactly `sample_members(row, policy)` (`table_members` for a whole table, the same
code row by row; `member_columns`, the same members as Arrow columns for tables without synthetic captions
or document images, held to it byte for byte by tests/io); `curate validate` checks a tar against
`text_members(row, policy)` and `caption_source(row, policy)` computed from the metadata row. Keeping both
in one module is why a new caption policy cannot make validate disagree with the writer.

What a sample's .txt holds when a `recaption` column exists (output.caption_policy in the recipe):
  original  - the original text only
  recaption - the synthetic caption, the original text where there is none
  both      - the original in .txt and the synthetic caption in .recap.txt (the default)
  fuse      - the LLM-merged caption (`fused_caption`, stage fuse_captions); the original where there is
              none, the synthetic caption where the original is empty too
The per-sample json always carries every caption column, so no policy loses information.
"""
from __future__ import annotations

import json
import math

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from curate import schema

CAPTION_POLICIES = ("original", "recaption", "both", "fuse")
DEFAULT_POLICY = "both"
# extra text members under `both`: column -> member extension
EXTRA_TEXT_MEMBERS = {"recaption": "recap.txt"}
# columns that never go into the per-sample json (payload, bookkeeping that the tar name already says)
JSON_SKIP = schema.PAYLOAD_COLUMNS | schema.SIDECAR_COLUMNS | {"status", "stage", "reason", "error", "shard", "key", "part", "modality"}


def check_policy(caption_policy: str) -> None:
    if caption_policy not in CAPTION_POLICIES:
        raise ValueError(f"caption_policy must be one of {', '.join(CAPTION_POLICIES)}, not {caption_policy!r}")


def caption(row: dict, caption_policy: str = DEFAULT_POLICY) -> tuple[str, str]:
    """(the text of the sample's .txt, where it came from: original | recaption | fused)."""
    check_policy(caption_policy)
    text = row.get("text") or ""
    if caption_policy == "recaption" and row.get("recaption"):
        return row["recaption"], "recaption"
    if caption_policy == "fuse":
        if row.get("fused_caption"):
            return row["fused_caption"], "fused"
        if not text.strip() and row.get("recaption"):
            return row["recaption"], "recaption"
    if row.get("caption_kept") == "recaption":  # caption_select moved the passing synthetic caption into `text`
        return text, "recaption"
    return text, "original"


def caption_source(row: dict, caption_policy: str = DEFAULT_POLICY) -> str | None:
    """The json's `caption_source`, or None where the run has no synthetic caption column at all."""
    if "recaption" not in row and "fused_caption" not in row:
        return None
    return caption(row, caption_policy)[1]


def text_members(row: dict, caption_policy: str = DEFAULT_POLICY) -> dict[str, str]:
    """The text members of a kept sample, by extension: {"txt": ..., "recap.txt": ...} (the latter only under
    `both`, where a synthetic caption exists)."""
    out = {"txt": caption(row, caption_policy)[0]}
    if caption_policy == "both":
        for col, ext in EXTRA_TEXT_MEMBERS.items():
            if row.get(col) is not None:
                out[ext] = row[col]
    return out


def text_column(row: dict, ext: str, caption_policy: str = DEFAULT_POLICY) -> str:
    """The metadata column a text member (by extension) is copied from, to name it in a finding."""
    if ext == "txt":
        return {"original": "text", "recaption": "recaption", "fused": "fused_caption"}[caption(row, caption_policy)[1]]
    return {e: col for col, e in EXTRA_TEXT_MEMBERS.items()}[ext]


def _jsonable(v):
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    if isinstance(v, bytes):
        return None
    return v


def sample_json(row: dict, caption_policy: str = DEFAULT_POLICY) -> dict:
    """The per-sample json: every metadata column but payloads and bookkeeping, plus caption_source."""
    return _with_source({k: _jsonable(v) for k, v in row.items() if k not in JSON_SKIP}, row, caption_policy)


def _with_source(info: dict, row: dict, caption_policy: str) -> dict:
    source = caption_source(row, caption_policy)
    if source is not None:
        info["caption_source"] = source
    return info


# the columns the members other than the json are made from: media, their formats, the captions, the key
MEMBER_COLUMNS = {"key", "image", "image_format", "doc_images", "doc_image_bytes", "video", "video_format",
                  "text", "recaption", "fused_caption", "caption_kept", "extra_members"}
# extensions the writer gives meaning to: an input's other member with one of them is carried as
# <key>.input.<ext>, so it never replaces, or is mistaken for, the sample's own image, caption or json
_OWN_EXTS = {"txt", "json", "jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "mp4", "webm", "mkv", "mov",
             "avi", *EXTRA_TEXT_MEMBERS.values()}


def extra_exts(exts: list[str]) -> list[str]:
    """The output extensions of an input sample's other members, in order: `ext` as it came, `input.<ext>`
    where the writer uses the extension itself (see _OWN_EXTS), and one more `input.` while it would repeat
    an earlier one (`png` and `input.png` in one sample: `input.png`, `input.input.png`), so a sample never
    has two members of one name. The writer and `curate validate` both use this, on the recorded order."""
    out: list[str] = []
    for ext in exts:
        name = f"input.{ext}" if ext.lower() in _OWN_EXTS else ext
        while name in out or name.lower() in _OWN_EXTS:
            name = f"input.{name}"
        out.append(name)
    return out


def sample_members(row: dict, caption_policy: str = DEFAULT_POLICY) -> list[tuple[str, bytes]]:
    """The tar members of one kept sample, in order: media, text members, json."""
    check_policy(caption_policy)
    return _members(row, {k: v for k, v in row.items() if k not in JSON_SKIP}, caption_policy)


def table_members(table, caption_policy: str = DEFAULT_POLICY, step: int = 256):
    """`sample_members` of every row of an Arrow table, in order, `step` rows at a time: the json's columns
    and the member columns are converted to Python separately, so no per-row filtering of the payload and
    bookkeeping columns (half of a text-only part's commit went to building and filtering row dicts)."""
    check_policy(caption_policy)
    own = [c for c in table.column_names if c in MEMBER_COLUMNS]
    info_cols = [c for c in table.column_names if c not in JSON_SKIP]
    for lo in range(0, table.num_rows, step):
        chunk = table.slice(lo, step)
        for row, info in zip(chunk.select(own).to_pylist(), chunk.select(info_cols).to_pylist()):
            yield _members(row, info, caption_policy)


# columns whose presence makes a sample's members depend on per-row caption logic or nested lists: tables
# with any of them go row by row (`table_members`); recaption and interleaved runs are model- or I/O-bound
_ROW_ONLY = {"recaption", "fused_caption", "caption_kept"}


def member_columns(table: pa.Table, caption_policy: str = DEFAULT_POLICY) -> list[tuple[pa.Array, pa.Array]] | None:
    """`sample_members` of every row as columns: one (names, bytes) pair of arrays per member slot, in member
    order (media, .txt, .json), null where a sample has no such member; None where the table needs the row
    path (synthetic caption columns, interleaved document images, an input's other members, a missing key).

    Why: a text-only sample is two small members, and building each row's member list in Python was most of
    a dedup run's commit; here only the json is made per row (the same `json_bytes`). tests/io check the
    members equal `sample_members` of each row."""
    check_policy(caption_policy)
    cols = set(table.column_names)
    if cols & _ROW_ONLY or "key" not in cols or table.column("key").null_count:
        return None
    for nested in ("doc_image_bytes", "extra_members"):
        if nested in cols and table.column(nested).null_count < table.num_rows:
            return None
    key = table.column("key").combine_chunks()
    slots = []
    for media, fmt, default in (("image", "image_format", "jpg"), ("video", "video_format", "mp4")):
        if media in cols and table.column(media).null_count < table.num_rows:
            ext = (table.column(fmt) if fmt in cols else pa.nulls(table.num_rows, pa.string())).combine_chunks()
            ext = pc.if_else(pc.fill_null(pc.not_equal(ext, ""), False), ext, default)  # `or default`
            data = table.column(media).combine_chunks()
            slots.append((pc.if_else(pc.is_valid(data), _names(key, ext), pa.scalar(None, pa.string())), data))
    text = (table.column("text") if "text" in cols else pa.nulls(table.num_rows, pa.string())).combine_chunks()
    slots.append((_names(key, "txt"), pc.fill_null(text.cast(pa.string()), "").cast(pa.binary())))
    info = table.select([c for c in table.column_names if c not in JSON_SKIP]).to_pylist()
    slots.append((_names(key, "json"), pa.array([json_bytes(i) for i in info], pa.binary())))
    return slots


def _names(key: pa.Array, ext) -> pa.Array:
    return pc.binary_join_element_wise(key, ext, ".")


def _members(row: dict, info: dict, caption_policy: str) -> list[tuple[str, bytes]]:
    """The members of one sample from its member columns (`row`) and its json's columns (`info`, raw values:
    json_bytes writes NaN/inf and bytes as null)."""
    key = row["key"]
    members = []
    if row.get("image") is not None:
        members.append((f"{key}.{row.get('image_format') or 'jpg'}", row["image"]))
    # interleaved documents: image j of the document as <key>.NNN.<ext> (the json's doc_images[j])
    infos = row.get("doc_images") or ()
    for j, data in enumerate(row.get("doc_image_bytes") or ()):
        if data is not None:
            members.append((f"{key}.{j:03d}.{(infos[j] or {}).get('format') or 'jpg'}", data))
    if row.get("video") is not None:
        members.append((f"{key}.{row.get('video_format') or 'mp4'}", row["video"]))
    extras = row.get("extra_members") or ()  # an input sample's label, mask, ...: carried as they came
    for extra, name in zip(extras, extra_exts([e["ext"] for e in extras])):
        members.append((f"{key}.{name}", extra["data"]))
    for ext, text in text_members(row, caption_policy).items():
        members.append((f"{key}.{ext}", text.encode("utf-8")))
    members.append((f"{key}.json", json_bytes(_with_source(info, row, caption_policy))))
    return members


def _orjson_default(v):
    return None if isinstance(v, (bytes, bytearray, memoryview)) else str(v)


def json_bytes(info: dict) -> bytes:
    """The json member's bytes: orjson (UTF-8, compact, NaN/inf and bytes -> null), ~15x faster than
    json.dumps, which was a quarter of a text-only part's commit; values orjson refuses (integers past 64
    bits) go through json.dumps. Values JSON has no type for are written as str(v), datetimes included."""
    try:
        return orjson.dumps(info, default=_orjson_default,
                            option=orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME)
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps({k: _jsonable(v) for k, v in info.items()}, ensure_ascii=False, default=str).encode("utf-8")
