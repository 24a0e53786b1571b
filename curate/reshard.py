"""`curate reshard OUT --samples-per-shard N -o OUT2`: the same run, with kept samples regrouped into shards
of N (a filtered run leaves many small shards; trainers want even ones).

Kept samples keep their members byte for byte (they are copied tar member to tar member, streaming, one
source shard at a time) and their metadata rows; dropped and failed rows travel with the part that is open
when their source part is read, so rows in = rows out and `curate validate OUT2` holds. OUT2 is built in a
temporary folder next to it and renamed into place, so it exists only complete.
"""
from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate import schema
from curate.io import atomic, checksums, tars
from curate.io.manifest import Batch, Manifest, ManifestError, PartInfo, now
from curate.io.rundir import RunDir


class OutputError(Exception):
    """A problem with a run directory given to reshard/export; one line for the user."""


def complete_run(src: str | Path) -> tuple[RunDir, Manifest]:
    run = RunDir(src)
    if not run.exists():
        raise OutputError(f"{run.root} holds no run (no manifest.json)")
    try:
        manifest = run.load_manifest()
    except ManifestError as err:
        raise OutputError(str(err)) from None
    if not manifest.complete:
        raise OutputError(f"the run in {run.root} is not complete; finish it with `curate run --resume` first")
    return run, manifest


def new_output(src: RunDir, dst: str | Path) -> Path:
    dst = Path(dst)
    if dst.exists() and dst.resolve() == src.root.resolve():
        raise OutputError("--output must be a new folder: this command never changes the run it reads")
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise OutputError(f"output {dst} is not an empty folder; choose another --output")
    return dst


class _Writer:
    """The output part being filled: its tar (open) and the metadata rows of its samples (as row indices into
    their source part's table until it closes)."""

    def __init__(self, run: RunDir, k: int):
        self.run, self.k = run, k
        self.ctx = atomic.atomic_path(run.shard(k))
        self.tmp = self.ctx.__enter__()
        self.tar = tarfile.open(self.tmp, "w", format=tarfile.PAX_FORMAT)
        self.meta: list[pa.Table] = []  # whole tables: rows without a sample
        self.taken: list[tuple[pa.Table, pa.Table | None, list[int]]] = []  # (kept rows, embeddings, indices)
        self.kept = 0

    def add(self, kept: pa.Table, side: pa.Table | None, i: int) -> None:
        if not self.taken or self.taken[-1][0] is not kept:
            self.taken.append((kept, side, []))
        self.taken[-1][2].append(i)
        self.kept += 1

    def close(self) -> PartInfo:
        self.tar.close()
        digest = checksums.file_sha256(self.tmp)  # before it goes under its final name
        self.ctx.__exit__(None, None, None)
        vectors = []
        for kept, side, idx in self.taken:
            rows = kept.take(pa.array(idx, pa.int64()))
            self.meta.append(rows)
            if side is not None:
                vectors.append(side.filter(pc.is_in(side.column("uid"), value_set=rows.column("uid"))))
        if vectors:
            atomic.write_parquet(pa.concat_tables(vectors), self.run.embeddings_part(self.k))
        t = pa.concat_tables(self.meta, promote_options="default") if self.meta else None
        rows = 0
        if t is not None:
            t = t.set_column(t.column_names.index("part"), "part", pa.array([self.k] * t.num_rows, pa.int32()))
            t = schema.set_rows(t, schema.active_mask(t), {"shard": RunDir.shard_name(self.k)})
            t = t.sort_by([("row", "ascending")])
            atomic.write_parquet(checksums.with_shard_sha256(t, digest), self.run.meta_part(self.k))
            rows = t.num_rows
        return PartInfo(rows=rows, kept=self.kept, batch=0, committed=True)


def reshard(src: str | Path, samples_per_shard: int, dst: str | Path) -> Manifest:
    """Write OUT2 = OUT with kept samples in shards of `samples_per_shard`; returns OUT2's manifest."""
    if samples_per_shard < 1:
        raise OutputError("--samples-per-shard must be at least 1")
    src_run, manifest = complete_run(src)
    dst = new_output(src_run, dst)
    problems = src_run.parts_problems(manifest)  # a missing part's rows would silently not be in OUT2, whose
    if problems:  # manifest still counts them (the same check as validate's and export's)
        raise OutputError(f"{src_run.root}: {problems[0]}; run `curate validate` on it; nothing was written")
    parts_out: dict[int, PartInfo] = {}
    with atomic.staged_dir(dst, "reshard", OutputError) as tmp_root:
        tmp = RunDir(tmp_root)
        tmp.shards.mkdir()
        w = _Writer(tmp, 0)
        for meta_path in sorted(src_run.meta.glob("part-*.parquet")):
            k = int(meta_path.stem.split("-")[1])
            meta = pq.read_table(meta_path)
            kept_mask = schema.active_mask(meta)
            w.meta.append(meta.filter(pc.invert(kept_mask)))  # rows without a sample ride with the open part
            kept = meta.filter(kept_mask)
            row_of = {key: i for i, key in enumerate(kept.column("key").to_pylist())}
            side = pq.read_table(src_run.embeddings_part(k)) if src_run.embeddings_part(k).exists() else None
            copied, current = 0, None
            if row_of:
                # hashed as it is read: a shard whose bytes changed since it was written must not be copied
                # into OUT2, whose new digests would make the damage look sound to `curate validate`
                with open(src_run.shard(k), "rb") as f, \
                        tarfile.open(fileobj=(hashed := checksums.HashingReader(f)), mode="r|",
                                     tarinfo=tars.header_recorder()) as tar:
                    for m in tar:  # streaming: one member in memory at a time
                        key = m.name.rsplit("/", 1)[-1].partition(".")[0]
                        if key not in row_of:
                            continue
                        if key != current:
                            if w.kept == samples_per_shard:
                                parts_out[w.k] = w.close()
                                w = _Writer(tmp, w.k + 1)
                            current = key
                            copied += 1
                            w.add(kept, side, row_of[key])
                        w.tar.addfile(m, tar.extractfile(m))
                    expected = checksums.recorded(meta_path)
                    if expected is not None and hashed.hexdigest() != expected:
                        raise OutputError(f"{src_run.shard(k)}: its bytes changed since it was written (SHA-256 "
                                          "differs from its meta part's); run `curate validate` on it; nothing "
                                          "was written")
                    try:  # a run from before digests: its cut shard is still not copied as a shorter one
                        tars.check(tar, str(src_run.shard(k)))
                    except tars.TruncatedTar as err:
                        raise OutputError(f"{err}; run `curate validate` on it; nothing was written") from None
            if copied != len(row_of):
                raise OutputError(f"{src_run.shard(k)} holds {copied} of its {len(row_of)} kept samples; "
                                  "run `curate validate` on it")
        parts_out[w.k] = w.close()
        if (src_run.root / "recipe.yaml").exists():
            shutil.copy(src_run.root / "recipe.yaml", tmp_root / "recipe.yaml")
        rows_in = sum(pq.read_metadata(p).num_rows for p in src_run.meta.glob("part-*.parquet"))
        rows_out = sum(p.rows for p in parts_out.values())
        if rows_in != rows_out:
            raise OutputError(f"row count changed ({rows_out} != {rows_in}); nothing was written")
        out = manifest.model_copy(deep=True, update={
            "created": now(), "parts": parts_out,
            "batches": [Batch(kind="reshard", status="complete", parts=[0, len(parts_out) - 1], rows=rows_out)],
            "reshard": {"from": str(src_run.root.resolve()), "samples_per_shard": samples_per_shard}})
        tmp.finalize(out, report=False)  # counts (unchanged: the same rows), sizes.json of the new shards
    return out
