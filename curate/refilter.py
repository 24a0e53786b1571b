"""`curate refilter OUT --where SQL --output OUT2`: a new decision over an already-scored run, no model.

Why: scoring is the expensive step and thresholds are a judgement call (DataComp sweeps them). The
stored scores are in OUT's metadata, so a new threshold is a DuckDB predicate over it. Every row of OUT
is copied into OUT2; kept rows that do not match `--where` become dropped by stage `refilter` with
reason `refilter_where`; the kept ones' tar members are copied byte for byte into OUT2's shards (part
k -> shards/k.tar, as in a run). OUT2 is built in a temporary folder and renamed into place, so it
either is a complete, valid run directory or does not exist. OUT is only read.
"""
from __future__ import annotations

import contextlib

import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from curate import schema
from curate.catalog import CatalogError, _only_selects, connect
from curate.io import atomic, checksums, storage, tars
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


def _copy_members(src_tar: Path, dst_tar: Path, keys: set[str]) -> tuple[int, str]:
    """Copy the members of samples whose key is in `keys` (bytes and names unchanged); returns (members
    written, the new tar's SHA-256)."""
    n = 0
    with atomic.atomic_path(dst_tar) as tmp:
        with storage.open_tar(src_tar) as tin, tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tout:
            for m in tin:
                if m.isfile() and m.name.rsplit("/", 1)[-1].split(".", 1)[0] in keys:
                    tout.addfile(m, tin.extractfile(m))
                    n += 1
        digest = checksums.file_sha256(tmp)
    return n, digest


def _dropped_thumbnails(run: RunDir) -> int:
    """OUT's output.dropped_thumbnails (the default when its recipe does not say)."""
    import yaml

    from curate.report.thumbs import DROPPED_PER_REASON

    try:
        out = (yaml.safe_load(run.recipe.read_text()) or {}).get("output") or {}
        return int(out.get("dropped_thumbnails", DROPPED_PER_REASON))
    except (OSError, ValueError, TypeError, AttributeError, yaml.YAMLError):
        return DROPPED_PER_REASON


def _copy_thumbs(src_run: RunDir, tmp: RunDir, k: int, newly: pa.Table, per_reason: int) -> None:
    """The report's thumbnails of dropped rows: OUT's, plus a sample of the rows this refilter drops (their
    images are still in OUT's shard), so OUT2's report shows what the new condition removed."""
    from curate.report.thumbs import DROPPED_SCHEMA, dropped_from_shard

    old = storage.read_table(src_run.thumbs_part(k)) if src_run.thumbs_part(k).exists() else DROPPED_SCHEMA.empty_table()
    rows = [{"uid": u, "stage": STAGE, "reason": REASON, "dup_of": None, "key": key}
            for u, key in zip(newly.column("uid").to_pylist(), newly.column("key").to_pylist())]
    both = pa.concat_tables([old.select(DROPPED_SCHEMA.names).cast(DROPPED_SCHEMA),
                             dropped_from_shard(src_run.shard(k), rows, per_reason)])
    if both.num_rows:
        atomic.write_parquet(both, tmp.thumbs_part(k))


def _where(root) -> str:
    """A run directory's absolute location, to tell two apart."""
    return str(root) if storage.is_remote(root) else str(root.resolve())


@contextlib.contextmanager
def _in_place(root):
    """OUT2 on an object store, written where it goes (no rename there): a failure removes what was written."""
    try:
        yield root
    except BaseException:
        storage.rmtree(root)
        raise


def refilter(src: str | Path, where: str, dst: str | Path, report: bool = True) -> Manifest:
    """Write OUT2 = OUT with kept rows failing `where` dropped (and its report); returns OUT2's manifest."""
    storage.preflight(src)
    storage.preflight(dst, write=True)
    src_run, dst_run = RunDir(src), RunDir(dst)
    if not src_run.exists():
        raise RefilterError(f"{src_run.root} holds no run (no manifest.json)")
    try:
        manifest = src_run.load_manifest()
    except ManifestError as err:
        raise RefilterError(str(err)) from None
    if not manifest.complete:
        raise RefilterError(f"the run in {src_run.root} is not complete; finish it with `curate run --resume` first")
    if _where(dst_run.root) == _where(src_run.root):
        raise RefilterError("--output must be a new folder: refilter never changes the run it reads")
    if dst_run.root.exists() and any(dst_run.root.iterdir()):
        raise RefilterError(f"output folder {dst_run.root} is not empty; choose another --output")
    if not where.strip():
        raise RefilterError("--where needs a condition, e.g. \"clip_score >= 0.3\"")
    drop = _failing_uids(src_run.root, where)
    per_reason = _dropped_thumbnails(src_run)

    # locally OUT2 is built in a hidden sibling and renamed into place; object stores have no rename, so
    # there OUT2 is written in place and its manifest.json, written last, is what makes it a run
    remote = storage.is_remote(dst_run.root)
    with _in_place(dst_run.root) if remote else atomic.staged_dir(dst_run.root, "refilter", RefilterError) as tmp_root:
        tmp = RunDir(tmp_root)
        for meta_path in storage.glob(src_run.meta, "part-*.parquet"):
            k = int(meta_path.stem.split("-")[1])
            t = storage.read_table(meta_path)
            hit = pa.array([u in drop for u in t.column("uid").to_pylist()], pa.bool_())
            hit = pc.and_(hit, schema.active_mask(t))
            _copy_thumbs(src_run, tmp, k, t.filter(hit), per_reason)
            if pc.any(hit).as_py():
                t = schema.set_rows(t, hit, {"status": schema.DROPPED, "stage": STAGE, "reason": REASON,
                                             "shard": None, "key": None})
            kept = t.filter(schema.active_mask(t))
            digest = None  # the source part's digest is of the source shard: replaced, or removed
            if src_run.shard(k).exists():
                try:
                    digest = _copy_members(src_run.shard(k), tmp.shard(k), set(kept.column("key").to_pylist()))[1]
                except tars.TruncatedTar as err:  # copied, its tail's kept rows would point at nothing
                    raise RefilterError(f"{err}; run `curate validate` on {src_run.root}; nothing was written") from None
            if src_run.embeddings_part(k).exists():
                atomic.write_bytes(tmp.embeddings_part(k), src_run.embeddings_part(k).read_bytes())
            atomic.write_parquet(checksums.with_shard_sha256(t, digest), tmp.meta_part(k))
        for extra in ("recipe.yaml",):
            if (src_run.root / extra).exists():
                atomic.write_bytes(tmp_root / extra, (src_run.root / extra).read_bytes())
        out = manifest.settled()  # an unfinished retry of OUT is not part of OUT2
        out.created = now()
        out.refilter = {"from": _where(src_run.root), "where": where, "dropped": len(drop)}
        tmp.finalize(out, report=False)  # manifest.json last; the report is drawn once OUT2 is in place
        before = manifest.counts.rows if manifest.counts else out.counts.rows
        if out.counts.rows != before:
            raise RefilterError(f"row count changed ({out.counts.rows} != {before})")
    if report:
        dst_run.write_report()
    return out
