"""`input.format: webdataset` and `input.format: images`: data users already have, as input rows.

The driver only indexes: for each sample it records where the image bytes are (file, byte offset, length)
plus the small text members (caption, json). The image bytes themselves are read by the `load_image` stage
inside the workers, so no process ever holds a whole tar set. Samples that cannot be indexed (a tar with a
bad header, a member cut short, a sample without an image) become rows that are already failed, with a
reason, so every sample is still accounted for.
"""
from __future__ import annotations

import json
import logging
import re
import tarfile
import zlib
from pathlib import PurePosixPath

import pyarrow as pa
import pyarrow.compute as pc

from curate import schema
from curate.io import inputfs, tars, utf8

log = logging.getLogger(__name__)

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")
TEXT_EXTS = ("txt", "caption", "text")
SIDECAR_EXTS = ("txt", "caption", "json")  # an image folder's caption files, in the order they are looked for
MAX_TEXT_BYTES = 4 * 1024 * 1024  # a caption or json member larger than this fails its sample
MAX_EXTRA_BYTES = 64 << 20  # another member (label, mask, array) larger than this fails its sample
MAX_EXTRA_MEMBERS = 64  # a sample with more other members than this fails
IMAGE_COLUMN_NAMES = {"image", "img", "image_bytes", "jpg", "jpeg", "png", "webp", "bytes"}
METADATA_NAMES = ("metadata.csv", "metadata.jsonl", "metadata.parquet")  # Hugging Face imagefolder convention

# columns of an index batch (before the per-shard parquet's and the mapping's columns)
REF_SCHEMA = pa.schema([
    ("url", pa.string()), ("caption", pa.string()), ("input_key", pa.string()), ("input_json", pa.string()),
    ("input_file", pa.string()), ("input_member", pa.string()), ("input_offset", pa.int64()),
    ("input_length", pa.int64()),
    # the sample's other members (a class label, a mask, a second caption), as JSON [[ext, offset, length], ..]:
    # load_image reads them and the shard writer carries them to the output sample (curate/io/members.py)
    ("input_extra_members", pa.string()),
    # rows that failed while indexing: status/stage/reason/error of the row (null while fine)
    ("_reason", pa.string()), ("_error", pa.string()),
])
REF_COLUMNS = ("input_file", "input_member", "input_offset", "input_length")

REASONS = {
    "input_tar_error": "a WebDataset tar could not be read (not a tar, or a bad header); the row stands for what was lost",
    "input_truncated_tar": "a WebDataset tar ends before its end-of-archive block (a partial copy or upload): its "
                           "samples up to the cut are read, the row stands for the unknown rest",
    "input_member_error": "a tar member is cut short or larger than the bounds",
    "input_missing_image": "the sample has no image (no image member, or a listed file is missing)",
    "input_read_error": "the image bytes could not be read back from the input",
}
schema.declare_reasons(REASONS)

# WebDataset's own rule: the key is the member path up to the first dot of its basename
_KEY_EXT = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")


def _row(**kw) -> dict:
    return {name: kw.get(name) for name in REF_SCHEMA.names}


def _sample_rows(tar_path: str, samples: list[tuple[str, dict]]) -> list[dict]:
    rows = []
    for key, s in samples:
        info = None
        if s.get("json") is not None:
            try:
                info = json.loads(s["json"])
            except ValueError:
                info = None
        info = info if isinstance(info, dict) else {}
        text = s.get("text")
        if text is None and isinstance(info.get("caption"), str):
            text = info["caption"]
        url = info.get("url") if isinstance(info.get("url"), str) else None
        row = _row(url=url, caption=text, input_key=key, input_json=s.get("json"), input_file=tar_path)
        if s.get("error"):  # (a text member that is not UTF-8 has a reason of its own, as in any input)
            bad_text = utf8.NOT_TEXT in s["error"]
            row.update(_reason=utf8.REASON if bad_text else "input_member_error",
                       _error=f"{tar_path}: {s['error']}" if bad_text else s["error"])
        elif "image" not in s:
            row.update(_reason="input_missing_image", _error=f"no image member for key {key!r} in {tar_path}")
        else:
            member, offset, length = s["image"]
            row.update(input_member=member, input_offset=offset, input_length=length)
            if s.get("extras"):
                row.update(input_extra_members=json.dumps(s["extras"]))
        rows.append(row)
    return rows


def _sample_for(samples: list[tuple[str, dict]], key: str, ext: str) -> dict:
    """The sample a member `key.ext` belongs to: WebDataset's rule, consecutive members with one key form a
    sample, and a member whose extension the open sample already has starts the next one.

    Why not group by key over the whole tar: a key can come back (two shards concatenated into one tar, a
    writer that reused its counter), and grouping across the tar paired one sample's image with another's
    caption, silently. A key repeated this way gives two samples (with distinct uids)."""
    if samples and samples[-1][0] == key and ext not in samples[-1][1]["exts"]:
        s = samples[-1][1]
    else:
        s = {"exts": set()}
        samples.append((key, s))
    s["exts"].add(ext)
    return s


def _add_extra(s: dict, name: str, ext: str, offset: int, size: int) -> None:
    """Keep a member that is not the sample's image, caption or json, to carry it to the output (bounded)."""
    extras = s.setdefault("extras", [])
    if size > MAX_EXTRA_BYTES:
        s["error"] = f"member {name} is {size} bytes (limit {MAX_EXTRA_BYTES})"
    elif len(extras) >= MAX_EXTRA_MEMBERS:
        s["error"] = f"sample has more than {MAX_EXTRA_MEMBERS} members besides its image, caption and json"
    else:
        extras.append([ext, offset, size])


_TAR_DAMAGE = (tarfile.TarError, OSError, EOFError, ValueError, zlib.error)  # zlib: a damaged .tar.gz


def _gzip_length(f) -> int:
    """The decompressed length of a gzipped tar open in `f`: what is left after the last header (the tar's
    end padding) is read through; a damaged or cut stream ends where decompression stopped."""
    try:
        while f.read1(64 << 10):
            pass
    except _TAR_DAMAGE:
        pass
    return f.tell()


def _index_members(tar, f, total: int | None, samples: list, spans: list) -> tuple[str, str] | None:
    """Group `tar`'s members into samples (refs to image, caption, json, other members); returns (reason,
    why) when the tar is cut or damaged after its last good header, None when it is not. `total` None: the
    length is not known yet (a gzipped tar), each member's span goes to `spans` to be checked once it is."""
    for m in tar:  # random-access mode: tarfile seeks over member data, reading headers only
        if not m.isfile():
            continue
        match = _KEY_EXT.match(m.name)
        if not match:  # (".jpg", "dir/.hidden"): no key to group by; still a row, not a silent skip
            samples.append((m.name, {"exts": set(), "error": f"member {m.name} has no WebDataset key "
                                     "(its file name has nothing before the first dot, or no dot)"}))
            continue
        key, ext, as_named = match.group(1), match.group(2).lower(), match.group(2)
        s = _sample_for(samples, key, ext)
        spans.append((s, m.name, m.offset_data, m.size))
        if total is not None and m.offset_data + m.size > total:
            continue  # cut short: the span check fails the sample
        if ext in IMAGE_EXTS and "image" not in s:
            s["image"] = (m.name, m.offset_data, m.size)
        elif ext == "json" or (ext in TEXT_EXTS and ("text" not in s or ext == "txt")):
            if m.size > MAX_TEXT_BYTES:
                s["error"] = f"member {m.name} is {m.size} bytes (limit {MAX_TEXT_BYTES})"
                continue
            # strict: a caption that is not UTF-8 fails its sample (input_bad_text), never U+FFFD in its text
            data, why = utf8.decode(tar.extractfile(m).read())
            if why:
                s["error"] = f"member {m.name} is {why}"
                continue
            if ext == "json":
                s["json"] = data
            else:
                if "text" in s:  # a .txt wins over .caption/.text: that one is kept as another member
                    _add_extra(s, m.name, *s["text_ref"])
                s["text"], s["text_ref"] = caption_text(data), (as_named, m.offset_data, m.size)
        else:  # (its extension as the member spells it: carried as it came)
            _add_extra(s, m.name, as_named, m.offset_data, m.size)
    # tarfile stops quietly at a bad header, and where the file ends at or inside a header (a copy cut at a
    # member boundary read as a shorter tar): the header it stopped at says which (curate.io.tars)
    why = tars.problem(tar)
    if why is None:
        return None
    if tars.truncated(tar):
        return "input_truncated_tar", why
    return "input_tar_error", f"bad tar header at byte {tar.offset}; members after it are lost"


def index_tar(tar_path: str) -> list[dict]:
    """One row per sample of one tar (in member order), plus one failed row if the tar is damaged.

    A member whose data runs past the end of the tar fails its sample ("cut short"). A plain tar's length is
    its size; a gzipped one's is known only once decompressed, so its members are checked after the one
    pass that indexes them (a counting pass first decompressed every .tar.gz twice)."""
    samples: list[tuple[str, dict]] = []
    spans: list[tuple[dict, str, int, int]] = []  # (sample, member, data offset, size)
    damage = total = tar = None
    gz = inputfs.is_gzip_tar(tar_path)
    try:
        with inputfs.open_read(tar_path) as f:
            try:
                total = None if gz else inputfs.data_size(tar_path)
                with tarfile.open(fileobj=f, mode="r:", tarinfo=tars.header_recorder()) as tar:
                    damage = _index_members(tar, f, total, samples, spans)
            except _TAR_DAMAGE as err:
                if tars.is_cut_data(err) and tar is not None and tar.members:  # a member or the gzip stream ran out
                    damage = "input_truncated_tar", tars.CUT_DATA
                else:
                    damage = "input_tar_error", f"{type(err).__name__}: {err}"
            if gz:
                total = _gzip_length(f)
    except _TAR_DAMAGE as err:  # the file could not be opened
        damage = "input_tar_error", f"{type(err).__name__}: {err}"
    for s, name, offset, size in spans:
        if total is not None and offset + size > total:
            s["error"] = f"member {name} is cut short ({max(total - offset, 0)} of {size} bytes)"
    rows = _sample_rows(tar_path, samples)
    if damage is not None and damage[0] == "input_truncated_tar":
        why = tars.message(tar_path, len(tar.members), tar.members[-1].name, damage[1])
        log.warning("%s; its samples up to the cut are read, the rest is one failed row (input_truncated_tar)", why)
        if rows:  # the cut sample: its members after the cut (a caption, its image) may be the lost ones
            said = f"{rows[-1]['_error']}; " if rows[-1]["_error"] else "the tar ends in this sample: "
            rows[-1].update(_reason="input_truncated_tar", _error=f"{said}{why}"[:500],
                            input_member=None, input_offset=None, input_length=None, input_extra_members=None)
        rows.append(_row(input_key=f"{PurePosixPath(tar_path).name}#truncated", input_file=tar_path,
                         _reason="input_truncated_tar", _error=why[:500]))
    elif damage is not None:
        rows.append(_row(input_key=f"{PurePosixPath(tar_path).name}#damaged", input_file=tar_path,
                         _reason="input_tar_error", _error=f"{tar_path}: {damage[1]}"[:500]))
    return rows


def _sidecar_parquet(tar_path: str) -> str | None:
    base = next((tar_path[:-len(s)] for s in inputfs.TARS if tar_path.lower().endswith(s)), tar_path)
    return base + ".parquet" if inputfs.exists(base + ".parquet") else None


def _read_table(path: str) -> pa.Table:
    """A listing or mapping file (a tar's parquet, an image folder's metadata.*) as a table whose text is
    UTF-8: a row holding a value that is not has it null and says why in `_error` (its sample fails as
    input_bad_text), where Arrow refused a whole CSV over one cell or let the bytes through."""
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson
    import pyarrow.parquet as pq

    with inputfs.open_read(path) as f:
        if path.endswith(".parquet"):
            table = pq.read_table(f)
        elif path.endswith(".csv"):
            table = pacsv.read_csv(f, convert_options=pacsv.ConvertOptions(check_utf8=False))
        else:
            table = pajson.read_json(f)
    if not table.num_rows:
        return table
    checked = utf8.check_batch(table.combine_chunks().to_batches()[0], lambda i: f"{path} row {i + 1}")
    return pa.Table.from_batches([checked])


def _text_errors(table: pa.Table | None) -> list[str | None] | None:
    """Per row of a table _read_table read, why its text is not UTF-8 (None: fine); None when all is."""
    return table.column("_error").to_pylist() if table is not None and "_error" in table.column_names else None


def _with_joined(rows: list[dict], table: pa.Table | None, key_col: str, keys: list[str | None],
                 joined_schema: pa.Schema | None) -> pa.Table:
    """The index rows as a table, with `table`'s columns (joined schema) taken at each row's key."""
    idx = [None] * len(rows)
    if table is not None and joined_schema is not None:
        pos = {k: i for i, k in enumerate(table.column(key_col).cast(pa.string()).to_pylist())}
        idx = [pos.get(k) for k in keys]
    return _joined_at(rows, table, idx, joined_schema)


def _joined_at(rows: list[dict], table: pa.Table | None, idx: list[int | None],
               joined_schema: pa.Schema | None) -> pa.Table:
    """The index rows as a table, with `table`'s columns (joined schema) taken at row idx[i] (None: nulls)."""
    out = pa.Table.from_pylist(rows, schema=REF_SCHEMA)
    if joined_schema is None:
        return out
    extra = joined_schema.empty_table() if table is None else _conform(table, joined_schema)
    idx = pa.array(idx if table is not None else [None] * len(rows), pa.int64())
    extra = extra.take(idx) if len(extra) else pa.table({f.name: pa.nulls(len(rows), f.type) for f in joined_schema})
    for field in joined_schema:
        out = out.append_column(field, extra.column(field.name))
    return out


def _conform(table: pa.Table, target: pa.Schema) -> pa.Table:
    cols = []
    for field in target:
        if field.name in table.column_names:
            try:
                cols.append(table.column(field.name).cast(field.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                cols.append(pa.nulls(table.num_rows, field.type))
        else:
            cols.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(cols, schema=target)


def _joined_schema(table: pa.Table, drop: tuple[str, ...]) -> pa.Schema:
    fields = [f for f in table.schema if f.name not in drop and f.name not in REF_SCHEMA.names]
    return pa.schema([pa.field(f.name, pa.string() if pa.types.is_null(f.type) else f.type) for f in fields])


def tar_batches(path: str, join_parquet: bool = True):
    """Index tables of every tar `path` names, one per tar; each tar's parquet (img2dataset writes
    NNNNN.parquet next to NNNNN.tar, listing every URL of the shard, failed ones too) is joined by key:
    its rows without a tar sample become failed rows, its columns become input columns."""
    tars = inputfs.expand(path, inputfs.TARS)  # .tar.gz/.tgz too: read decompressed (inputfs.open_read)
    if not tars:
        raise FileNotFoundError(f"no .tar, .tar.gz or .tgz files at {path}")
    joined_schema = None
    if join_parquet:
        first = next((p for p in map(_sidecar_parquet, tars) if p), None)
        if first is not None:
            joined_schema = _joined_schema(_read_table(first), drop=("key", "url", "caption"))
    for tar_path in tars:
        rows = index_tar(tar_path)
        side = _sidecar_parquet(tar_path) if joined_schema is not None else None
        table = _read_table(side) if side else None
        if table is not None and "key" in table.column_names:
            rows = _merge_listing(rows, table, tar_path)
        yield _with_joined(rows, table, "key", [r["input_key"] for r in rows], joined_schema)


def _merge_listing(rows: list[dict], listing: pa.Table, tar_path: str) -> list[dict]:
    """Rows in the listing's order (every URL of the shard), with tar-only samples and damage rows after.
    A key the tar holds twice is matched to the listing once; its other sample comes after, not lost."""
    by_key: dict[str | None, list[dict]] = {}
    for r in rows:
        by_key.setdefault(r["input_key"], []).append(r)
    out = []
    cols = listing.select([c for c in ("key", "url", "caption", "error_message", "_error") if c in listing.column_names])
    for rec in cols.to_pylist():
        key = None if rec["key"] is None else str(rec["key"])
        same = by_key.get(key)
        row = same.pop(0) if same else None
        if row is None:
            why = rec.get("error_message") or "listed in the shard's parquet but not in its tar"
            row = _row(input_key=key, input_file=tar_path, _reason="input_missing_image", _error=str(why)[:500])
        if row["url"] is None and isinstance(rec.get("url"), str):
            row["url"] = rec["url"]
        if row["caption"] is None and isinstance(rec.get("caption"), str):
            row["caption"] = rec["caption"]
        if rec.get("_error") and row["_reason"] is None:  # the listing's row holds text that is not UTF-8
            row.update(_reason=utf8.REASON, _error=rec["_error"])
        out.append(row)
    return out + [r for same in by_key.values() for r in same]


def image_batches(path: str, batch_rows: int = 10000, text_col: str | None = "caption"):
    """Index tables of a folder of images; captions from a sidecar `<name>.txt`, `<name>.caption` or
    `<name>.json` (`caption`/`text` field), or from a Hugging Face imagefolder mapping (metadata.csv /
    .jsonl / .parquet with a `file_name` column, relative to the folder) whose caption column is
    `text_col` (input.text_col; when that is the default `caption` and the mapping has none, HF's usual
    `text`). A sidecar's caption comes before the mapping's.

    Every input entity is a row, as in a tar: each image, once per mapping row that lists it (a file listed
    twice with two captions is two samples of one image); each mapping row whose file is not there, and
    each caption file without an image next to it, as a failed row (input_missing_image) after the images."""
    fs, root = inputfs.filesystem(path)
    found = inputfs.expand(path, tuple("." + e for e in IMAGE_EXTS + SIDECAR_EXTS))
    files = [f for f in found if f.lower().endswith(tuple("." + e for e in IMAGE_EXTS))]
    if not files:
        raise FileNotFoundError(f"no image files under {path}")
    mapping, mapping_name, cap_col = None, None, None
    for name in METADATA_NAMES:
        candidate = path.rstrip("/") + "/" + name
        if inputfs.exists(candidate):
            mapping, mapping_name = _read_table(candidate), name
            if "file_name" not in mapping.column_names:
                raise ValueError(f"{candidate} has no file_name column (the imagefolder convention)")
            cap_col = _mapping_text_col(mapping, text_col, candidate)
            # "./a.jpg" and "a.jpg" name one file: a listed image is found however its path is spelled
            names = [PurePosixPath(v).as_posix() if v else v
                     for v in mapping.column("file_name").cast(pa.string()).to_pylist()]
            mapping = mapping.set_column(mapping.column_names.index("file_name"), "file_name",
                                         pa.array(names, pa.string()))
            break
    mapped_schema = _joined_schema(mapping, drop=("file_name", cap_col)) if mapping is not None else None
    prefix = fs._strip_protocol(path).rstrip("/") + "/"

    def rel_of(f: str) -> str:
        inner = fs._strip_protocol(f)
        return inner[len(prefix):] if inner.startswith(prefix) else PurePosixPath(f).name

    caps, pos, map_errors = {}, {}, _text_errors(mapping)
    if mapping is not None:  # a file listed twice (COCO-style: one image, several captions) is a sample each
        for i, k in enumerate(mapping.column("file_name").to_pylist()):
            if k is not None:
                pos.setdefault(k, []).append(i)
        if cap_col is not None:
            caps = mapping.column(cap_col).cast(pa.string()).to_pylist()
    for start in range(0, len(files), batch_rows):
        rows, idx = [], []
        for f in files[start:start + batch_rows]:
            rel = rel_of(f)
            sidecar, info, bad_text = _sidecar_text(f.rsplit(".", 1)[0])
            size = inputfs.size(f)
            listed = pos.get(rel) or [None]
            for i in listed:
                # a sidecar's caption comes first, except for a file listed several times: one sidecar
                # cannot caption each listing, so each listing row's own caption is its sample's
                mapped = caps[i] if caps and i is not None else None
                text = mapped if len(listed) > 1 and mapped is not None else (sidecar if sidecar is not None else mapped)
                rows.append(_row(caption=text, input_json=info, input_key=rel, input_file=f, input_member=rel,
                                 input_offset=0, input_length=size,
                                 **_bad_text(bad_text or (map_errors[i] if map_errors and i is not None else None))))
                idx.append(i)
        yield _joined_at(rows, mapping, idx, mapped_schema)
    rows, idx = [], []
    have = {rel_of(f) for f in files}
    if mapping is not None:  # listed, not there: the row is still the user's, failed and saying why
        for i, k in enumerate(mapping.column("file_name").to_pylist()):
            if k not in have:
                why = f"{mapping_name} row {i + 1} names {k!r}, which is not an image file under {path}"
                rows.append(_row(caption=caps[i] if caps else None, input_key=k,
                                 input_file=None if k is None else path.rstrip("/") + "/" + k,
                                 _reason="input_missing_image", _error=why[:500]))
                idx.append(i)
    stems = {f.rsplit(".", 1)[0] for f in files}
    orphans = {}
    for f in found:  # caption files without an image: a caption-only tar sample is a failed row too
        stem = f.rsplit(".", 1)[0]
        if stem not in stems and not f.lower().endswith(tuple("." + e for e in IMAGE_EXTS)):
            orphans.setdefault(stem, f)
    for stem, f in orphans.items():
        text, info, _ = _sidecar_text(stem)  # (failed already: an orphan caption that is not UTF-8 is None)
        rows.append(_row(caption=text, input_json=info, input_key=rel_of(f), input_file=f,
                         _reason="input_missing_image", _error=f"caption file {rel_of(f)} has no image next to it"))
        idx.append(None)
    if rows:
        yield _joined_at(rows, mapping, idx, mapped_schema)


def _bad_text(why: str | None) -> dict:
    """An index row's failure for text that is not UTF-8 ({} when `why` is None)."""
    return {"_reason": utf8.REASON, "_error": why[:500]} if why else {}


def _mapping_text_col(mapping: pa.Table, text_col: str | None, where: str) -> str | None:
    """The mapping's caption column: input.text_col; for the default `caption`, HF imagefolder's usual
    `text` when there is no `caption` column (null: no caption from the mapping)."""
    names = mapping.column_names
    if text_col is None or text_col in names:
        return text_col
    if text_col == "caption":
        return "text" if "text" in names else None
    raise ValueError(f"{where} has no column {text_col!r} (input.text_col); its columns are: {', '.join(names)}")


def caption_text(data: str) -> str:
    """A caption file's text without its trailing line ending(s): `echo caption > x.txt` and most editors end
    a text file with a newline that is not part of the caption (img2dataset and curate write none), and a
    caption ending in "\n" misses `WHERE text = '...'` and differs from the same caption in a URL list."""
    return data.rstrip("\r\n")


def _sidecar_text(stem: str) -> tuple[str | None, str | None, str | None]:
    """(caption, json text, None) of an image's caption file; (None, None, why) when the file is not UTF-8
    (its image's row fails as input_bad_text: a caption is never decoded with U+FFFD in it)."""
    for ext in SIDECAR_EXTS:
        p = f"{stem}.{ext}"
        if inputfs.exists(p) and inputfs.size(p) <= MAX_TEXT_BYTES:
            with inputfs.open_read(p) as f:
                data, why = utf8.decode(f.read())
            if why:
                return None, None, f"caption file {p} is {why}"
            if ext != "json":
                return caption_text(data), None, None
            try:
                info = json.loads(data)
            except ValueError:
                return None, data, None
            text = next((info[k] for k in ("caption", "text") if isinstance(info, dict) and isinstance(info.get(k), str)), None)
            return text, data, None
    return None, None, None


def embedded_image(table: pa.Table, col: str) -> pa.Array:
    """Image bytes of a Parquet column: a binary column, or the Hugging Face image struct {bytes, path}."""
    arr = table.column(col).combine_chunks()
    if pa.types.is_struct(arr.type):
        arr = pc.struct_field(arr, "bytes")
    return arr.cast(pa.binary())


def image_column(names_types: pa.Schema, wanted: str | None) -> str | None:
    """The input column that holds image bytes: `wanted`, or else the only column that is a Hugging Face image
    struct {bytes, path} or a binary column with an image's name (other binary columns need input.image_col)."""
    def is_image(f: pa.Field) -> bool:
        t = f.type
        if pa.types.is_binary(t) or pa.types.is_large_binary(t):
            return f.name.lower() in IMAGE_COLUMN_NAMES
        return pa.types.is_struct(t) and any(t.field(i).name == "bytes" for i in range(t.num_fields))

    if wanted is not None:
        return wanted
    found = [f.name for f in names_types if is_image(f)]
    if len(found) > 1:
        raise ValueError(f"several columns hold bytes ({', '.join(found)}); set input.image_col")
    return found[0] if found else None
