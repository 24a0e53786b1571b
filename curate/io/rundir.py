"""The run directory layout (public API) and its manifest.

out/recipe.yaml, out/manifest.json, out/sizes.json, out/shards.sha256, out/shards/NNNNNN.tar, out/meta/part-NNNNNN.parquet,
out/report.html, out/thumbs/part-NNNNNN.parquet (thumbnails of a sample of dropped rows, for the report);
out/_work/ holds resumable intermediate state and is removed when a run completes. out/.curate-demo marks a
finished `curate demo` run (which the next demo may replace).
shards/ holds only the tars, so WebDataset readers that list a folder (Hugging Face `datasets`,
`ray.data.read_webdataset`) read it as it is; the per-shard sample counts are in out/sizes.json.
"""
from __future__ import annotations

import json
import logging
import os
import platform
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

from curate.io import atomic, storage
from curate.io.manifest import COMPLETE, Counts, Manifest, ManifestError, now

log = logging.getLogger(__name__)


class RunDirBusy(Exception):
    """Another process is writing this run directory (one line for the user)."""


class RunDir:
    def __init__(self, root: Path | str):
        self.root = storage.as_path(root)  # a Path, or a UPath for a URL (s3://bucket/out): curate/io/storage.py
        self.recipe = self.root / "recipe.yaml"
        self.manifest_path = self.root / "manifest.json"
        self.shards = self.root / "shards"
        self.meta = self.root / "meta"
        self.work = self.root / "_work"
        self.crashes = self.work / "crashes"  # markers of stage calls a worker died in (curate.crash_isolation)
        # a --retry-failed commits into _work/retry/{shards,meta,thumbs,embeddings} (a RunDir of its own:
        # `staged()`) and moves its parts into place only once every one is committed, so readers never see
        # half a retry; it also keeps the manifest as it was before (to drop the retry: curate.runner.abandon_retry)
        self.retry_stage = self.work / "retry"
        self.retry_backup = self.retry_stage / "manifest.before.json"
        self.retry_recipe = self.retry_stage / "recipe.yaml"
        self.report = self.root / "report.html"
        self.embeddings = self.root / "embeddings"  # sidecar: uid + CLIP embedding vectors per part
        self.sizes = self.root / "sizes.json"  # {"000000.tar": kept samples}, open_clip's sizes.json format
        self.shard_sums = self.root / "shards.sha256"  # `sha256sum -c` format: each shard as it was written
        self.thumbs = self.root / "thumbs"  # sidecar: thumbnails of a bounded sample of dropped rows per part
        self.demo_marker = self.root / ".curate-demo"  # a finished demo run: `curate demo -o` may replace it
        self.lock_path = self.root / ".curate.lock"  # held by the one process writing the run (`writer_lock`)

    @contextmanager
    def writer_lock(self, then: str = "wait for it to finish (then --resume if it stopped), or choose another --output"):
        """Hold the run directory for this process: a second `curate run` (or --resume) on the same folder is
        refused with RunDirBusy instead of both writing the same parts; `then` is what the refusal tells the
        user to do (`curate report` has no --output to choose).

        flock on out/.curate.lock: the kernel releases it when the process ends, however it ends, so a
        killed run never leaves a stale lock (the file stays, empty of meaning). Local folders only: object
        stores have no locks, so two writers to one s3:// output are the user's to avoid."""
        if storage.is_remote(self.root):
            yield
            return
        import fcntl

        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 64).decode(errors="replace").strip()
                raise RunDirBusy(f"{self.root} is being written by another curate process"
                                 f"{f' (pid {holder})' if holder.isdigit() else ''}; {then}") from None
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            yield
        finally:
            os.close(fd)

    def staged(self) -> RunDir:
        """Where an unfinished --retry-failed writes its parts (the same layout, under _work/retry)."""
        return RunDir(self.retry_stage)

    # final outputs
    def meta_part(self, k: int) -> Path:
        return self.meta / f"part-{k:06d}.parquet"

    def embeddings_part(self, k: int) -> Path:
        return self.embeddings / f"part-{k:06d}.parquet"

    def thumbs_part(self, k: int) -> Path:
        return self.thumbs / f"part-{k:06d}.parquet"

    def shard(self, k: int) -> Path:
        return self.shards / f"{k:06d}.tar"

    @staticmethod
    def shard_name(k: int) -> str:
        return f"shards/{k:06d}.tar"

    # intermediate state
    def input_part(self, k: int) -> Path:
        return self.work / "input" / f"part-{k:06d}.parquet"

    def segment_part(self, s: int, k: int) -> Path:
        return self.work / f"segment{s}" / f"part-{k:06d}.parquet"

    def crash_dir(self, s: int, k: int | None = None) -> Path:
        """Crash markers of segment s (of its part k): curate.crash_isolation; cleared when a session starts."""
        d = self.crashes / f"segment{s}"
        return d if k is None else d / f"part-{k:06d}"

    def job_dir(self, j: int) -> Path:
        return self.work / f"job{j}"

    def job_part(self, j: int, k: int) -> Path:
        return self.job_dir(j) / f"part-{k:06d}.parquet"

    def done_meta_parts(self) -> set[int]:
        return {int(p.stem.split("-")[1]) for p in storage.glob(self.meta, "part-*.parquet")}

    def parts_problems(self, manifest: Manifest, names: set[str] | None = None) -> list[str]:
        """The meta parts (`names`, default: a listing of meta/) against the manifest's parts, an unfinished
        retry's staged parts left out: a part it lists that meta/ lacks lost its rows; a meta part it does
        not list holds rows no pass made (a copy from another run). One owner for `curate validate` and for
        the readers that must not pass such a run off as whole (query, inspect, export, reshard): a listing,
        no reads."""
        if names is None:
            names = {p.name for p in storage.glob(self.meta, "part-*.parquet")}
        listed = {self.meta_part(k).name for k in manifest.settled().parts}
        out = []
        if missing := sorted(listed - names):
            out.append(f"manifest.json lists {len(missing)} part(s) that meta/ does not hold (e.g. {missing[0]})")
        if extra := sorted(names - listed):
            out.append(f"meta/ holds {len(extra)} part(s) that manifest.json does not list (e.g. {extra[0]})")
        return out

    def write_sizes(self) -> dict[str, int]:
        """Write sizes.json ({"000000.tar": n}, the format open_clip_train reads) from meta/: kept rows per shard."""
        import pyarrow.dataset as pads

        sizes = {p.name: 0 for p in storage.glob(self.shards, "*.tar")}
        parts = storage.glob(self.meta, "part-*.parquet")
        if parts:
            t = storage.dataset(parts).to_table(columns=["shard"], filter=pads.field("status") == "ok")
            for row in t.group_by("shard").aggregate([("shard", "count")]).to_pylist():
                sizes[Path(row["shard"]).name] = row["shard_count"]
        sizes = dict(sorted(sizes.items()))
        atomic.write_bytes(self.sizes, json.dumps(sizes, indent=1).encode())
        return sizes

    def shard_digests(self) -> dict[str, str]:
        """{"shards/000000.tar": sha256} as each committed part recorded it when its shard was written."""
        from curate.io import checksums

        out = {}
        for p in storage.glob(self.meta, "part-*.parquet"):
            digest = checksums.recorded(p)
            if digest is not None:
                out[self.shard_name(int(p.stem.split("-")[1]))] = digest
        return dict(sorted(out.items()))

    def write_shard_sums(self) -> None:
        """shards.sha256 from the meta parts' digests, for `cd OUT && sha256sum -c shards.sha256`."""
        lines = "".join(f"{digest}  {name}\n" for name, digest in self.shard_digests().items())
        atomic.write_bytes(self.shard_sums, lines.encode())

    def exists(self) -> bool:
        return self.manifest_path.exists()

    def load_manifest(self) -> Manifest:
        """The run's typed manifest; ManifestError (one line) when manifest.json is unreadable or malformed."""
        try:
            text = self.manifest_path.read_bytes()
        except OSError as err:
            raise ManifestError(f"cannot read {self.manifest_path}: {err.strerror or err}") from None
        return Manifest.from_json(text, str(self.manifest_path))

    def save_manifest(self, manifest: Manifest) -> None:
        manifest.updated = now()
        atomic.write_bytes(self.manifest_path, manifest.to_json())

    def counts(self) -> Counts:
        """The funnel counted from meta/ (rows, kept, dropped and failed by stage/reason, derived rows)."""
        from curate import schema

        ds = storage.dataset(storage.glob(self.meta, "part-*.parquet"))
        t = ds.to_table(columns=["status", "stage", "reason"])
        c = schema.counts(t)
        out = Counts(rows=t.num_rows, kept=sum(c[schema.OK].values()), dropped=c[schema.DROPPED],
                     failed=c[schema.FAILED])
        if schema.PARENT_COLUMN in ds.schema.names:  # rows = input rows + rows derived from them (clips)
            out.derived = t.num_rows - schema.input_rows(ds.to_table(columns=[schema.PARENT_COLUMN]))
        return out

    def finalize(self, manifest: Manifest, report: bool = True, extra_sections: list | None = None) -> Manifest:
        """Mark a run whose meta/ parts are all committed complete: counts from meta/, sizes.json, the manifest,
        then the report. One method, so a run, a retry and a refilter finish the same way; the report is a view
        of finished data, so failing to draw it never fails the run."""
        manifest.counts = self.counts()
        self.write_sizes()
        self.write_shard_sums()
        if manifest.batches:
            manifest.batches[-1].status = COMPLETE
        manifest.status = COMPLETE
        self.save_manifest(manifest)
        if report:
            self.write_report(extra_sections)
        return manifest

    def write_report(self, extra_sections: list | None = None) -> Path | None:
        """report.html from the finished data; a warning, never an error, when it cannot be drawn."""
        try:
            from curate.report import write_report

            return write_report(self.root, extra_sections)
        except Exception as err:  # noqa: BLE001 - the report is a view; the data is already written
            log.warning("could not write %s: %s", self.report, err)
            return None


def versions() -> dict[str, str]:
    """Versions of what produced the data, for the manifest."""
    out = {"python": platform.python_version()}
    for dist in ("curate", "ray", "pyarrow", "img2dataset", "webdataset", "duckdb", "torch", "open_clip_torch"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out
