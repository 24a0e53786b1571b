"""`curate export OUT --format uids|parquet -o PATH`: a finished run in the shape the next tool wants.

uids     a `.npy` of the kept samples' ids, DataComp's subset format: ids that are 128-bit hex (DataComp's
         own uids, e.g. `--uid-col input_uid` after curating DataComp shards with their parquet) become the
         structured `u8,u8` array DataComp's resharder reads, sorted; other ids a sorted array of strings.
parquet  a Parquet dataset of the kept samples: every metadata column plus `image` as the Hugging Face image
         struct {bytes, path} (the bytes are the tar member's, byte for byte), one file per shard.

Hugging Face `datasets` reads the run's shards directly: load_dataset("webdataset", data_dir="OUT/shards").
"""
from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads

from curate import schema
from curate.io import atomic, storage, tars
from curate.io import members as sample_members
from curate.reshard import OutputError, complete_run, new_output

FORMATS = ("uids", "parquet")
_HEX128 = re.compile(r"[0-9a-fA-F]{32}")
IMAGE_T = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def export(src: str | Path, fmt: str, dst: str | Path, uid_col: str = "uid") -> dict:
    if fmt not in FORMATS:
        raise OutputError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    run, manifest = complete_run(src)
    problems = run.parts_problems(manifest)  # a listing, no reads
    if problems:  # the export would silently lack rows the run counts (or hold rows it does not)
        raise OutputError(f"{run.root}: {problems[0]}; run `curate validate` on it; nothing was written")
    return export_uids(run, Path(dst), uid_col) if fmt == "uids" else export_parquet(run, Path(dst))


def _kept(run, columns: list[str]) -> pa.Table:
    parts = sorted(str(p) for p in run.meta.glob("part-*.parquet"))
    ds = storage.dataset(parts)  # a run directory on an object store too
    missing = [c for c in columns if c not in ds.schema.names]
    if missing:
        raise OutputError(f"the run has no column {missing[0]!r}; its columns are: {', '.join(ds.schema.names)}")
    return ds.to_table(columns=columns, filter=pads.field("status") == schema.OK)


def export_uids(run, dst: Path, uid_col: str = "uid") -> dict:
    """Write the kept samples' ids as a DataComp-style `.npy` subset."""
    if dst.suffix != ".npy":
        raise OutputError(f"{dst}: a uid subset is a .npy file")
    uids = [u for u in _kept(run, [uid_col]).column(uid_col).cast(pa.string()).to_pylist() if u is not None]
    if uids and all(_HEX128.fullmatch(u) for u in uids):
        arr = np.array(sorted((int(u[:16], 16), int(u[16:], 16)) for u in uids), np.dtype("u8,u8"))
        kind = "datacomp u8,u8"
    else:
        arr = np.array(sorted(uids), dtype=str)
        kind = "str"
    buf = io.BytesIO()
    np.save(buf, arr)
    atomic.write_bytes(dst, buf.getvalue())
    return {"path": str(dst), "uids": len(uids), "dtype": kind}


def export_parquet(run, dst: Path) -> dict:
    """One Parquet file per shard: kept rows' metadata plus their image (tar member bytes) as {bytes, path}."""
    dst = new_output(run, dst)
    rows = files = 0
    with atomic.staged_dir(dst, "export", OutputError) as tmp:
        for meta_path in sorted(run.meta.glob("part-*.parquet")):
            k = int(meta_path.stem.split("-")[1])
            t = storage.read_table(meta_path, filters=[("status", "=", schema.OK)])
            if t.num_rows == 0:
                continue
            try:
                images, extras = _members(run.shard(k), t)
            except tars.TruncatedTar as err:  # its tail's samples would be exported with no image
                raise OutputError(f"{err}; run `curate validate` on {run.root}; nothing was written") from None
            t = t.append_column(pa.field("image", IMAGE_T), images)
            if extras is not None:  # an input sample's other members (label, mask), as the shards carry them
                t = t.append_column(pa.field("extra_members", schema.EXTRA_MEMBERS_TYPE), extras)
            atomic.write_parquet(t, tmp / f"part-{k:06d}.parquet")
            rows += t.num_rows
            files += 1
    return {"path": str(dst), "rows": rows, "files": files}


def _members(tar_path: Path, t: pa.Table) -> tuple[pa.Array, pa.Array | None]:
    """(each kept row's image as {bytes, path}, its other members as [{ext, data}] in their input order, or
    None when the run carries none), read from the part's tar in one pass. The other members' names come
    from `input_extra_members` through the writer's own naming (curate.io.members.extra_exts)."""
    keys = t.column("key").to_pylist()
    fmts = t.column("image_format").to_pylist() if "image_format" in t.column_names else [None] * len(keys)
    want = {f"{key}.{fmt}": i for i, (key, fmt) in enumerate(zip(keys, fmts)) if fmt}
    refs = t.column("input_extra_members").to_pylist() if "input_extra_members" in t.column_names else None
    extra_want: dict[str, tuple[int, int, str]] = {}
    for i, r in enumerate(refs or ()):
        if r:
            exts = [e for e, _, _ in json.loads(r)]
            for j, (ext, name) in enumerate(zip(exts, sample_members.extra_exts(exts))):
                extra_want[f"{keys[i]}.{name}"] = (i, j, ext)
    out: list = [None] * len(keys)
    extras: list = [None] * len(keys)
    if (want or extra_want) and tar_path.exists():
        with storage.open_tar(tar_path) as tar:
            for m in tar:
                if m.name in want:
                    out[want[m.name]] = {"bytes": tar.extractfile(m).read(), "path": m.name}
                elif m.name in extra_want:
                    i, j, ext = extra_want[m.name]
                    extras[i] = extras[i] or {}
                    extras[i][j] = {"ext": ext, "data": tar.extractfile(m).read()}
    extras = [None if e is None else [e[j] for j in sorted(e)] for e in extras]
    return pa.array(out, IMAGE_T), (pa.array(extras, schema.EXTRA_MEMBERS_TYPE) if extra_want else None)
