"""The only module that imports Ray (curate.lean_ray starts a local one for it): turns a recipe into Ray Data
pipelines over input parts.

Shape of a run:
  input list --split--> _work/input/part-k  (one part = samples_per_shard input rows)
  segment 0: load part -> stage -> stage ... -> checkpoint _work/segment0/part-k   (map_batches, streaming)
  job:       read the columns it needs from every part -> map -> group by key (Ray shuffle) -> reduce
             -> [graph jobs: edges -> connected components as shuffle rounds] -> decisions per part
             (runs of at most ray.job_local_max_rows rows do the same in the driver, without the shuffles)
  segment 1: load part + apply decisions -> stage ... -> commit shards/k.tar + meta/part-k.parquet
One Ray block carries one whole part, so each part is committed atomically and exactly once, and
--resume redoes only parts whose commit marker (the meta part) is missing.
"""
from __future__ import annotations

import base64
import dataclasses
import functools
import json
import logging
import os
import time
import warnings
import zlib
import contextlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import yaml

from curate import crash_isolation, lean_ray, plugins, progress, ray_crash, schema
from curate.io import atomic, reader, storage, tars
from curate.io.manifest import (COMMITTING, COMPLETE, RETRY, RUNNING, Batch, InputInfo, Manifest, ManifestError,
                                PartInfo, recipe_hash)
from curate.io.rundir import RunDir, RunDirBusy, versions
from curate.dedup import graph
from curate.io.shard_writer import write_part
from curate.recipe import Recipe, RecipeError, Scheduling, saved_recipe, segments
from curate.report.thumbs import write_dropped
from curate.stage import IN_PROCESS_CPUS, Job, Stage, StageContractError, apply_decisions, fit_sample, prepare_records, reduce_records

log = logging.getLogger("curate")


IN_PROCESS_MARK = "in_process"  # in _work/crashes/: the session runs its stages in the driver (no Ray)


class RunError(Exception):
    """A problem that stops a run before or between parts; the message is one line for the user."""


class StageSetupError(RunError):
    """A stage's model could not load in a worker: what to do next depends on whether the run kept any work
    (finish with --resume) or made nothing and was removed (run again); `Runner.start` words it."""


class RunBusy(RunError):
    """Another process is writing the run directory: refused, and nothing of theirs is cleaned up."""


# ----------------------------------------------------------------------------------------------------------
# worker-side functions (module level so Ray can pickle them by reference)


def _parts_of(table: pa.Table) -> list[tuple[int, pa.Table]]:
    """Split a block into its parts (Ray may hand one task several parts' blocks at once)."""
    parts = pc.unique(table.column("part")).to_pylist()
    if len(parts) == 1:
        return [(parts[0], table)]
    return [(k, table.filter(pc.equal(table.column("part"), k))) for k in sorted(parts)]


def _load_parts(batch: pa.Table, *, root: str, seg: int, job: Job | None, job_index: int | None,
                run_schema: pa.Schema) -> pa.Table:
    run = RunDir(root)
    out, counts = [], {}
    for k in batch.column("part").to_pylist():
        if seg == 0:
            t = storage.read_table(run.input_part(k))
        else:
            t = storage.read_table(run.segment_part(seg - 1, k))
        t = schema.conform(t, run_schema)
        if seg == 0:  # every input row starts in play
            t = t.set_column(t.column_names.index("status"), "status", pc.fill_null(t.column("status"), schema.OK))
        if job is not None:
            t0, before = time.time(), t
            t = apply_decisions(t, job, storage.read_table(run.job_part(job_index, k)))
            counts[str(k)] = {job.name: progress.stage_counts(before, t, job.name, time.time() - t0)}
        out.append(t)
    return progress.carry(pa.concat_tables(out), counts)


@dataclass(frozen=True)
class _CrashSite:
    """Where one stage of one segment keeps its crash markers (curate.crash_isolation), so that a row which
    kills its worker process fails alone when Ray tries the part again."""
    root: str
    seg: int
    key: str  # the stage's position and name: a recipe may repeat a stage
    stage: str
    limit: int  # ray.max_part_crashes
    bound: crash_isolation.CallBound | None = None  # how long one call of the stage may run
    in_driver: bool = False  # the run's own process (no Ray): a call past its bound cannot end the process

    def watch(self, k: int) -> crash_isolation.CrashWatch:
        return crash_isolation.CrashWatch(RunDir(self.root).crash_dir(self.seg, k), self.key,
                                          f"stage {self.stage} on part {k}", self.limit, self.bound, self.in_driver)

    def setup(self, what: str):
        return crash_isolation.setup_guard(RunDir(self.root).crash_dir(self.seg), self.key, what)


def _process(stage: Stage, batch: pa.Table, run_schema: pa.Schema, sink=None, site: _CrashSite | None = None) -> pa.Table:
    out = []
    counts = progress.carried(batch)  # what the stages before this one did to these parts
    for k, part in _parts_of(batch):
        t0 = time.time()
        with progress.reporting(sink, stage.name, k), crash_isolation.watching(site and site.watch(k)):
            result = stage.run(part)  # a row the stage raises on (or dies on) fails alone: Stage.run isolates it
        if stage.adds_rows:
            _check_derived(stage, part, result)
        elif result.num_rows != part.num_rows:
            raise RuntimeError(f"stage {stage.name} returned {result.num_rows} rows for {part.num_rows}")
        c = progress.stage_counts(part, result, stage.name, time.time() - t0)
        counts.setdefault(str(k), {})[stage.name] = c
        if sink is not None:
            sink.stage_done.remote(stage.name, k, c)
        out.append(schema.conform(result, run_schema))
    return progress.carry(pa.concat_tables(out), counts)


def _check_derived(stage: Stage, part: pa.Table, result: pa.Table) -> None:
    """A row-adding stage keeps its input rows (same uids, same order) and appends rows that name a parent."""
    n = part.num_rows
    if result.num_rows < n or not result.column("uid").slice(0, n).equals(part.column("uid")):
        raise RuntimeError(f"stage {stage.name} must return its {n} input rows first, in order")
    if result.num_rows > n:
        parents = result.column(schema.PARENT_COLUMN).slice(n)
        if parents.null_count or not pc.all(pc.is_in(parents, value_set=part.column("uid").combine_chunks())).as_py():
            raise RuntimeError(f"stage {stage.name} added rows without a parent_uid from this part")


def _wrapped_line(err: BaseException, cls: type[BaseException]) -> str | None:
    """The first line of a `cls` error anywhere in err's chain, as Ray wraps a worker's exception
    (ActorDiedError, RayTaskError), or in the remote traceback's text where Ray kept only that."""
    import re

    from curate.environment_errors import chain

    for e in chain(err):
        if isinstance(e, cls):
            return str(e).splitlines()[0]
    m = re.search(rf"{cls.__name__}: ([^\n]+)", str(err))
    return m.group(1) if m else None


def _setup_error(err: BaseException) -> str | None:
    """The one-line message of a model-load error that Ray wrapped, if any."""
    from curate.models.clip import ModelLoadError

    return _wrapped_line(err, ModelLoadError)


def _setup(stage: Stage) -> None:
    """stage.setup(), with an exception from it (a plugin's missing file, a bad setting only setup sees) turned
    into a ModelLoadError naming the stage, which the run reports in one line. Raised plainly in a Ray worker
    it reached the user as Ray's task header, or, from a model actor's constructor, as "a worker process
    died ... (the OOM killer)"."""
    from curate.models.clip import ModelLoadError

    try:
        stage.setup()
    except ModelLoadError:
        raise
    except Exception as err:  # noqa: BLE001 - any error of the stage's own setup code: named, cause kept
        first = str(err).splitlines()[0] if str(err) else ""
        raise ModelLoadError(f"stage {stage.name} could not set up: {type(err).__name__}: {first}") from err


def _run_stage_task(batch: pa.Table, *, stage: Stage, run_schema: pa.Schema, sink=None,
                    site: _CrashSite | None = None) -> pa.Table:
    # task stages arrive freshly unpickled in every task, so their (cheap) setup runs per task;
    # model stages run on _StageActor, which sets up once
    _setup(stage)
    return _process(stage, batch, run_schema, sink, site)


def _in_session(fn: Callable) -> Callable:
    """`fn`, run inside this process's fetch session wherever Ray runs it (storage.fetch_session).

    Why carry the session with the task instead of the workers' environment: a Ray the caller started (a
    notebook's `ray.init()` before Pipeline.run) has workers forked before the run's session existed, and
    a runtime_env curate cannot change; a per-task runtime_env would need workers of its own (Ray keys
    workers by runtime_env: about a second more per run, measured). Without the session, each stage call
    there fetched a file with no version again, and two parts could read different bytes."""
    session = os.environ.get(storage.FETCH_SESSION_ENV)

    @functools.wraps(fn)
    def in_session(*args, **kwargs):
        with storage.fetch_session(session):
            return fn(*args, **kwargs)

    return in_session


class _StageActor:
    """Long-lived worker for model stages: setup (model load) happens once per actor. Ray restarts an actor
    whose process died; a load that keeps killing it stops the run (crash_isolation.setup_guard). Setup and
    every call run inside the driver's fetch session (`session`, see _in_session)."""

    def __init__(self, stage: Stage, run_schema: pa.Schema, sink=None, site: _CrashSite | None = None,
                 session: str | None = None):
        self.stage, self.run_schema, self.sink, self.site, self.session = stage, run_schema, sink, site, session
        with storage.fetch_session(session), site.setup(stage.name) if site else contextlib.nullcontext():
            _setup(stage)

    def __call__(self, batch: pa.Table) -> pa.Table:
        with storage.fetch_session(self.session):
            return _process(self.stage, batch, self.run_schema, self.sink, self.site)


def _commit_parts(batch: pa.Table, *, root: str, seg: int, final: bool, run_schema: pa.Schema,
                  expected: dict[int, int], caption_policy: str = "both", dropped_thumbnails: int = 0,
                  final_root: str | None = None) -> pa.Table:
    """Write each part's checkpoint, or (final) its shard + meta part: into the run, or into `final_root`
    (a --retry-failed's staging RunDir, moved into place once the whole retry is committed)."""
    run = RunDir(root)
    out = RunDir(final_root) if final_root else run
    rows = []
    counts = progress.carried(batch)
    for k, part in _parts_of(batch):
        if schema.input_rows(part) != expected[k]:  # rows derived by a stage (clips) are on top
            raise RuntimeError(f"part {k} arrived with {schema.input_rows(part)} input rows, expected {expected[k]}")
        order = part.column("row")
        if part.num_rows > 1 and not pc.all(pc.greater(order.slice(1), order.slice(0, part.num_rows - 1))).as_py():
            part = part.take(pc.sort_indices(part, sort_keys=[("row", "ascending")]))
        if final:
            # dropped rows' image bytes go with this commit: keep the report's sample of them first
            write_dropped(out.thumbs_part(k), part, dropped_thumbnails)
            rows.append(write_part(out, k, part, run_schema, caption_policy))
        else:
            atomic.write_parquet(schema.conform(part, run_schema), run.segment_part(seg, k))
            rows.append({"part": k, "rows": part.num_rows, "kept": 0, "failed": 0, "images": 0})
        rows[-1]["stages"] = json.dumps(counts.get(str(k), {}))
    return pa.Table.from_pylist(rows, schema=pa.schema([("part", pa.int64()), ("rows", pa.int64()),
                                                       ("kept", pa.int64()), ("failed", pa.int64()),
                                                       ("images", pa.int64()), ("stages", pa.string())]))


def _read_part(run: RunDir, k: int, seg: int, columns: list[str], prior: bool) -> pa.Table:
    """A job's input columns of one part: this batch's checkpoint, or an earlier batch's kept rows (part -1)."""
    if not prior:
        return storage.read_table(run.segment_part(seg, k), columns=columns)
    # meta/ holds no payload (image bytes): a job that reads it gets it back from the part's shard
    payload = [c for c in columns if c in schema.PAYLOAD_COLUMNS]
    meta_cols = [c for c in columns if c not in payload]
    if payload:
        meta_cols += [c for c in ("key", "image_format") if c not in meta_cols]
    t = storage.read_table(run.meta_part(k), columns=meta_cols, filters=[("status", "=", schema.OK)])
    for c in payload:
        t = t.append_column(c, _payload_from_shard(run.shard(k), t, c))
    t = t.select(columns)
    return t.set_column(t.column_names.index("part"), "part", pa.array([-1] * t.num_rows, pa.int32()))


def _payload_from_shard(tar_path, t: pa.Table, column: str) -> pa.Array:
    """Column `column` (image bytes) of kept rows `t`, read from their committed WebDataset tar; a tar cut
    short raises tars.TruncatedTar (storage.open_tar) where its tail's rows were read back with no image."""
    if column != "image":
        raise RunError(f"an earlier batch's {column!r} bytes are not kept in meta/; this job cannot be re-run "
                       "against it with --retry-failed")
    want = {f"{key}.{fmt or 'jpg'}": i for i, (key, fmt) in
            enumerate(zip(t.column("key").to_pylist(), t.column("image_format").to_pylist()))}
    out: list = [None] * t.num_rows
    if want:
        with storage.open_tar(tar_path) as tar:
            for member in tar:
                i = want.get(member.name)
                if i is not None:
                    out[i] = tar.extractfile(member).read()
    return pa.array(out, pa.binary())


def _job_prepare(batch: pa.Table, *, job: Job, buckets: int, root: str, seg: int, columns: list[str],
                 keys_only: bool = False, keep: list | None = None) -> pa.Table:
    """Map side of a job: read only the columns it needs from each part, emit keyed records.

    keys_only: emit just (key, bucket) (the key pre-pass). keep: object refs to the pre-pass' tables of keys
    seen at least twice; records with any other key are dropped before the shuffle."""
    run = RunDir(root)
    out = [prepare_records(job, _read_part(run, k, seg, columns, prior))
           for k, prior in zip(batch.column("part").to_pylist(), batch.column("prior").to_pylist())]
    records = pa.concat_tables(out, promote_options="default")
    if keys_only:
        records = records.select(["key"])
    elif keep is not None:
        import ray

        multi = [t.column("key").combine_chunks() for t in ray.get(keep) if t.num_rows]
        multi = pa.concat_arrays(multi) if multi else pa.array([], pa.int64())
        records = records.filter(pc.is_in(records.column("key"), value_set=multi))
    return _bucketed(records, buckets)


def _multi_keys(group: pa.Table) -> pa.Table:
    """Reduce side of the key pre-pass: the keys of one bucket that occur at least twice."""
    counts = group.group_by("key").aggregate([("key", "count")])
    return counts.filter(pc.greater(counts.column("key_count"), 1)).select(["key"])


def _bucketed(records: pa.Table, buckets: int) -> pa.Table:
    key = records.column("key")
    if pa.types.is_integer(key.type) and key.null_count == 0:
        # integer keys (already hashes, e.g. LSH band keys): vectorised and stable
        b = (key.to_numpy().astype("int64").view("uint64") % buckets).astype("int32")
        return records.append_column("bucket", pa.array(b, pa.int32()))
    # crc32 is stable across processes (Python's hash() is salted per process)
    b = [zlib.crc32(str(k).encode()) % buckets for k in key.to_pylist()]
    return records.append_column("bucket", pa.array(b, pa.int32()))


def _job_reduce(group: pa.Table, *, job: Job) -> pa.Table:
    return reduce_records(job, group.drop_columns(["bucket"]))


def _star_map(batch: pa.Table, *, kind: str, buckets: int) -> pa.Table:
    t = graph.star_map(batch, kind)
    b = [zlib.crc32(x.encode()) % buckets for x in t.column("src").to_pylist()]
    return t.append_column("bucket", pa.array(b, pa.int32()))


def _star_reduce(group: pa.Table, *, kind: str) -> pa.Table:
    group = group.drop_columns(["bucket"])
    return graph.large_star(group) if kind == "large" else graph.small_star(group)


def _stat_rows(out: pa.Table) -> pa.Table:
    """The per-reduce-call stat rows of a star round (one per call: the driver reads O(buckets) numbers)."""
    return out.filter(pc.is_null(out.column("src"))).select(["bad"])


def _partitions(buckets: int) -> int:
    """Hash-shuffle partitions for a group-by over `buckets` keys (Ray's default of 200 costs seconds of
    start-up for a handful of keys)."""
    return max(1, min(buckets, 64))


def _components_ray(edges, buckets: int):
    """Connected components of an edge Dataset as large-star / small-star shuffle rounds (curate/dedup/graph.py):
    (labels Dataset of (node, root), rounds). The driver sees one number per round."""
    if edges.count() == 0:
        return None, 0
    t = edges
    for rounds in range(1, graph.MAX_ROUNDS + 1):
        out = t.map_batches(_star_map, batch_format="pyarrow", fn_kwargs=dict(kind="large", buckets=buckets))
        out = out.groupby("bucket", num_partitions=_partitions(buckets)).map_groups(
            _star_reduce, batch_format="pyarrow", fn_kwargs=dict(kind="large")).materialize()
        if not sum(r["bad"] for r in out.map_batches(_stat_rows, batch_format="pyarrow").take_all()):
            return out.map_batches(graph.star_labels, batch_format="pyarrow"), rounds
        t = out.map_batches(_star_map, batch_format="pyarrow", fn_kwargs=dict(kind="small", buckets=buckets))
        t = t.groupby("bucket", num_partitions=_partitions(buckets)).map_groups(
            _star_reduce, batch_format="pyarrow", fn_kwargs=dict(kind="small")).materialize()
    raise RunError(f"connected components did not converge in {graph.MAX_ROUNDS} rounds")


def _labels_one_task(*edge_tables: pa.Table) -> pa.Table:
    """Connected components of every edge in one worker (graph.component_labels): for edge lists that fit
    one process, far cheaper than shuffle rounds, and the driver still never sees the edges."""
    tables = [t for t in edge_tables if t.num_rows]
    return graph.component_labels(pa.concat_tables(tables) if tables else graph.EDGE_SCHEMA.empty_table())


def _decide(labels: pa.Table, *, job: Job) -> pa.Table:
    return job.decide(labels)


def _write_job_part(group: pa.Table, *, root: str, s: int, decision_schema: pa.Schema) -> pa.Table:
    """One part's decisions, written by the worker that holds them."""
    k = group.column("part")[0].as_py()
    atomic.write_parquet(group.select(decision_schema.names).cast(decision_schema), RunDir(root).job_part(s, k))
    return pa.table({"part": [k], "rows": [group.num_rows]})


# ----------------------------------------------------------------------------------------------------------
# driver side


def _ray_error_line(err: BaseException) -> str:
    """The useful line of a failed ray.init: its cause when that is an authentication failure (clusters from
    `ray start` use token auth by default, and the outer error only says 'Failed to connect')."""
    cause = err.__cause__
    if cause is not None and "auth" in type(cause).__name__.lower() + str(cause).lower():
        return ("the cluster requires token authentication: set RAY_AUTH_MODE=token and the cluster's token "
                "(RAY_AUTH_TOKEN, or the file ~/.ray/auth_token)")
    return str(err).splitlines()[0]


def _check_reachable(address: str) -> None:
    """Refuse at once an address where nothing listens: ray.init retries one for minutes."""
    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if address in ("auto", "local") or not host or not port.isdigit():
        return
    import socket

    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=5):
            pass
    except OSError as err:
        raise RunError(f"cannot reach Ray at {address}: {err.strerror or err}; start the cluster (ray start --head), "
                       "fix --ray-address / RAY_ADDRESS, or unset RAY_ADDRESS to start a local Ray") from None


def _keeps_work(run: RunDir) -> bool:
    """Whether the run keeps its _work folder (output.keep_work in its saved recipe). A retry of such a run
    leaves what was there and removes only its own parts; otherwise a complete run has no _work, and a retry
    (its staging, or dropping it) owns the whole folder. Unreadable: keep what is there."""
    try:
        return bool(saved_recipe(run.recipe).get("output", {}).get("keep_work"))
    except RecipeError:
        return True


def _retry_next(root) -> str:
    """What to do with a --retry-failed that stopped before finishing."""
    return (f"finish the retry with: curate run --resume -o {root}  (add --set to fix a setting), or drop it with: "
            f"curate run --retry-failed {root} --abandon")


# files a desktop leaves in any folder it shows: an output folder holding only these counts as empty
_OS_LITTER = frozenset({".DS_Store", "Thumbs.db", "desktop.ini", ".directory"})

_RESUME_FIX = ("fix the recipe (settings of stages no row has reached may change) or the environment, then finish "
               "with --resume")


TIME_BOUNDS = ("call_timeout_s", "row_timeout_s")


def _drop_time_bounds(recipe: dict) -> None:
    """A resumed run may change the stage calls' time bounds (ray's and each stage's): they say how long a
    call may run, not what a finished call makes, and raising them is how a run stopped by a stage that is
    slower than its bound goes on (crash_isolation.StageCrashLoop's advice)."""
    for section in [recipe.get("ray") or {}, *(cfg for st in recipe.get("stages") or [] for cfg in st.values()
                                               if isinstance(cfg, dict))]:
        for key in TIME_BOUNDS:
            section.pop(key, None)


def _first_difference(a, b, path: str = "") -> str:
    """Where two recipe dicts first differ, as `stages[3].clip_score.pretrained: 'x' -> 'y'` (for the refusal)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            if a.get(k) != b.get(k):
                return _first_difference(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return _first_difference(x, y, f"{path}[{i}]")
    return f"{path}: {a!r} -> {b!r}"[:300]


def _mentioned(recipe: Recipe, steps: list[int]) -> set[str]:
    """Every string in these steps' settings, also as a resolved path: what a named file of theirs is recorded
    as, even once the file is gone (so "is gone" is still caught for steps that did not change)."""
    out: set[str] = set()
    for v in recipe.setting_strings(steps):
        out.add(v)
        with contextlib.suppress(OSError, ValueError):
            out.add(str(Path(v).expanduser().resolve()))
    return out


def _own_session_dir(ray) -> Path | None:
    """The session folder (/tmp/ray/session_...) of a local Ray this process started, if Ray says where."""
    try:
        return Path(ray._private.worker._global_node.get_session_dir_path())
    except Exception:  # noqa: BLE001 - a Ray that moved the name: keep its folder
        return None


def _remove_session_dir(session: Path) -> None:
    """Remove a finished local run's Ray session folder (its logs, sockets, spill files): each run left one
    in /tmp/ray (~0.2-1 MB, hundreds over a day of runs), outside the output folder. Kept when the run failed
    (its logs are what `check ... Ray's logs` points at) and with -v / CURATE_RAY_LOGS=1."""
    import shutil

    latest = session.parent / "session_latest"
    with contextlib.suppress(OSError):
        if latest.is_symlink() and Path(os.readlink(latest)).name == session.name:
            latest.unlink()
    shutil.rmtree(session, ignore_errors=True)


def _host_sigterm_handler():
    """The SIGTERM handler the host program installed (a Python callable), or None (none, or not the main thread)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    handler = signal.getsignal(signal.SIGTERM)
    return handler if callable(handler) else None


def _restore_sigterm_handler(handler) -> None:
    """Put back the host's SIGTERM handler after ray.init, which replaces it twice: a Python handler that
    exits, and the C++ failure handler that prints a stack dump and kills the process (exit -15, nothing
    committed after). The `curate` CLI's handler stops the run like Ctrl-C and says how to resume it."""
    import signal

    if handler is not None:
        signal.signal(signal.SIGTERM, handler)


@contextmanager
def _fewer_parts_than_concurrency_is_fine():
    """Hide Ray Data's UserWarning that a map stage got fewer input blocks than its `concurrency` (added in
    ray-project/ray#51968). A curate block is one whole part, and a stage's concurrency is an upper bound,
    so a run with fewer parts than that (any small input) simply starts fewer tasks or actors; the warning
    told Python API and CLI users to tune `override_num_blocks`, a Ray Data knob curate does not expose.
    Shown again with -v / CURATE_RAY_LOGS=1 like Ray's other warnings."""
    with warnings.catch_warnings():
        for what in ("maximum number of concurrent tasks", "minimum number of concurrent actors"):
            warnings.filterwarnings("ignore", message=f"The {what} for '.*' is set to", category=UserWarning)
        yield


@contextmanager
def ray_session(address: str | None, num_cpus: int | None = None, object_store_mb: int | None = None,
                runtime_env: dict | None = None, crash_retries: int = ray_crash.CRASH_RETRIES):
    """Connect to `address` (or RAY_ADDRESS), reuse an initialised Ray, or start a local one. `runtime_env`
    (e.g. py_modules of user stages) applies when this call starts or connects Ray; a Ray the caller
    initialised keeps its own."""
    import ray

    started = lean = False
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS") or None
        verbose = progress.ray_verbose()
        # (RAY_BACKEND_LOG_LEVEL is left alone: setting it makes every Ray process print a line saying so)
        # Ray's start-up warnings (token auth, ...) and the workers' logs only with -v (or CURATE_RAY_LOGS=1)
        kwargs = dict(include_dashboard=False, logging_level=logging.INFO if verbose else logging.ERROR,
                      log_to_driver=verbose, configure_logging=True)
        if runtime_env:
            kwargs["runtime_env"] = runtime_env
        sigterm = _host_sigterm_handler()
        try:
            if address:
                _check_reachable(address)
                if storage.worker_env():  # a cluster's workers do not see this shell: give them its store settings
                    env = dict(kwargs.get("runtime_env") or {})  # keeps py_modules of user stages
                    env["env_vars"] = {**(env.get("env_vars") or {}), **storage.worker_env()}
                    kwargs["runtime_env"] = env
                ray.init(address=address, **kwargs)
            else:
                if object_store_mb:
                    kwargs["object_store_memory"] = object_store_mb * 1024 * 1024
                # only the processes a local run uses (no API server, autoscaler monitor, log monitor)
                lean = lean_ray.lean_local_init(num_cpus=num_cpus, keep_log_monitor=verbose, **kwargs)
        except RunError:
            raise
        except SystemExit as err:  # a SIGTERM while ray.init runs meets Ray's own handler: sys.exit(15)
            import signal

            if err.code != signal.SIGTERM or sigterm is None:
                raise
            _restore_sigterm_handler(sigterm)
            sigterm(signal.SIGTERM, None)  # the host's handling (the CLI: one line, exit 143)
            raise
        except Exception as err:  # noqa: BLE001 - whatever ray.init raises is about the machine or the cluster
            where = address or "a local Ray instance"
            fix = ("check the address and that the cluster runs" if address else
                   "check free memory and disk (/tmp/ray) and Ray's logs in /tmp/ray/session_latest/logs")
            raise RunError(f"cannot start or reach Ray at {where}: {_ray_error_line(err)} ({fix})") from None
        _restore_sigterm_handler(sigterm)
        started = True
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    # one block = one whole part: never split a part's rows across blocks
    ctx.target_max_block_size = None
    # Ray Data logs a failing task's error (and a stack trace) before raising it in the driver, where the
    # CLI prints it as one line: keep its logs for CURATE_RAY_LOGS=1
    logging.getLogger("ray.data").setLevel(logging.WARNING if progress.ray_verbose() else logging.CRITICAL)
    # a lean local Ray: Ray Data's stats and autoscaling-coordinator actors stay in this process
    session = _own_session_dir(ray) if started and not address else None
    ok = False
    quiet = contextlib.nullcontext() if progress.ray_verbose() else ray_crash.quiet_death_notices()
    few = contextlib.nullcontext() if progress.ray_verbose() else _fewer_parts_than_concurrency_is_fine()
    with lean_ray.data_in_driver() if lean else contextlib.nullcontext(), \
            ray_crash.bounded_crash_retries(crash_retries), quiet, few:
        try:
            yield ray
            ok = True
        finally:
            if started:
                ray.shutdown()
            if ok and session is not None and not progress.ray_verbose():
                _remove_session_dir(session)


def stage_plan(recipe: Recipe) -> list[dict]:
    """What a run of `recipe` executes, worked out without Ray (for `curate run --dry-run`).

    Segments become Ray Data pipelines of map_batches calls (see Runner._run_segment, _map_stage); Ray Data
    fuses a task map into the next map when both ask for the same resources and the next is a task map of the
    same concurrency or an actor pool (a task map of unset concurrency fuses into any pool); nothing fuses
    after an actor pool (ray.data operator_fusion, Ray 2.x). Jobs run between segments."""
    segs, jobs = segments(recipe)
    plan: list[dict] = []
    for s, seg in enumerate(segs):
        final = s == len(segs) - 1
        first = "load input part" if s == 0 else f"load checkpoint + apply {recipe.steps[jobs[s - 1]].name} decisions"
        ops = [{"compute": "tasks", "size": None, "resources": (1.0, 0.0), "stages": [first]}]
        for i in seg:
            step, sched = recipe.steps[i], recipe.scheduling[i]
            actor = bool(step.uses_model or sched.num_gpus)
            res = (1.0 if sched.num_cpus is None else float(sched.num_cpus), float(sched.num_gpus or 0))
            ops.append({"compute": "actor pool" if actor else "tasks",
                        "size": (sched.concurrency or 1) if actor else sched.concurrency, "resources": res,
                        "stages": [step.name]})
        ops.append({"compute": "tasks", "size": None, "resources": (1.0, 0.0),
                    "stages": ["write shards + meta" if final else "write checkpoint"]})
        fused = [ops[0]]
        for op in ops[1:]:
            up = fused[-1]
            same_size = up["size"] == op["size"] or (op["compute"] == "actor pool" and up["size"] is None)
            if up["compute"] == "tasks" and up["resources"] == op["resources"] and same_size:
                fused[-1] = {**op, "stages": up["stages"] + op["stages"]}
            else:
                fused.append(op)
        plan.append({"segment": s, "operators": fused})
        if not final:
            job = recipe.steps[jobs[s]]
            plan.append({"job": job.name, "where": f"in the driver up to {recipe.ray.job_local_max_rows} rows, "
                                                  "else Ray shuffles (map -> group by key -> reduce)"})
    return plan


def plan_lines(plan: list[dict]) -> list[str]:
    """`stage_plan` as text: one line per Ray operator or job."""
    lines = []
    for item in plan:
        if "job" in item:
            lines.append(f"job {item['job']}: whole-dataset step, {item['where']}")
            continue
        lines.append(f"segment {item['segment']} (streams part by part):")
        for n, op in enumerate(item["operators"]):
            cpus, gpus = op["resources"]
            size = f" of {op['size']}" if op["size"] else ""
            res = f"{cpus:g} CPU" + (f", {gpus:g} GPU" if gpus else "")
            lines.append(f"  operator {n + 1}: {' -> '.join(op['stages'])}  [{op['compute']}{size}, {res} each]")
    return lines


def abandon_retry(root) -> Manifest:
    """Drop a --retry-failed that stopped before finishing (`curate run --retry-failed OUT --abandon`): its
    input parts, checkpoints and staged parts go, and manifest.json becomes, byte for byte, the one from
    before the retry. The run's shards and meta/ were never touched by it (the retry stages its parts), so the
    run is exactly as it was. A retry already moving its parts into place cannot be dropped: --resume it.

    Order: the retry's files first, then the manifest (the commit point), then the staging folder; a drop cut
    short is finished by running it again, and a staging folder left behind is cleared by the next retry."""
    run = RunDir(storage.as_path(root))
    if not run.exists():
        raise RunError(f"--abandon: {run.root} holds no run")
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(run.writer_lock())
        except RunDirBusy as err:
            raise RunBusy(str(err)) from None
        try:
            manifest = run.load_manifest()
        except ManifestError as err:
            raise RunError(str(err)) from None
        retry = manifest.pending_retry
        if retry is None:
            last = manifest.batches[-1] if manifest.batches else None
            what = f"its last pass is a {last.kind} ({last.status})" if last else "it has no passes"
            raise RunError(f"--abandon: {run.root} has no unfinished retry to drop ({what})")
        if retry.status == COMMITTING:
            raise RunError(f"--abandon: the retry in {run.root} was moving its finished parts into place when it "
                           f"stopped, so it can no longer be dropped; finish it with: curate run --resume -o {run.root}")
        try:
            before = run.retry_backup.read_bytes()
            Manifest.from_json(before, str(run.retry_backup))
        except (OSError, ManifestError) as err:
            raise RunError(f"--abandon: the manifest from before the retry ({run.retry_backup}) cannot be read "
                           f"({err}); the retry cannot be dropped, finish it with: curate run --resume -o {run.root}") from None
        kept = _keeps_work(run)
        _remove_retry_work(run, retry, kept)
        atomic.write_bytes(run.manifest_path, before)
        storage.rmtree(run.retry_stage if kept else run.work)
        return run.load_manifest()


def _remove_retry_work(run: RunDir, retry: Batch, kept: bool) -> None:
    """The files an unfinished retry wrote outside its staging folder's backup: staged parts, and its input
    parts, checkpoints and decisions in _work (all of _work but the staging folder, unless the run keeps it
    with output.keep_work: then only the retry's part numbers)."""
    staged = run.staged()
    for d in (staged.meta, staged.shards, staged.thumbs, staged.embeddings):  # meta first: the commit markers
        storage.rmtree(d)
    if not kept:
        for p in storage.glob(run.work, "*"):
            if p.name != run.retry_stage.name:
                storage.rmtree(p) if p.is_dir() else p.unlink()
        return
    lo, hi = retry.parts
    names = {run.input_part(k).name for k in range(lo, hi + 1)}  # the part file name of every stage folder
    for p in list(run.work.rglob("part-*")):
        if p.name in names and run.retry_stage not in p.parents:
            storage.rmtree(p) if p.is_dir() else p.unlink()
    storage.rmtree(run.crashes)


class Runner:
    """Executes a validated recipe into a run directory, resumably.

    on_progress(label, done, total): parts committed per segment, and jobs (0/1, 1/1).
    on_rows(event): about once a second, row counts per stage of the running segment (see
    curate.progress.ProgressView.rows); giving it starts a small progress actor, not giving it costs nothing."""

    def __init__(self, recipe: Recipe, *, ray_address: str | None = None,
                 on_progress: Callable[[str, int, int], None] | None = None,
                 on_rows: Callable[[dict], None] | None = None, runtime_env: dict | None = None):
        self.recipe = recipe
        # user stages' packages travel to the Ray workers, which unpickle the stages by importing them
        self.runtime_env = plugins.runtime_env_for(recipe.steps, runtime_env)
        if not recipe.output.path:
            raise RunError("no output folder: pass --output DIR or set output.path in the recipe")
        # Ray workers do not share the driver's working directory (an existing cluster, RAY_ADDRESS), so a
        # relative local output folder is made absolute here, once, for every path derived from it.
        root = recipe.output.path
        try:
            self.run = RunDir(root if "://" in str(root) else os.path.abspath(root))
        except storage.StorageError as err:
            raise RunError(str(err)) from None
        self.ray_address = ray_address
        self.on_progress = on_progress or (lambda label, done, total: None)
        self.on_rows = on_rows
        self.segs, self.jobs = segments(recipe)
        self._phase: dict = {}
        self._sink = None

    # -- preflight ------------------------------------------------------------------------------------
    def _check_models(self) -> None:
        """Model weights that cannot be had here (a hub tag neither cached nor reachable) stop the run now,
        in one line: found out in the first worker to load the model, they failed it after the input was
        split and parsed and images downloaded (curate/models/clip_settings.py). So does a model server that
        is down, refuses the key or does not serve the model (curate/endpoint/preflight.py): found out by
        the rows, every one was sent, retried and failed."""
        for step in self.recipe.steps:
            for check in ("weights_problem", "endpoint_problem"):
                why = getattr(step, check)() if callable(getattr(step, check, None)) else None
                if why:
                    raise RunError(why)

    def _check_input(self) -> reader.InputSpec:
        spec = self.recipe.input_spec()
        if not spec.path:
            raise RunError("no input: pass --input PATH or set input.path in the recipe")
        try:
            carries_images = reader.check_input(spec)
        except reader.InputError as err:
            raise RunError(str(err)) from None
        names = {step.name for step in self.recipe.steps}
        if "download" in names and reader.resolve_format(spec) in reader.IMAGE_FORMATS:
            raise RunError(f"the input {spec.path} carries its images: use the load_image stage instead of download")
        if "download" in names:  # a URL list with no URL failed every row download_invalid_url (exit 3)
            try:
                why = reader.url_problem(spec)
            except reader.InputError as err:
                raise RunError(str(err)) from None
            if why and carries_images:
                raise RunError(f"the input {spec.path} carries its images and {why}: this recipe downloads by URL; "
                               f"start it with load_image instead of download (copy pipelines/image_text.yaml and "
                               f"replace `- download: ...` with `- load_image: {{}}`; the image column is "
                               f"{self._image_col(spec)!r}, input.image_col)")
            if why:
                raise RunError(f"the input {spec.path} {why}: nothing to download; set input.url_col to the URL "
                               "column, or, for image bytes in the input, set input.image_col and use load_image "
                               "instead of download")
        if not carries_images and "load_image" in names:
            raise RunError(f"load_image needs input that carries images (input.format webdataset or images, or "
                           f"Parquet with image bytes); {spec.path} has none")
        return spec

    @staticmethod
    def _image_col(spec: reader.InputSpec) -> str | None:
        """The input column load_image would read the image bytes from."""
        return reader.wds_input.image_column(reader.open_dataset(spec).schema, spec.image_col)

    def _saved_recipe_matches(self, manifest: Manifest, path=None, reached=None) -> list[int]:
        """Refuse to resume with another recipe, except for new settings of stages no row has reached yet
        (a model that would not load, fixed in the recipe): returns the indices of those steps ([] when the
        recipe is the same). The saved recipe is read back through today's schema first, so settings added
        since the run started (with their defaults) do not count as a change."""
        path = path or self.run.recipe  # an unfinished retry: the recipe it started with (_resume_retry)
        reached = reached or self._reached
        try:
            saved = saved_recipe(path)
        except RecipeError as err:
            raise RunError(f"the recipe this run started with ({path}) cannot be read by this version "
                           f"({err}); finish it with the curate version that started it, or start a new --output") from None
        now = self.recipe.to_dict()
        for d in (saved, now):
            d.get("input", {}).pop("path", None)
            d.get("output", {}).pop("path", None)
            _drop_time_bounds(d)
        if saved == now:
            return []
        diff = _first_difference(saved, now)
        same_outline = ({k: v for k, v in saved.items() if k != "stages"} == {k: v for k, v in now.items() if k != "stages"}
                        and [list(x) for x in saved["stages"]] == [list(x) for x in now["stages"]])
        changed = [i for i, (a, b) in enumerate(zip(saved["stages"], now["stages"])) if a != b] if same_outline else []
        reached = [i for i in changed if reached(i, manifest)]
        if not same_outline or reached:
            why = (f"; rows already went through {self.recipe.steps[reached[0]].name}" if reached else "")
            raise RunError(f"the recipe differs from the one this run started with ({path}): {diff}{why}; "
                           "resume with the same recipe or start a new --output")
        return changed

    def _reached(self, i: int, manifest: Manifest) -> bool:
        """Whether any row has gone through step i: a finished run, a committed part (meta/), or output of
        its segment or job."""
        run = self.run
        if manifest.complete or run.done_meta_parts():  # (an earlier batch's parts went through every step)
            return True
        if i in self.jobs:
            d = run.job_dir(self.jobs.index(i))
            return d.exists() and any(d.iterdir())
        s = next(k for k, seg in enumerate(self.segs) if i in seg)
        return bool(storage.glob(run.segment_part(s, 0).parent, "part-*.parquet"))

    def _recipe_yaml(self) -> bytes:
        """recipe.yaml as a run saves it: the resolved recipe, every default filled in."""
        return yaml.safe_dump(self.recipe.to_dict(), sort_keys=False).encode()

    def _adopt_recipe(self, manifest: Manifest, changed: list[int]) -> None:
        """The resumed run goes on with the new settings of steps no row has reached: recipe.yaml, its hash
        and the named files become the new recipe's, so the run directory says what made its data."""
        recipe_yaml = self._recipe_yaml()
        atomic.write_bytes(self.run.recipe, recipe_yaml)
        manifest.recipe_sha256 = recipe_hash(recipe_yaml)
        if manifest.named_files is not None:
            manifest.named_files = self._named_files()
        self.run.save_manifest(manifest)
        log.warning("resuming with new settings for %s (no row had reached %s)",
                    ", ".join(self.recipe.steps[i].name for i in changed), "it" if len(changed) == 1 else "them")

    @staticmethod
    def _identity(fingerprint: dict) -> dict:
        """What must not change under a resumed run: a local file's (or folder's) count, size and newest
        mtime (a remote one's: storage.remote_identity)."""
        return {k: fingerprint.get(k) for k in ("files", "bytes", "mtime_ns")}

    def _named_files(self) -> dict:
        """{path or URL: identity} of the files the stage settings name; a URL that names no file (or
        cannot be reached now) is left out, so a checkpoint URL that goes away reads as "is gone"."""
        out = {}
        for p in self.recipe.named_files():
            ident = storage.remote_identity(p) if storage.is_remote(p) else self._identity(reader.fingerprint(Path(p)))
            if ident is not None:
                out[p] = ident
        return out

    def _named_files_match(self, manifest: Manifest, skip: list[int] = ()) -> None:
        """Refuse to resume over a changed input list or a changed file the recipe names (a retrained
        checkpoint under the same path would score half the parts with another model). skip: steps whose
        settings changed and that no row has reached (their files are new by design)."""
        saved = manifest.input.model_dump()
        spec = self.recipe.input_spec()
        if spec.path and manifest.input.files is not None:
            now = reader.fingerprint(spec.path)  # (an unreachable URL: StorageError, one line)
            # version: a remote input's (a run from before it was recorded compares the rest)
            rewritten = saved.get("version") is not None and now.get("version") != saved["version"]
            if self._identity(now) != self._identity(saved) or rewritten:
                raise RunError(f"the input {spec.path} changed since this run started (or is another input); "
                               "resume with the same input or start a new --output")
        before = manifest.named_files
        if before is None:  # runs from before this check
            return
        now = self._named_files()
        if skip:  # only the files of steps kept as they were must be the same
            kept = [i for i in range(len(self.recipe.steps)) if i not in skip]
            ours = _mentioned(self.recipe, kept)  # every string and its resolved path: named files included
            before = {p: v for p, v in before.items() if p in ours}
            now = {p: v for p, v in now.items() if p in ours}
        for p in sorted(set(before) | set(now)):
            if before.get(p) != now.get(p):
                what = "is gone" if p not in now else "is new" if p not in before else "changed"
                raise RunError(f"{p}, named by the recipe, {what} since this run started; resume needs the same "
                               "files, or start a new --output")

    # -- entry points -----------------------------------------------------------------------------------
    def _load_manifest(self) -> Manifest:
        try:
            return self.run.load_manifest()
        except ManifestError as err:
            raise RunError(str(err)) from None

    def _check_storage(self) -> None:
        """Remote output and input (s3://...) must be reachable, exist and accept these credentials: found
        out here, before Ray starts and before anything is written (curate/io/storage.py)."""
        try:
            storage.preflight(self.run.root, write=True)
            if self.recipe.input.path and not reader.inputfs.is_pattern(self.recipe.input.path):
                storage.preflight(self.recipe.input.path)
        except storage.StorageError as err:
            raise RunError(str(err)) from None

    def start(self, resume: bool = False) -> Manifest:
        run = self.run
        self._check_storage()
        self._check_output_folder()
        self._locked = False
        # one fetch session per run: a fetched file whose server gives no version is shared by this run's
        # driver and workers, and fetched again by the next run (storage.fetch_session)
        with contextlib.ExitStack() as self._held, storage.fetch_session():
            if run.exists():  # a run or resume already writing here is refused before anything else
                self._hold()  # (a folder without a run gets the lock only once this run has created it)
            return self._start(resume)

    def _hold(self) -> None:
        """Hold the run directory (RunDir.writer_lock) until `start` returns; a refusal is a RunBusy."""
        if self._locked:
            return
        try:
            self._held.enter_context(self.run.writer_lock())
        except RunDirBusy as err:
            raise RunBusy(str(err)) from None
        self._locked = True

    def _start(self, resume: bool) -> Manifest:
        run = self.run
        if run.exists():
            manifest = self._load_manifest()
            if not resume:
                raise RunError(f"{run.root} already holds a run ({manifest.status}); pass --resume to "
                               "finish it, or choose another --output")
            if manifest.pending_retry is not None:
                return self._resume_retry(manifest)
            changed = self._saved_recipe_matches(manifest)
            self._named_files_match(manifest, skip=changed)
            if changed:
                self._adopt_recipe(manifest, changed)
            if manifest.complete:
                return manifest
            self._check_models()
            try:
                return self._execute(manifest)
            except StageSetupError as err:
                raise StageSetupError(f"{err}; {_RESUME_FIX}") from None
        if resume:
            raise RunError(f"nothing to resume: {run.root} holds no run")
        if run.root.exists() and any(p != run.lock_path and p.name not in _OS_LITTER for p in run.root.iterdir()):
            raise RunError(f"output folder {run.root} is not empty and holds no run; choose another --output")
        spec = self._check_input()  # the input first: a bad path is the user's first thing to fix
        self._check_models()
        created = not run.root.exists()
        try:
            return self._start_fresh(spec)
        except RunBusy:  # another process took the folder first: it is theirs, leave it alone
            raise
        except Exception as err:  # Ray not starting, disk full...: leave no manifest/recipe of a run that made nothing
            kept = self._has_results()
            if not kept:
                self._discard(created)
            if isinstance(err, StageSetupError):
                raise StageSetupError(f"{err}; {_RESUME_FIX if kept else 'fix the recipe and run it again'}") from None
            raise

    def _check_output_folder(self) -> None:
        """A local output must be a folder or creatable as one: one line, not NotADirectoryError, when the
        path (or a folder above it) is a file."""
        root = self.run.root
        if storage.is_remote(root):
            return
        blocker = next((a for a in (root, *root.parents) if a.exists()), None)
        if blocker is not None and not blocker.is_dir():
            where = "is a file" if blocker == root else f"is under {blocker}, which is a file"
            raise RunError(f"output {root} {where}, not a folder; choose another --output")

    def _has_results(self) -> bool:
        """Whether the run produced anything worth resuming: a committed part or a segment checkpoint."""
        run = self.run
        if run.meta.exists() and any(run.meta.iterdir()):
            return True
        work = run.work
        return work.exists() and any(p.is_file() for d in work.iterdir() if d.name != "input" for p in d.rglob("*"))

    def _discard(self, created: bool) -> None:
        """Remove what a fresh run wrote (the folder itself if this run created it)."""
        root = self.run.root
        if created:
            storage.rmtree(root)
        elif root.exists():
            for p in root.iterdir():
                storage.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)

    def _start_fresh(self, spec: reader.InputSpec) -> Manifest:
        run = self.run
        recipe_yaml = self._recipe_yaml()
        manifest = Manifest(name=self.recipe.name, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                            recipe_sha256=recipe_hash(recipe_yaml), versions=versions(),
                            input=InputInfo(**reader.fingerprint(spec.path)), named_files=self._named_files(),
                            batches=[Batch(kind="run", status="splitting")])
        if not storage.is_remote(run.root):  # object stores have no folders
            try:
                run.root.mkdir(parents=True, exist_ok=True)
            except OSError as err:  # a read-only or special filesystem (/proc), no permission, a full disk
                from curate.environment_errors import describe

                raise RunError(describe(err) or f"cannot create the output folder {run.root}: "
                                                f"{err.strerror or err}") from None
            if not self._locked:  # the folder is new: hold it from now on
                self._hold()
                if run.exists():  # another process started a run here between our checks and the lock
                    raise RunBusy(f"{run.root} was started by another curate process just now; choose another "
                                  "--output")
        atomic.write_bytes(run.recipe, recipe_yaml)
        run.save_manifest(manifest)
        return self._execute(manifest)

    def retry_failed(self) -> Manifest:
        """Re-run the rows of an existing run whose status is failed, as new parts of the same run."""
        run = self.run
        self._check_storage()
        if not run.exists():
            raise RunError(f"--retry-failed: {run.root} holds no run")
        self._locked = False
        # one fetch session, as for a run (start): a fetched file with no version is fetched once for the retry
        with contextlib.ExitStack() as self._held, storage.fetch_session():
            self._hold()
            return self._retry_failed()

    def _retry_failed(self) -> Manifest:
        run = self.run
        manifest = self._load_manifest()
        if manifest.pending_retry is not None:
            raise RunError(f"--retry-failed: {run.root} holds an unfinished retry; {_retry_next(run.root)}")
        if not manifest.complete:
            raise RunError(f"--retry-failed: the run in {run.root} is not complete; finish it with --resume first")
        self._check_models()  # weights that cannot be had stop the retry before it writes anything
        meta = self._meta_dataset()
        failed = meta.to_table(filter=pads.field("status") == schema.FAILED)
        if schema.PARENT_COLUMN in failed.column_names:  # derived rows (clips) come back only with their source
            failed = failed.filter(pc.is_null(failed.column(schema.PARENT_COLUMN)))
        if failed.num_rows == 0:
            manifest.note = "retry-failed: no failed rows"
            return manifest
        keep = [c for c in failed.column_names if c in schema.CORE_COLUMNS and c not in
                ("status", "stage", "reason", "error", "shard", "key", "part")]
        keep += [c for c in manifest.extra_columns if c in failed.column_names]
        failed = failed.select(keep).sort_by([("row", "ascending"), ("uid", "ascending")])
        payload = [c for c in manifest.extra_columns if c in schema.PAYLOAD_COLUMNS]
        spec = self._retry_input(manifest) if payload else None  # (checked before anything is staged)
        self._stage_retry(manifest)
        if payload:
            failed = self._with_input_payload(failed, spec, payload)
        first = manifest.next_part()
        per = self.recipe.output.samples_per_shard
        sizes = []
        for i in range(0, failed.num_rows, per):
            chunk = failed.slice(i, per)
            k = first + len(sizes)
            chunk = chunk.append_column("part", pa.array([k] * chunk.num_rows, pa.int32()))
            atomic.write_parquet(chunk, run.input_part(k))
            sizes.append(chunk.num_rows)
        batch_no = len(manifest.batches)
        for j, n in enumerate(sizes):
            manifest.parts[first + j] = PartInfo(rows=n, batch=batch_no)
        manifest.batches.append(Batch(kind=RETRY, status=RUNNING, parts=[first, first + len(sizes) - 1],
                                      rows=failed.num_rows, recipe=self.recipe.to_dict()))
        # the run stays `complete` (manifest.pending_retry): its readers go on seeing the finished parts
        atomic.write_bytes(run.work / "input" / "_SUCCESS", b"")
        run.save_manifest(manifest)
        return self._run_retry(manifest)

    def _retry_input(self, manifest: Manifest) -> reader.InputSpec:
        """The run's input, for a retry whose rows came with payload the metadata does not keep (Parquet image
        bytes: `input_image_bytes`): it must be there and unchanged, or the retry is refused before it writes."""
        spec = self.recipe.input_spec()
        if manifest.input.path:  # the absolute path the run read: a retry may run from another folder
            spec = dataclasses.replace(spec, path=manifest.input.path)
        try:
            now = reader.fingerprint(spec.path)
        except (OSError, storage.StorageError) as err:
            now = {"error": str(err)}
        saved = manifest.input.model_dump()
        rewritten = saved.get("version") is not None and now.get("version") != saved["version"]
        if now.get("error") or self._identity(now) != self._identity(saved) or rewritten:
            raise RunError(f"--retry-failed: the failed rows' images came with the input {spec.path} and are not "
                           "kept in the metadata, and that input is gone or changed since the run; restore it, "
                           "or run the failed rows' input as a new run")
        return spec

    def _with_input_payload(self, failed: pa.Table, spec: reader.InputSpec, payload: list[str]) -> pa.Table:
        """The failed rows with their payload columns read again from the input. The input is split into
        parts as the run split it (so `row` numbers agree), each part read and deleted under _work once it
        is written (not a second copy of the whole input on disk), and only the failed rows' payload is
        kept: without it load_image would fail every retried row as input_missing_image, a failure of the
        retry rather than of the row."""
        tmp = self.run.work / "retry_source"
        storage.rmtree(tmp)
        wanted = pa.array(sorted(set(failed.column("row").to_pylist())), pa.int64())
        got: dict[int, dict] = {}

        def take(k: int) -> None:  # part k is whole: keep its failed rows' payload, then delete it
            path = tmp / f"part-{k:06d}.parquet"
            part = storage.read_table(path, columns=["row", "uid", *payload])
            got.update((r["row"], r) for r in part.filter(pc.is_in(part.column("row"), wanted)).to_pylist())
            storage.as_path(path).unlink()  # (a remote run's _work too)

        def part_path(k: int):  # split_parts asks for part k's path once part k - 1 is written whole
            if k > 0:
                take(k - 1)
            return tmp / f"part-{k:06d}.parquet"

        try:
            sizes, _ = reader.split_parts(spec, self.recipe.output.samples_per_shard, part_path)
            take(len(sizes) - 1)
        except reader.InputError as err:
            raise RunError(f"--retry-failed: {err}") from None
        finally:
            storage.rmtree(tmp)
        uids = failed.column("uid").to_pylist()
        for row, uid in zip(failed.column("row").to_pylist(), uids):
            if got.get(row, {}).get("uid") != uid:  # the fingerprint matched but the rows do not: never mix them up
                raise RunError(f"--retry-failed: row {row} of the input {spec.path} is not the run's sample {uid}; "
                               "the input changed since the run")
        for c in payload:
            typ = pa.binary() if c == "input_image_bytes" else None
            col = pa.array([got[r][c] for r in failed.column("row").to_pylist()], typ)
            failed = (failed.set_column(failed.column_names.index(c), c, col) if c in failed.column_names
                      else failed.append_column(c, col))
        return failed

    def _stage_retry(self, manifest: Manifest) -> None:
        """Before a retry changes anything: an empty staging folder, the manifest as it is now (what
        `abandon_retry` puts back byte for byte) and the retry's recipe (what `--resume` finishes it with)."""
        run = self.run
        storage.rmtree(run.retry_stage)  # left by an abandon cut short: never take its parts for done
        if not _keeps_work(run):  # _work holds only what a retry that died before saving its batch left
            storage.rmtree(run.work)
        atomic.write_bytes(run.retry_recipe, self._recipe_yaml())
        atomic.write_bytes(run.retry_backup, run.manifest_path.read_bytes())

    def _resume_retry(self, manifest: Manifest) -> Manifest:
        """`--resume` of a run whose --retry-failed stopped: finish that retry, with the recipe it started with
        (settings of stages none of its rows has reached may change, as for any resume)."""
        retry, run = manifest.pending_retry, self.run
        lo, hi = retry.parts
        if retry.status != COMMITTING and not all(run.input_part(k).exists() for k in range(lo, hi + 1)):
            # an --abandon removes the retry's files before it restores the manifest (its commit point)
            raise RunError(f"the retry in {run.root} was being dropped (--abandon) when it stopped; finish that "
                           f"with: curate run --retry-failed {run.root} --abandon")
        if retry.status != COMMITTING:  # committing runs no stage: any recipe finishes it
            self._check_models()
            staged = self.run.retry_recipe.exists()  # (not for a retry an older version started)
            changed = self._saved_recipe_matches(manifest, self.run.retry_recipe if staged else None,
                                                 self._reached_retry if staged else None)
            if changed:
                recipe_yaml = self._recipe_yaml()
                atomic.write_bytes(self.run.retry_recipe if staged else self.run.recipe, recipe_yaml)
                manifest.pending_retry.recipe = self.recipe.to_dict()
                self.run.save_manifest(manifest)
                log.warning("finishing the retry with new settings for %s (none of its rows had reached %s)",
                            ", ".join(self.recipe.steps[i].name for i in changed), "it" if len(changed) == 1 else "them")
        return self._run_retry(manifest)

    def _reached_retry(self, i: int, manifest: Manifest) -> bool:
        """Whether any row of the unfinished retry has gone through step i (its checkpoints, job decisions
        or staged parts); the earlier batches' rows do not count: a retry runs with its own settings."""
        run, (lo, hi) = self.run, manifest.pending_retry.parts
        ks = range(lo, hi + 1)
        if any(run.staged().meta_part(k).exists() for k in ks):
            return True
        if i in self.jobs:
            return any(run.job_part(self.jobs.index(i), k).exists() for k in ks)
        s = next(k for k, seg in enumerate(self.segs) if i in seg)
        return s < len(self.segs) - 1 and any(run.segment_part(s, k).exists() for k in ks)

    def _run_retry(self, manifest: Manifest) -> Manifest:
        """Run (or finish) the retry batch; a failure says what state the run is in and what to do next."""
        try:
            return self._execute(manifest)
        except RunError as err:
            retry = manifest.pending_retry
            if retry is None:
                raise
            if retry.status == COMMITTING:
                raise type(err)(f"{err}; the retry's parts were being moved into place: finish it with "
                                f"curate run --resume -o {self.run.root}") from None
            raise type(err)(f"{err}; the run is unchanged and still complete; {_retry_next(self.run.root)}") from None

    def _commit_retry(self, manifest: Manifest) -> None:
        """Move a finished retry's staged parts into the run (shard, sidecars, then the meta part: the commit
        marker last). The run is `running` from here until finalize: only now do its files change. Every
        step is idempotent, so a --resume after a crash here finishes the move."""
        run, staged, batch = self.run, self.run.staged(), manifest.current_batch
        if batch.status != COMMITTING:
            batch.status, manifest.status = COMMITTING, RUNNING
            run.save_manifest(manifest)
        lo, hi = batch.parts
        for k in range(lo, hi + 1):
            for src, dst in ((staged.shard(k), run.shard(k)), (staged.thumbs_part(k), run.thumbs_part(k)),
                             (staged.embeddings_part(k), run.embeddings_part(k)), (staged.meta_part(k), run.meta_part(k))):
                if src.exists():
                    storage.move(src, dst)
            if not run.meta_part(k).exists():
                raise RunError(f"part {k} of the retry is neither staged nor in place")
            manifest.parts[k].committed = True
        self._reconcile()  # the retried rows replace their failed rows
        storage.rmtree(run.retry_stage)

    # -- execution ----------------------------------------------------------------------------------------
    def _run_schema(self, manifest: Manifest) -> pa.Schema:
        cols = dict(self.recipe.stage_columns())
        if manifest.extra_schema:
            saved = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(manifest.extra_schema)))
            for field in saved:
                cols.setdefault(field.name, field.type)
        for name, typ in manifest.extra_columns.items():
            cols.setdefault(name, _type_from_str(typ))
        return schema.run_schema(cols)

    def _in_process(self, manifest: Manifest) -> bool:
        """Run without Ray: a run of at most ray.in_process_max_rows rows whose steps are all jobs and
        model-free filters, with no cluster address given (argument or RAY_ADDRESS)."""
        from curate.stage import Filter

        if self.ray_address or os.environ.get("RAY_ADDRESS") or not self.recipe.ray.in_process_max_rows:
            return False
        if not all(isinstance(step, (Job, Filter)) and not step.uses_model and not sched.num_gpus
                   for step, sched in zip(self.recipe.steps, self.recipe.scheduling)):
            return False
        rows = manifest.input.rows
        if manifest.current_batch.status == "splitting":
            try:
                rows = reader.open_dataset(self.recipe.input_spec()).count_rows()
            except Exception:  # noqa: BLE001 - the split reports a bad input in its own words
                return False
        return rows <= self.recipe.ray.in_process_max_rows

    def _died_in_process(self) -> bool:
        """Whether the last session ran in this process and died in a stage call (a native crash kills the
        driver itself: the CLI ends with a segfault). A Ctrl-C unwinds through the call and removes its
        marker, so a marker left by an in-process session is a death. This session then runs on Ray,
        whose retries isolate the row from those markers on (crash_isolation), instead of dying again."""
        crashes = self.run.crashes
        if not (crashes / IN_PROCESS_MARK).exists():
            return False
        if not any(p.name.endswith((".range.json", ".timeout.json")) for d in crashes.rglob("part-*")
                   for p in d.iterdir()):
            return False
        log.warning("the last attempt died in a stage call (a native crash in this process, or a call that ran "
                    "past its time bound); this run goes through Ray, which isolates the row that kills or "
                    "hangs its worker (failed/stage_crashed, failed/stage_timeout)")
        return True

    def _session(self, manifest: Manifest, force_ray: bool = False):
        """Ray (yields the module), or, for an in-process run, nothing (yields None)."""
        from contextlib import nullcontext

        if not force_ray and self._in_process(manifest):
            return nullcontext(None)
        return ray_session(self.ray_address, self.recipe.ray.num_cpus, self.recipe.ray.object_store_memory_mb,
                           self.runtime_env, ray_crash.retries_for(self.recipe.ray.max_part_crashes))

    def _execute(self, manifest: Manifest) -> Manifest:
        run = self.run
        atomic.remove_stale_tmp(run.root)
        died = self._died_in_process()
        if not died:  # an interrupted Ray session's markers are not crashes of this one
            storage.rmtree(run.crashes)
        batch = manifest.current_batch
        if batch.status == COMMITTING:  # every part of the retry is done: only the move into place is left
            return self._finish(manifest)
        # a retry's parts go in place only once all are done (a retry started by an older version: in place)
        staged = run.staged() if batch.kind == RETRY and run.retry_backup.exists() else None
        with self._session(manifest, force_ray=died) as ray, self._watching(ray):
            if ray is None:  # the driver's own calls leave markers; only a hard death can leave one behind
                atomic.write_bytes(run.crashes / IN_PROCESS_MARK, b"")
            if batch.status == "splitting":
                t0 = time.time()
                spec = self.recipe.input_spec()
                try:
                    sizes, extras = reader.split_parts(spec, self.recipe.output.samples_per_shard, run.input_part)
                except reader.InputError as err:
                    storage.rmtree(run.root)  # nothing was produced yet: leave no half-made run behind
                    raise RunError(str(err)) from None
                manifest.parts = {k: PartInfo(rows=n, batch=0) for k, n in enumerate(sizes)}
                manifest.extra_columns = {n: str(t) for n, t in extras.items()}
                # nested types (document segments, OBELICS texts/images lists) do not survive str(type)
                manifest.extra_schema = base64.b64encode(pa.schema(list(extras.items())).serialize().to_pybytes()).decode()
                manifest.input.rows = sum(sizes)
                batch.status, batch.parts, batch.rows = "running", [0, len(sizes) - 1], sum(sizes)
                manifest.timings["split"] = round(time.time() - t0, 3)
                atomic.write_bytes(run.work / "input" / "_SUCCESS", b"")
                run.save_manifest(manifest)
            run_schema = self._run_schema(manifest)
            lo, hi = batch.parts
            parts = {k: manifest.parts[k].rows for k in range(lo, hi + 1)}
            prior = self._prior(lo)
            for s, seg in enumerate(self.segs):
                final = s == len(self.segs) - 1
                t0 = time.time()
                try:
                    self._run_segment(ray, s, seg, final, parts, run_schema, manifest, staged if final else None)
                except Exception as err:  # a stage's setup failing inside a Ray worker (a model that won't load)
                    setup = _setup_error(err)
                    if setup is not None:
                        raise StageSetupError(setup) from None
                    loop = _wrapped_line(err, crash_isolation.StageCrashLoop)  # a stage dying on most rows
                    if loop is not None:
                        raise RunError(loop) from None
                    contract = _wrapped_line(err, StageContractError)  # a bug in a stage: its own line, as
                    if contract is not None:                           # a run without Ray shows it, not Ray's
                        raise StageContractError(contract) from err    # task header
                    raise
                manifest.add_timing(f"segment{s}", time.time() - t0)
                if not final:
                    t0 = time.time()
                    try:
                        info = self._run_job(ray, s, parts, prior, self._job_marker(s, staged))
                    except Exception as err:  # an earlier batch's shard cut short (storage.open_tar), maybe
                        cut = _wrapped_line(err, tars.TruncatedTar)  # in a Ray worker: one line, not Ray's
                        if cut is None:
                            raise
                        raise RunError(f"{cut}; run `curate validate` on {run.root}") from None
                    manifest.jobs[f"job{s}:{self.recipe.steps[self.jobs[s]].name}"] = info
                    manifest.timings[f"job{s}:{self.recipe.steps[self.jobs[s]].name}"] = round(time.time() - t0, 3)
                run.save_manifest(manifest)
        return self._finish(manifest)

    def _finish(self, manifest: Manifest) -> Manifest:
        """Every part is committed (a retry's: staged, then moved into place): one row per uid, the work
        folder removed, the run finalized."""
        run = self.run
        if manifest.current_batch.kind == RETRY:
            self._commit_retry(manifest)
        else:
            self._reconcile()
        manifest.stage_timings = self._stage_timings(manifest)
        if not self.recipe.output.keep_work:  # every part is committed: nothing left to resume from
            storage.rmtree(run.work)
        run.finalize(manifest)  # counts, sizes.json, status complete, report.html
        return manifest

    def _stage_timings(self, manifest: Manifest) -> dict:
        """Per step, in recipe order: rows, in, kept, dropped, failed and seconds, summed over every part
        (stages: worker seconds spent in the stage; jobs: the job's wall time plus applying its decisions)."""
        out: dict[str, dict] = {}
        for i, step in enumerate(self.recipe.steps):
            total = {"kind": "job" if isinstance(step, Job) else "stage"}
            for p in manifest["parts"].values():
                c = (p.get("stages") or {}).get(step.name)
                if c:
                    progress.merge(total, c)
            if i in self.jobs:
                key = f"job{self.jobs.index(i)}:{step.name}"
                total["seconds"] = round(total.get("seconds", 0) + manifest["timings"].get(key, 0), 3)
            out[step.name] = total
        return out

    @contextmanager
    def _watching(self, ray):
        """With on_rows: a ProgressSink actor the stages report to, and a thread that polls it every second."""
        if self.on_rows is None:
            yield
            return
        import threading

        if ray is not None:  # in-process runs report per part only
            self._sink = ray.remote(progress.ProgressSink).options(num_cpus=0).remote()
        stop = threading.Event()

        def poll():
            while not stop.wait(1.0):
                self._emit(ray)

        thread = threading.Thread(target=poll, name="curate-progress", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=10)
            if self._sink is not None:
                try:
                    ray.kill(self._sink)
                except Exception:  # noqa: BLE001 - the view's actor; the run's data is not at stake
                    pass
            self._sink = None

    def _emit(self, ray, final: bool = False) -> None:
        """One progress event for on_rows (a failed poll is skipped: progress is a view)."""
        phase = dict(self._phase)
        if not phase or self.on_rows is None:
            return
        event = {**phase, "elapsed": time.time() - phase["started"], "final": final}
        if phase["phase"] == "segment" and self._sink is not None:
            try:
                snap = ray.get(self._sink.snapshot.remote(), timeout=10)
            except Exception as err:  # noqa: BLE001
                log.debug("progress poll failed: %s", err)
                return
            event["stages"] = {n: snap[n] for n in phase["order"] if n in snap}
        try:
            self.on_rows(event)
        except Exception as err:  # noqa: BLE001 - a broken display never stops a run
            log.debug("progress display failed: %s", err)

    def write_report(self, extra_sections: list | None = None) -> Path | None:
        """The HTML report is a view of finished data: failing to draw it never fails the run."""
        return self.run.write_report(extra_sections)

    def _run_segment(self, ray, s: int, seg: list[int], final: bool, parts: dict[int, int],
                     run_schema: pa.Schema, manifest: Manifest, final_root: RunDir | None = None) -> None:
        run = self.run
        done_path = (final_root or run).meta_part if final else (lambda k: run.segment_part(s, k))
        pending = [k for k in parts if not done_path(k).exists()]
        names = [self.recipe.steps[i].name for i in seg]
        label = f"{' → '.join(names) or 'load'}{' → write' if final else ''}"
        total = len(parts)
        self.on_progress(label, total - len(pending), total)
        if not pending:
            return
        job = self.recipe.steps[self.jobs[s - 1]] if s > 0 else None
        self._phase = {"phase": "segment", "label": label, "order": names, "started": time.time(),
                       "total": sum(parts[k] for k in pending)}
        load = dict(root=str(run.root), seg=s, job=job, job_index=s - 1, run_schema=run_schema)
        commit = dict(root=str(run.root), seg=s, final=final, run_schema=run_schema, expected=parts,
                      caption_policy=self.recipe.output.caption_policy,
                      dropped_thumbnails=self.recipe.output.dropped_thumbnails,
                      final_root=str(final_root.root) if final_root else None)
        stages = [self.recipe.steps[i].for_run(run.root) for i in seg]
        sites = [_CrashSite(str(run.root), s, f"{i}-{st.name}", st.name, self.recipe.ray.max_part_crashes,
                            self._bound(i), in_driver=ray is None) for i, st in zip(seg, stages)]
        if ray is None:
            rows = self._segment_in_process(pending, stages, load, commit, run_schema, sites)
        else:
            ds = ray.data.from_items([{"part": k} for k in pending], override_num_blocks=len(pending))
            ds = ds.map_batches(_in_session(_load_parts), batch_size=None, batch_format="pyarrow", fn_kwargs=load)
            for i, stage, site in zip(seg, stages, sites):
                ds = self._map_stage(ray, ds, stage, self.recipe.scheduling[i], run_schema, self._sink, site)
            rows = ds.map_batches(_in_session(_commit_parts), batch_size=None, batch_format="pyarrow",
                                  fn_kwargs=commit).iter_rows()
        done = total - len(pending)
        last_save = time.time()
        for row in rows:
            done += 1
            info = manifest.parts[row["part"]]
            info.stages = {**(info.stages or {}), **json.loads(row["stages"] or "{}")}
            if final:
                # a staged (retry) part counts as committed once it is moved into place (_commit_retry)
                info.kept, info.failed, info.committed = row["kept"], row["failed"], None if final_root else True
                info.images = row["images"]
                if time.time() - last_save > 2:
                    run.save_manifest(manifest)
                    last_save = time.time()
            self.on_progress(label, done, total)
        self._emit(ray, final=True)
        self._phase = {}

    def _bound(self, i: int) -> crash_isolation.CallBound:
        """Step i's call bound: its own call_timeout_s / row_timeout_s, else the recipe's ray section's, with
        the row bound at least the stage's `min_row_timeout_s` (a video re-encode takes minutes a row)."""
        sched, ray_cfg = self.recipe.scheduling[i], self.recipe.ray
        per_row = (max(ray_cfg.row_timeout_s, type(self.recipe.steps[i]).min_row_timeout_s)
                   if sched.row_timeout_s is None else sched.row_timeout_s)
        return crash_isolation.CallBound(
            ray_cfg.call_timeout_s if sched.call_timeout_s is None else sched.call_timeout_s, per_row)

    @staticmethod
    def _segment_in_process(pending: list[int], stages: list[Stage], load: dict, commit: dict, run_schema: pa.Schema,
                            sites: list[_CrashSite]):
        """A segment in this process, part by part (the same functions the Ray tasks run): commit rows."""
        for stage in stages:
            _setup(stage)
        for k in pending:
            t = _load_parts(pa.table({"part": [k]}), **load)
            for stage, site in zip(stages, sites):
                t = _process(stage, t, run_schema, None, site)
            yield from _commit_parts(t, **commit).to_pylist()

    @staticmethod
    def _map_stage(ray, ds, stage: Stage, sched: Scheduling, run_schema: pa.Schema, sink=None,
                   site: _CrashSite | None = None):
        res = {}
        if sched.num_cpus is not None:
            res["num_cpus"] = sched.num_cpus
        if sched.num_gpus:
            res["num_gpus"] = sched.num_gpus
        from ray.data import ActorPoolStrategy, TaskPoolStrategy

        if stage.uses_model or sched.num_gpus:
            # Ray Data fuses the task stages before this one into the actor (equal remote args), so on CPU the
            # downloads run inside the model actor. Un-fusing them (distinct actor options) was tried and
            # reverted: with two CPU actor pools on a 2-CPU node the actors held every CPU and the download
            # tasks never ran (ray-project/ray#54433 has no fusion switch either).
            return ds.map_batches(_StageActor, batch_size=None, batch_format="pyarrow",
                                  fn_constructor_kwargs=dict(stage=stage, run_schema=run_schema, sink=sink, site=site,
                                                             session=os.environ.get(storage.FETCH_SESSION_ENV)),
                                  compute=ActorPoolStrategy(size=sched.concurrency or 1), **res)
        return ds.map_batches(_in_session(_run_stage_task), batch_size=None, batch_format="pyarrow",
                              fn_kwargs=dict(stage=stage, run_schema=run_schema, sink=sink, site=site),
                              compute=TaskPoolStrategy(size=sched.concurrency) if sched.concurrency else None, **res)

    def _prior(self, first_part: int) -> list[int]:
        """Committed parts of earlier batches of this run: their kept rows take part in jobs (a retry dedups
        against what is already kept) with part = -1, and are never changed."""
        return [k for k in self.run.done_meta_parts() if k < first_part]

    def _job_marker(self, s: int, staged: RunDir | None) -> Path:
        """Where job `s` records that it ran for this batch's rows. A staged retry keeps its marker in its
        staging folder: the first batch's marker (in a _work kept by output.keep_work) says nothing about the
        retry's rows, and the staging folder goes when the retry is committed or dropped, so a --resume of the
        retry finds its own marker and no other, and the kept _work is left as it was."""
        return (staged or self.run).job_dir(s) / "_SUCCESS"

    def _run_job(self, ray, s: int, parts: dict[int, int], prior: list[int], marker: Path) -> dict:
        """Run job `s` (or find this batch's done marker); returns what it did (path, decisions, edges, rounds)."""
        run = self.run
        j_step = self.jobs[s]
        job: Job = self.recipe.steps[j_step]
        self.on_progress(job.name, 0, 1)
        if marker.exists():
            self.on_progress(job.name, 1, 1)
            return json.loads(marker.read_text())
        self._phase = {"phase": "job", "name": job.name, "started": time.time()}
        cols = list(dict.fromkeys(["uid", "part", "status", *job.needs()]))
        prior_rows = sum(storage.read_metadata(run.meta_part(k)).num_rows for k in prior)
        rows = sum(parts.values()) + prior_rows
        if job.fit_rows:  # a first round on a bounded sample (e.g. k-means centroids), then the fitted job
            job = job.fit(self._fit_sample(job, s, parts, cols, prior, rows))
        if ray is None or rows <= self.recipe.ray.job_local_max_rows:
            info = self._job_local(job, s, parts, cols, prior)
            if ray is None:
                info["in_process"] = True  # the whole run: Ray was not started
        else:
            info = self._job_ray(ray, job, s, parts, cols, prior)
        info["rows"] = rows
        self._phase = {}
        atomic.write_bytes(marker, json.dumps(info).encode())
        self.on_progress(job.name, 1, 1)
        return info

    def _fit_sample(self, job: Job, s: int, parts: dict[int, int], cols: list[str], prior: list[int],
                    rows: int) -> pa.Table:
        """Every part contributes its share of `job.fit_rows` (read one part at a time)."""
        tables = []
        for k, is_prior in [*((k, False) for k in parts), *((k, True) for k in prior)]:
            t = _read_part(self.run, k, s, cols, is_prior)
            t = t.filter(schema.active_mask(t))
            if t.num_rows:
                step = max(1, t.num_rows // max(1, job.fit_rows * t.num_rows // max(1, rows)))
                tables.append(t.take(pa.array(list(range(0, t.num_rows, step)))))
        return fit_sample(job, tables)

    def _job_local(self, job: Job, s: int, parts: dict[int, int], cols: list[str], prior: list[int]) -> dict:
        """Small runs: the job over all active rows at once in the driver (`Job.in_process`; no shuffle)."""
        tables = [_read_part(self.run, k, s, cols, False) for k in parts]
        tables += [_read_part(self.run, k, s, cols, True) for k in prior]
        tables = [t.filter(schema.active_mask(t)).select(list(dict.fromkeys(["uid", "part", *job.needs()])))
                  for t in tables]
        mine = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        cpus = IN_PROCESS_CPUS.set(self.recipe.ray.num_cpus or mine)
        try:
            decisions = job.in_process(pa.concat_tables(tables, promote_options="default"))
        finally:
            IN_PROCESS_CPUS.reset(cpus)
        decisions = decisions.select(job.decision_schema().names).cast(job.decision_schema())
        for k in parts:
            atomic.write_parquet(decisions.filter(pc.equal(decisions.column("part"), k)), self.run.job_part(s, k))
        return {"decisions": decisions.num_rows, "path": "driver"}

    def _job_ray(self, ray, job: Job, s: int, parts: dict[int, int], cols: list[str], prior: list[int]) -> dict:
        """Large runs: map per part -> shuffle by key -> reduce; graph jobs then find connected components as
        shuffle rounds; decisions are written per part by the workers. The driver holds no per-row state."""
        run = self.run
        buckets = max(1, min(4096, sum(parts.values()) // 20000 + 1))
        items = [{"part": k, "prior": False} for k in parts] + [{"part": k, "prior": True} for k in prior]
        src = ray.data.from_items(items, override_num_blocks=len(items))
        common = dict(job=job, buckets=buckets, root=str(run.root), seg=s, columns=cols)
        info: dict = {"path": "ray", "seconds": {}}
        secs, t0 = info["seconds"], time.time()

        def lap(name: str) -> None:  # wall time per phase, so a slow job shows where it went
            nonlocal t0
            secs[name] = round(time.time() - t0, 2)
            t0 = time.time()

        keep = None
        prepass = self.recipe.ray.job_key_prepass
        if job.key_prepass and not job.singletons_matter and (
                prepass == "on" or (prepass == "auto" and sum(n["Alive"] for n in ray.nodes()) > 1)):
            multi = src.map_batches(_in_session(_job_prepare), batch_size=None, batch_format="pyarrow",
                                    fn_kwargs=dict(common, keys_only=True))
            multi = multi.groupby("bucket", num_partitions=_partitions(buckets)).map_groups(
                _multi_keys, batch_format="pyarrow").materialize()
            info["shared_keys"] = multi.count()
            keep = multi.to_arrow_refs()  # refs only: the workers fetch the keys, the driver never does
            lap("key_prepass")
        ds = src.map_batches(_in_session(_job_prepare), batch_size=None, batch_format="pyarrow",
                             fn_kwargs=dict(common, keep=keep))
        reduced = ds.groupby("bucket", num_partitions=_partitions(buckets)).map_groups(
            _in_session(_job_reduce), batch_format="pyarrow", fn_kwargs=dict(job=job)).materialize()
        lap("map_shuffle_reduce")
        if job.graph:
            info["edges"] = reduced.count()
            if 0 < info["edges"] <= self.recipe.ray.job_components_max_edges:
                ref = ray.remote(_labels_one_task).remote(*reduced.to_arrow_refs())  # the worker resolves the refs
                labels, info["rounds"] = ray.data.from_arrow_refs([ref]), 0
            else:
                labels, info["rounds"] = _components_ray(reduced, buckets)
            decisions = None if labels is None else labels.map_batches(
                _in_session(_decide), batch_size=None, batch_format="pyarrow", fn_kwargs=dict(job=job)).materialize()
            lap("components")
        elif type(job).finalize is not Job.finalize:
            # a global decision over the reduced records (a quantile, per-entry caps): made in the driver,
            # which is what `finalize` is for; reduce keeps those records small (one per row at most)
            tables = [t for t in ray.get(reduced.to_arrow_refs()) if t.num_rows]
            red = pa.concat_tables(tables) if tables else job.reduce_schema().empty_table()
            fin = job.finalize(red).select(job.decision_schema().names).cast(job.decision_schema())
            for k in parts:
                atomic.write_parquet(fin.filter(pc.equal(fin.column("part"), k)), run.job_part(s, k))
            info["decisions"] = fin.num_rows
            return info
        else:
            decisions = reduced
        written = {}
        if decisions is not None and decisions.count():
            out = decisions.groupby("part", num_partitions=_partitions(len(parts))).map_groups(
                _write_job_part, batch_format="pyarrow",
                fn_kwargs=dict(root=str(run.root), s=s, decision_schema=job.decision_schema()))
            written = {r["part"]: r["rows"] for r in out.take_all()}  # one row per part
        for k in parts:
            if k not in written:
                atomic.write_parquet(job.decision_schema().empty_table(), run.job_part(s, k))
        info["decisions"] = sum(written.values())
        lap("write_decisions")
        return info

    # -- after ------------------------------------------------------------------------------------------
    def _meta_dataset(self) -> pads.Dataset:
        return storage.dataset(storage.glob(self.run.meta, "part-*.parquet"))

    def _reconcile(self) -> None:
        """Keep one row per uid: a retried row replaces its earlier failed row (idempotent, atomic per part)."""
        ds = self._meta_dataset()
        t = ds.to_table(columns=["uid", "part"])
        if t.num_rows == 0:
            return
        latest = t.group_by("uid").aggregate([("part", "max"), ("part", "count")])
        dup = latest.filter(pc.greater(latest.column("part_count"), 1))
        if dup.num_rows == 0:
            return
        newest = dict(zip(dup.column("uid").to_pylist(), dup.column("part_max").to_pylist()))
        stale = t.filter(pc.is_in(t.column("uid"), value_set=dup.column("uid").combine_chunks()))
        for k in sorted(set(stale.column("part").to_pylist())):
            part = storage.read_table(self.run.meta_part(k))
            drop = [newest.get(u, k) > k for u in part.column("uid").to_pylist()]
            if any(drop):
                if any(s == schema.OK for s, d in zip(part.column("status").to_pylist(), drop) if d):
                    raise RunError(f"part {k} holds a kept sample that a later part also holds; run `curate validate`")
                atomic.write_parquet(part.filter(pa.array([not d for d in drop])), self.run.meta_part(k))

    def counts(self):
        """The funnel counted from meta/ (RunDir.counts)."""
        return self.run.counts()


def _type_from_str(name: str) -> pa.DataType:
    simple = {"string": pa.string(), "large_string": pa.large_string(), "int64": pa.int64(), "int32": pa.int32(),
              "double": pa.float64(), "float": pa.float32(), "bool": pa.bool_(), "binary": pa.binary(),
              "null": pa.string()}
    return simple.get(name, pa.string())
