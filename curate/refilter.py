"""`curate refilter OUT --where SQL --output OUT2`: a new decision over an already-scored run, no model.

Why: scoring is the expensive step and thresholds are a judgement call (DataComp sweeps them). The
stored scores are in OUT's metadata, so a new threshold is a DuckDB predicate over it. Every row of OUT
is copied into OUT2; kept rows that do not match `--where` become dropped by stage `refilter` with
reason `refilter_where`; the kept ones' tar members are copied byte for byte into OUT2's shards (part
k -> shards/k.tar, as in a run). OUT2 is built in a temporary folder and renamed into place, so it
either is a complete, valid run directory or does not exist. OUT is only read.
"""
from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate import schema
from curate.catalog import CatalogError, _only_selects, connect
from curate.io import atomic
from curate.io.manifest import Manifest, ManifestError, now
from curate.io.rundir import RunDir

STAGE, REASON = "refilter", "refilter_where"
schema.declare_reasons({REASON: "kept sample that does not match the `curate refilter --where` condition"})


class RefilterError(Exception):
    """A refilter request that cannot run (one line for the user)."""


def _failing_uids(src: Path, where: str) -> set[str]:
    """uids of kept rows not matching `where`. The condition is user SQL, so it runs like `curate query`:
    one SELECT on a locked-down connection that reads nothing but the run's own parts and writes nothing."""
    sql = f"SELECT uid FROM kept WHERE NOT coalesce(({where}), false)"
    try:
        _only_selects(sql)
    except CatalogError as err:
        raise CatalogError(f"--where {where!r}: {err}") from None
    con = connect(src, locked=True)
    try:
        rows = con.execute(sql).fetchall()
    except Exception as err:  # duckdb.Error and friends: a bad predicate is the user's to fix
        raise CatalogError(f"--where {where!r}: {str(err).splitlines()[0]}") from None
    finally:
        con.close()
    return {r[0] for r in rows}


def _copy_members(src_tar: Path, dst_tar: Path, keys: set[str]) -> int:
    """Copy the members of samples whose key is in `keys` (bytes and names unchanged); returns members written."""
    n = 0
    with atomic.atomic_path(dst_tar) as tmp, tarfile.open(src_tar) as tin, \
            tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tout:
        for m in tin:
            if m.isfile() and m.name.rsplit("/", 1)[-1].split(".", 1)[0] in keys:
                tout.addfile(m, tin.extractfile(m))
                n += 1
    return n


def refilter(src: str | Path, where: str, dst: str | Path, report: bool = True) -> Manifest:
    """Write OUT2 = OUT with kept rows failing `where` dropped (and its report); returns OUT2's manifest."""
    src_run, dst_run = RunDir(src), RunDir(dst)
    if not src_run.exists():
        raise RefilterError(f"{src_run.root} holds no run (no manifest.json)")
    try:
        manifest = src_run.load_manifest()
    except ManifestError as err:
        raise RefilterError(str(err)) from None
    if not manifest.complete:
        raise RefilterError(f"the run in {src_run.root} is not complete; finish it with `curate run --resume` first")
    if dst_run.root.resolve() == src_run.root.resolve():
        raise RefilterError("--output must be a new folder: refilter never changes the run it reads")
    if dst_run.root.exists() and any(dst_run.root.iterdir()):
        raise RefilterError(f"output folder {dst_run.root} is not empty; choose another --output")
    if not where.strip():
        raise RefilterError("--where needs a condition, e.g. \"clip_score >= 0.3\"")
    drop = _failing_uids(src_run.root, where)

    tmp_root = dst_run.root.with_name(f".{dst_run.root.name}.refilter-tmp")
    shutil.rmtree(tmp_root, ignore_errors=True)
    tmp = RunDir(tmp_root)
    tmp_root.mkdir(parents=True)
    try:
        for meta_path in sorted(src_run.meta.glob("part-*.parquet")):
            k = int(meta_path.stem.split("-")[1])
            t = pq.read_table(meta_path)
            hit = pa.array([u in drop for u in t.column("uid").to_pylist()], pa.bool_())
            hit = pc.and_(hit, schema.active_mask(t))
            if pc.any(hit).as_py():
                t = schema.set_rows(t, hit, {"status": schema.DROPPED, "stage": STAGE, "reason": REASON,
                                             "shard": None, "key": None})
            kept = t.filter(schema.active_mask(t))
            if src_run.shard(k).exists():
                _copy_members(src_run.shard(k), tmp.shard(k), set(kept.column("key").to_pylist()))
            if src_run.embeddings_part(k).exists():
                atomic.write_bytes(tmp.embeddings_part(k), src_run.embeddings_part(k).read_bytes())
            atomic.write_parquet(t, tmp.meta_part(k))
        for extra in ("recipe.yaml",):
            if (src_run.root / extra).exists():
                shutil.copy(src_run.root / extra, tmp_root / extra)
        out = manifest.model_copy(deep=True)
        out.created = now()
        out.refilter = {"from": str(src_run.root.resolve()), "where": where, "dropped": len(drop)}
        tmp.finalize(out, report=False)  # the report is drawn once OUT2 is in place
        before = manifest.counts.rows if manifest.counts else out.counts.rows
        if out.counts.rows != before:
            raise RefilterError(f"row count changed ({out.counts.rows} != {before})")
        if dst_run.root.exists():
            dst_run.root.rmdir()  # empty (checked above)
        tmp_root.rename(dst_run.root)
        atomic.sync_dir(dst_run.root.parent)
    except BaseException:
        shutil.rmtree(tmp_root, ignore_errors=True)
        raise
    if report:
        dst_run.write_report()
    return out
