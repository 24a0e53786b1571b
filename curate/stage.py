"""Stage, Filter and Job: the three kinds of pipeline step, and the registry of their public names.

A Stage sees one batch (a pyarrow Table holding one input part) and returns it with columns added or
rows marked; most stages implement only `annotate` on the rows still in play and leave the selecting,
scattering, outcome bookkeeping and row-level fault isolation to the base class (see Stage). A Filter is a pure per-row keep/drop check. A Job sees the whole dataset (dedup clustering,
global quantiles): it maps rows to keyed records, reduces each key group to decisions, and the runner
applies the decisions between streaming segments. None of these import Ray: they run in a plain loop in
tests and inside Ray workers in runs.
"""
from __future__ import annotations

import logging
import re
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict

from curate import crash_isolation, schema
from curate.models.clip import ModelLoadError

log = logging.getLogger("curate")
# CPUs a job's `in_process` may keep busy: the runner sets it for its small-run path (ray.num_cpus, else
# the CPUs this process may use); 1 anywhere else (a Ray worker has its one CPU)
IN_PROCESS_CPUS: ContextVar[int] = ContextVar("in_process_cpus", default=1)

REGISTRY: dict[str, type["Step"]] = {}


def register(cls: type["Step"]) -> type["Step"]:
    """Class decorator: make a step available to recipes under `cls.name`."""
    if not getattr(cls, "name", None):
        raise TypeError(f"{cls.__name__} has no name")
    if cls.name in REGISTRY and REGISTRY[cls.name] is not cls:
        other = REGISTRY[cls.name]
        raise TypeError(f"step name {cls.name!r} of {cls.__module__}.{cls.__qualname__} is already registered by "
                        f"{other.__module__}.{other.__qualname__}; give one of them another name")
    REGISTRY[cls.name] = cls
    schema.declare_reasons(cls.reasons)
    return cls


# Packages whose modules register shipped steps. Every public module in them is imported, so a new
# step needs no edit here; modules must keep heavy imports (torch, models) inside functions.
STEP_PACKAGES = ("curate.filters", "curate.download", "curate.dedup", "curate.scorers", "curate.caption",
                 "curate.video", "curate.interleaved", "curate.balance", "curate.reduce")


def load_builtin_steps() -> dict[str, type["Step"]]:
    """Import the modules that register the shipped steps (kept lazy so `import curate` stays cheap)."""
    import importlib
    import pkgutil

    for package_name in STEP_PACKAGES:
        try:
            package = importlib.import_module(package_name)
        except ModuleNotFoundError as exc:
            if exc.name != package_name:
                raise
            continue
        for info in pkgutil.iter_modules(package.__path__):
            if not info.name.startswith("_"):
                _import_step_module(f"{package_name}.{info.name}")

    return REGISTRY


class StepModuleError(RuntimeError):
    """A module in a package of shipped steps (a file added to filters/, say) that cannot be imported: every
    recipe loads those packages, so its error must name the file, not only what the file itself raised."""


def _import_step_module(module: str) -> None:
    """Import one module of a step package; an error in it becomes a StepModuleError naming the file."""
    import importlib
    import importlib.util

    try:
        importlib.import_module(module)
    except Exception as err:  # noqa: BLE001 - any error in someone's module: name the file, keep the cause
        spec = importlib.util.find_spec(module)
        where = f" ({spec.origin})" if spec is not None and spec.origin else ""
        first = str(err).splitlines()[0] if str(err) else ""
        raise StepModuleError(f"step module {module}{where} cannot be imported: {type(err).__name__}: {first}; fix "
                              "or remove it (a stage of your own can live outside curate, named by import path: "
                              "docs/python_api.md)") from err


class Step(BaseModel):
    """Common base: the pydantic fields are the step's config; unknown fields are an error."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "stage"
    # columns this step needs to exist before it runs (from the input or an earlier step)
    reads: ClassVar[tuple[str, ...]] = ()
    # columns it adds, with their Arrow types
    writes: ClassVar[dict[str, pa.DataType]] = {}
    # reason codes it may set, with a one-line description each
    reasons: ClassVar[dict[str, str]] = {}
    # True for steps that load a model: the runner gives them a long-lived actor pool
    uses_model: ClassVar[bool] = False
    # True for stages that derive new rows (clip_split: one row per clip). They return the input rows
    # unchanged in number and order, followed by the new rows, each with `parent_uid` set to its source
    # row's uid; the runner checks exactly that, so every input row is still accounted for once.
    adds_rows: ClassVar[bool] = False
    # settings that may name a local file or folder (a model folder, a checkpoint, an entries file): the
    # recipe makes a relative one absolute when it loads (local_path_settings, curate.recipe)
    path_settings: ClassVar[tuple[str, ...]] = ()
    # the least time one row may take in this stage's call bound when the recipe sets none for the stage
    # (runner: max(ray.row_timeout_s, this); the stage's own row_timeout_s wins): a stage whose healthy rows
    # take minutes (a long video re-encoded, a VLM on a CPU) must not have them stopped as hanging
    min_row_timeout_s: ClassVar[float] = 0.0

    def local_path_settings(self) -> tuple[str, ...]:
        """The settings of this configured step that may name a local file or folder: `path_settings` and
        `cache_dir`. A stage whose setting means a path only for some configurations (recaption's `model`:
        a folder for transformers, an open_clip name for coca, a served name for an endpoint) says so here.
        Why: a relative one was resolved in each Ray worker's working directory (another one on a cluster,
        or in a job's runtime_env), and a `--resume` from another folder read the saved relative path anew;
        the recipe makes them absolute against the working directory it loads in, as the runner does --output."""
        return self.path_settings + (("cache_dir",) if "cache_dir" in type(self).model_fields else ())

    def needs(self) -> tuple[str, ...]:
        """Columns this configured step reads (defaults to `reads`; config may change it)."""
        return self.reads

    def for_run(self, root) -> "Step":
        """This step as configured for the run directory `root`: a step with a `cache_dir` setting left
        unset caches in <root>/cache, so a re-run or --resume of the same run reuses what it paid for."""
        if "cache_dir" in type(self).model_fields and getattr(self, "cache_dir") is None:
            return self.model_copy(update={"cache_dir": str(Path(root) / "cache")})
        return self


class StageContractError(RuntimeError):
    """A stage broke the Stage contract (undeclared column or reason, wrong lengths): a bug in the stage,
    never a row outcome, so row isolation lets it through and the run stops (exit 1)."""


# Errors that are never a row's fault, so isolating rows cannot help: a contract bug, a model that cannot load
NOT_A_ROW_FAULT = (StageContractError, ModelLoadError)

# Reasons the base class sets when a stage raises (the stage itself never uses them).
STAGE_ERROR, STAGE_ERROR_UNISOLATED = "stage_error", "stage_error_unisolated"
schema.declare_reasons({
    STAGE_ERROR_UNISOLATED: "a stage raised on a batch holding this row and, with most rows tried raising "
                            "too, the row was not tried alone; the message is in `error`",
})
ERROR_CHARS = 300  # a row's `error` is one line of at most this many characters


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+>")


def error_line(err: BaseException, limit: int = ERROR_CHARS) -> str:
    """`Type: message` on one line, cut to `limit` characters (messages may hold user text and newlines).
    Object addresses (`<_io.BytesIO object at 0x7f..>`, as PIL writes) are dropped: the metadata of the same
    input must be the same in every run."""
    text = _ADDRESS.sub(">", " ".join(f"{type(err).__name__}: {err}".split()))
    return text if len(text) <= limit else text[:limit - 3] + "..."


def isolation_budget(n: int) -> int:
    """Calls always allowed on a batch of n rows: the first call plus 4 log2(n), enough to bisect down to two
    culprit rows (one costs ~2 log2 n). Past it, `isolate` goes on only while the rows that passed are at
    least as many as the rows that failed alone, so a batch where every row raises (a dead server, a stage
    bug) costs O(log n) calls, not O(n), while scattered bad rows are all found."""
    return 1 + 4 * max(1, (max(n, 1) - 1).bit_length())


def _watched_uids(table: pa.Table) -> list[str] | None:
    """The rows' uids when the runner watches this call for worker deaths (else None: nothing to guard)."""
    if crash_isolation.current() is None or "uid" not in table.column_names:
        return None
    return table.column("uid").to_pylist()


def _reason(err: BaseException) -> str:
    """A row that fails alone: its call ran past its time bound, killed its worker, or raised."""
    if crash_isolation.timed_out(err):
        return crash_isolation.STAGE_TIMEOUT
    return crash_isolation.STAGE_CRASHED if isinstance(err, crash_isolation.RangeCrashed) else STAGE_ERROR


def isolate(n: int, call, fail, budget: int, name: str = "", uids: list[str] | None = None):
    """Run `call(lo, hi)` on rows [0, n); when it raises, retry the range in halves down to single rows.

    A single row that still raises becomes `fail(lo, hi, err, STAGE_ERROR)`; one whose call killed the worker
    process on an earlier try becomes `fail(.., STAGE_CRASHED)`, one whose call ran past its time bound
    `fail(.., STAGE_TIMEOUT)` (with `uids`, the rows' uids, the calls are
    guarded by the part's crash markers when the runner watches this stage: curate.crash_isolation).
    Once `budget` calls are spent, bisection goes on only while the rows that passed are at least as many
    as those that failed alone
    (evidence that the rows, not the stage, are at fault: with 1% or 20% bad rows every one is found, at
    ~2 calls per culprit per halving); otherwise every range not yet tried becomes
    `fail(lo, hi, err, STAGE_ERROR_UNISOLATED)` with its parent's error. Returns [(lo, hi, result)] in row
    order. NOT_A_ROW_FAULT errors are raised, never isolated.
    """
    watch = crash_isolation.current() if uids is not None else None
    suspect = None
    if watch is not None:
        call, suspect = watch.guard(call, uids)
    pieces, todo, calls, alone, first, passed = [], [(0, n, None)], 0, [], "", 0
    while todo:
        lo, hi, parent_err = todo.pop()
        if parent_err is not None and calls >= budget and passed < len(alone):
            pieces.append((lo, hi, fail(lo, hi, parent_err, STAGE_ERROR_UNISOLATED)))
            continue
        calls += 1
        try:
            pieces.append((lo, hi, call(lo, hi)))
            passed += hi - lo
        except NOT_A_ROW_FAULT:
            raise
        except Exception as err:  # noqa: BLE001 - any exception a row causes fails that row alone
            if hi - lo == 1:
                alone.append(lo)
                pieces.append((lo, hi, fail(lo, hi, err, _reason(err))))
            else:
                mid = (lo + hi) // 2
                halves = [(mid, hi, err), (lo, mid, err)]  # left half first
                if suspect is not None and suspect(lo, mid) and not suspect(mid, hi):
                    halves.reverse()  # the half without a range that died runs first: its rows pass before a death
                todo += halves
            if parent_err is None:
                first = error_line(err)
    if calls > 1:
        untried = n - passed - len(alone)
        log.warning("stage %s raised on a batch of %d rows (%s): %d calls, %d rows failed alone%s", name, n, first,
                    calls, len(alone), f", {untried} failed untried (most rows tried raised)" if untried else "")
    pieces.sort(key=lambda p: p[0])
    return pieces


@dataclass
class Annotations:
    """What an annotating stage decided about the active rows it was given (positions 0..n-1 of `active`).

    columns: declared column -> one value per row (list or Arrow array); dropped: row -> reason;
    failed: row -> (reason, error); new_rows: derived rows (only for `adds_rows` stages), each a full
    row dict (or a Table) whose `parent_uid` is the uid of a row in this batch.
    """

    columns: dict[str, Any] = field(default_factory=dict)
    dropped: dict[int, str] = field(default_factory=dict)
    failed: dict[int, tuple[str, str | None]] = field(default_factory=dict)
    new_rows: list[dict] | pa.Table | None = None

    def drop(self, i: int, reason: str) -> None:
        self.dropped[int(i)] = reason

    def fail(self, i: int, reason: str, error: str | None = None) -> None:
        self.failed[int(i)] = (reason, error)


class Stage(Step):
    """Per-batch step. The annotator contract (what new stages implement):

    1. declare `writes` (new columns), `updates` (existing columns it may rewrite) and `reasons`;
    2. implement `annotate(active) -> Annotations`: it sees only the rows still in play (status ok);
    3. the base class selects those rows, scatters the columns back, sets status/stage/reason/error;
    4. writing an undeclared column or using an undeclared reason raises StageContractError (a bug);
    5. when `annotate` raises, the batch is retried in halves and only the culprit rows end
       `failed/stage_error` (bounded: `isolation_budget` and `isolate`); the rest of the part goes on.
    Stages that override `process(table)` instead (the download stages) get the same row isolation
    through `run`, which is what runners call.
    """

    # existing columns (from the input or an earlier stage) this stage may rewrite for its active rows
    updates: ClassVar[tuple[str, ...]] = ()

    def setup(self) -> None:
        """Load heavy state (models, clients) once per worker."""

    def annotate(self, active: pa.Table) -> Annotations:
        raise NotImplementedError(f"{type(self).__name__} implements neither annotate nor process")

    def run(self, table: pa.Table) -> pa.Table:
        """`process` with row-level fault isolation: what run_local and the runner call."""
        if type(self).process is Stage.process:
            return self.process(table)  # the annotator path isolates rows itself
        n = table.num_rows
        if n == 0:
            return self.process(table)

        def fail(lo, hi, err, reason):
            sub = table.slice(lo, hi - lo)
            return schema.mark(sub, schema.active_mask(sub), schema.FAILED, self.name, reason, error=error_line(err))

        pieces = isolate(n, lambda lo, hi: self.process(table if hi - lo == n else table.slice(lo, hi - lo)),
                         fail, isolation_budget(n), self.name, _watched_uids(table))
        if len(pieces) == 1:
            return pieces[0][2]
        if not self.adds_rows:
            return pa.concat_tables([r for _, _, r in pieces], promote_options="default")
        # input rows first, in order, then every piece's derived rows
        return pa.concat_tables([r.slice(0, hi - lo) for lo, hi, r in pieces]
                                + [r.slice(hi - lo) for lo, hi, r in pieces], promote_options="default")

    def process(self, table: pa.Table) -> pa.Table:
        """Every row of a part in, every row out; only rows with status ok may change (annotator contract)."""
        table = self._with_columns(table)
        mask = pc.fill_null(schema.active_mask(table), False)
        active = table if pc.all(mask).as_py() else table.filter(mask)  # (a copy of the active rows)
        k = active.num_rows
        if k == 0:
            return table

        def fail(lo, hi, err, reason):
            return Annotations(failed={i: (reason, error_line(err)) for i in range(hi - lo)})

        pieces = isolate(k, lambda lo, hi: self._annotations(active if hi - lo == k else active.slice(lo, hi - lo)),
                         fail, isolation_budget(k), self.name, _watched_uids(active))
        return self._scatter(table, mask, active, pieces)

    # -- the base class's side of the contract ------------------------------------------------------------

    def _with_columns(self, table: pa.Table) -> pa.Table:
        """Declared columns that do not exist yet (outside a runner) are added as nulls."""
        for col, typ in self.writes.items():
            if col not in table.column_names:
                table = table.append_column(pa.field(col, typ), pa.nulls(table.num_rows, typ))
        return table

    def _annotations(self, sub: pa.Table) -> Annotations:
        """Call `annotate` and check what it returned against the declarations (lengths, columns, reasons)."""
        ann = self.annotate(sub)
        where = f"stage {self.name}"
        if not isinstance(ann, Annotations):
            raise StageContractError(f"{where}: annotate returned {type(ann).__name__}, not Annotations")
        n, columns = sub.num_rows, {}
        for col, values in ann.columns.items():
            if col not in self.writes and col not in self.updates:
                raise StageContractError(f"{where} wrote column {col!r}, which it does not declare in writes/updates")
            if col not in sub.column_names:
                raise StageContractError(f"{where} updates column {col!r}, which the table does not have")
            typ = sub.schema.field(col).type
            arr = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values, typ)
            if len(arr) != n:
                raise StageContractError(f"{where}: column {col!r} has {len(arr)} values for {n} rows")
            columns[col] = arr.cast(typ) if arr.type != typ else arr
        ann.columns = columns
        for i, reason in [*ann.dropped.items(), *((i, r) for i, (r, _) in ann.failed.items())]:
            if not 0 <= i < n:
                raise StageContractError(f"{where}: row {i} out of range for a batch of {n}")
            if reason not in self.reasons:
                raise StageContractError(f"{where}: undeclared reason code {reason!r}")
        both = sorted(set(ann.dropped) & set(ann.failed))
        if both:
            raise StageContractError(f"{where}: rows both dropped and failed: {both[:5]}")
        if ann.new_rows is not None and len(ann.new_rows):
            if not self.adds_rows:
                raise StageContractError(f"{where} returned new rows but does not declare adds_rows")
            rows = ann.new_rows
            rows = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(rows, sub.schema)
            has_parent = schema.PARENT_COLUMN in rows.column_names
            parents = set(rows.column(schema.PARENT_COLUMN).to_pylist()) if has_parent else {None}
            if not parents <= set(sub.column("uid").to_pylist()):
                raise StageContractError(f"{where} added rows whose parent_uid is not a row of this batch")
            ann.new_rows = rows
        else:
            ann.new_rows = None
        return ann

    def _scatter(self, table: pa.Table, mask, active: pa.Table, pieces) -> pa.Table:
        """Write the pieces' annotations (rows 0..k-1 of `active`) back into `table` and set the outcomes."""
        n = table.num_rows
        m = mask.to_numpy(zero_copy_only=False) if isinstance(mask, pa.Array) else \
            mask.combine_chunks().to_numpy(zero_copy_only=False)
        full = np.flatnonzero(m)  # active row i sits at table row full[i]
        slot = np.zeros(n, np.int64)
        slot[full] = np.arange(len(full))
        spread = pa.array(slot, mask=~m)  # null where the row is not active
        for col in dict.fromkeys(c for _, _, a in pieces for c in a.columns):
            parts = [a.columns[col] if col in a.columns else active.column(col).slice(lo, hi - lo)
                     for lo, hi, a in pieces]  # a failed piece keeps what its rows had
            chunks = [c for p in parts for c in (p.chunks if isinstance(p, pa.ChunkedArray) else [p])]
            merged = pa.chunked_array(chunks, table.schema.field(col).type)
            table = schema.set_rows(table, mask, {col: merged.take(spread)})
        out: dict[str, list] = {"status": [None] * n, "stage": [None] * n, "reason": [None] * n, "error": [None] * n}
        decided = np.zeros(n, bool)
        failed = np.zeros(n, bool)
        for lo, _, a in pieces:
            for status, items in ((schema.DROPPED, ((i, r, None) for i, r in a.dropped.items())),
                                  (schema.FAILED, ((i, r, e) for i, (r, e) in a.failed.items()))):
                for i, reason, error in items:
                    row = full[lo + i]
                    decided[row], failed[row] = True, status == schema.FAILED
                    out["status"][row], out["stage"][row], out["reason"][row] = status, self.name, reason
                    out["error"][row] = error
        if decided.any():
            table = schema.set_rows(table, pa.array(decided), {c: out[c] for c in ("status", "stage", "reason")})
            if failed.any():
                table = schema.set_rows(table, pa.array(failed), {"error": out["error"]})
        new = [a.new_rows for _, _, a in pieces if a.new_rows is not None]
        if new:
            table = pa.concat_tables([table, *(schema.conform(t, table.schema).select(table.column_names)
                                               for t in new)])
        return table


class Filter(Stage):
    """Pure per-row decision. Subclasses implement `check(table)` over the active rows only.

    `check` returns a list with one entry per row: None to keep, or a reason code (from `reasons`) to drop.
    Rows are marked, never deleted.
    """

    def check(self, table: pa.Table) -> list[str | None]:
        raise NotImplementedError

    def annotate(self, active: pa.Table) -> Annotations:
        verdicts = self._verdicts(self.check(active), active.num_rows)
        return Annotations(dropped={i: v for i, v in enumerate(verdicts) if v is not None})

    def _verdicts(self, got, n: int) -> list:
        """check's answer as a list of None/str, or a StageContractError naming what is wrong with it. Any
        iterable is taken (a generator, a numpy array), so a plugin's natural idiom works; a result that is not
        one (None, one string) or a verdict that is not a reason code (a bool: 'keep?') is a bug in the filter,
        which must stop the run with that said, not fail every row as stage_error."""
        if got is None or isinstance(got, (str, bytes)) or not hasattr(got, "__iter__"):
            raise StageContractError(f"{self.name}: check returned {type(got).__name__}, not a list of "
                                     "verdicts (None to keep a row, else a reason code)")
        verdicts = got.to_pylist() if hasattr(got, "to_pylist") else list(got)  # a pyarrow array: its values
        if len(verdicts) != n:
            raise StageContractError(f"{self.name}: check returned {len(verdicts)} verdicts for {n} rows")
        bad = next((v for v in verdicts if v is not None and not isinstance(v, str)), None)
        if bad is not None:
            raise StageContractError(f"{self.name}: check returned {bad!r} ({type(bad).__name__}) as a verdict; "
                                     "return None to keep a row, else a reason code from `reasons`")
        return verdicts


class Job(Step):
    """Whole-dataset step, shaped as map -> group by key -> reduce -> decisions.

    `prepare` turns a batch of active rows (only the `reads` columns plus uid and part) into keyed records
    (zero or more per row) with a column named `key`; the runner groups all records of the dataset by key
    (a Ray shuffle in runs) and calls `reduce` on each group, which returns decision rows with columns
    uid, part, status, reason plus any of the job's `writes` columns. Rows without a decision are unchanged.
    `prior` records (from samples already kept by an earlier run of the same output, e.g. --retry-failed)
    take part in grouping with part = -1 and are never themselves changed.

    An optional first round, for jobs that need a global model before they can key rows (k-means
    centroids for semantic dedup): when `fit_rows` > 0 the runner reads a sample of at most `fit_rows`
    active rows (the `needs()` columns, spread over all parts) and calls `fit(sample)`, which returns the
    configured job used for everything after. Memory: the sample, never the corpus.

    Two optional steps make graph-shaped jobs (near-dup clustering) fit the same shape:
    - `finalize(reduced)` runs once, in the driver, on everything `reduce` returned (rows of
      `reduce_schema()`, e.g. candidate-pair edges) and turns it into decisions. The default returns
      `reduced` unchanged (reduce already returned decisions). Its memory is bounded by the size of the
      reduce output (for dedup: the duplicate edges), never by the corpus.
    - `complete(table)` runs per part, after the decisions are applied, on the part's full rows: for
      per-row outcomes that need no global view (a default cluster id, an "empty text" drop). Default:
      identity.
    Decisions with status ok only write the job's `writes` columns: the row's stage/reason stay as they are.

    Graph-shaped jobs (`graph = True`, see curate/dedup/graph.py ClusterJob) return edges from `reduce`; on
    large runs the runner finds their connected components as distributed rounds and calls `decide(labels)`
    on slices of the (node, root) labels instead of `finalize` on all edges.
    """

    kind: ClassVar[str] = "job"
    # False: groups with a single record cannot produce a decision and are skipped before reduce
    singletons_matter: ClassVar[bool] = False
    # True: `reduce` returns graph edges and the job implements `decide(labels)` (see above)
    graph: ClassVar[bool] = False
    # True (only with singletons_matter False, for jobs whose `prepare` is cheap enough to run twice, e.g.
    # MinHash): on Ray the runner first shuffles only the integer keys, keeps those seen at least twice, and
    # ships full records only for them. Most LSH band keys are unique, so the big shuffle shrinks to the
    # records that can pair at all.
    key_prepass: ClassVar[bool] = False

    def prepare(self, table: pa.Table) -> pa.Table:
        raise NotImplementedError

    def reduce(self, group: pa.Table) -> pa.Table:
        raise NotImplementedError

    # > 0: call `fit` on a sample of at most this many active rows before the map side
    fit_rows: ClassVar[int] = 0

    def fit(self, sample: pa.Table) -> "Job":
        return self

    def reduce_schema(self) -> pa.Schema:
        """What `reduce` returns: decisions, unless the job has its own `finalize`."""
        return self.decision_schema()

    def finalize(self, reduced: pa.Table) -> pa.Table:
        return reduced

    def in_process(self, table: pa.Table) -> pa.Table:
        """Decisions over all of a run's active rows at once (`uid`, `part`, the `needs()` columns; earlier
        batches' rows with part -1), in this process: the runner's small-run path. By default the same
        prepare -> group -> reduce -> finalize as `run_job_local`; a job may override it with a whole-table
        algorithm that makes the same decisions faster (minhash_dedup does)."""
        return self.finalize(reduce_records(self, self.prepare(table)))

    def complete(self, table: pa.Table) -> pa.Table:
        return table

    def decision_schema(self) -> pa.Schema:
        fields = [("uid", pa.string()), ("part", pa.int32()), ("status", pa.string()), ("reason", pa.string())]
        fields += list(self.writes.items())
        return pa.schema(fields)


def _check_decisions(job: Job, decisions: pa.Table) -> None:
    """A job's decisions hold only the statuses a run knows and the reasons the job declares, as a Stage's
    annotations must: a job of one's own that wrote status 'drop' had its parts committed with it, then the
    run died at finalisation (KeyError: 'drop') and left a run no --resume could finish."""
    status = decisions.column("status")
    bad = sorted(set(pc.unique(status).to_pylist()) - set(schema.STATUSES), key=str)
    if bad:
        raise StageContractError(f"job {job.name}: decision status {bad[0]!r} is not one of "
                                 f"{', '.join(schema.STATUSES)}")
    decided = pc.unique(decisions.filter(pc.fill_null(pc.not_equal(status, schema.OK), False)).column("reason"))
    undeclared = sorted(r for r in decided.to_pylist() if r not in job.reasons) if decided else []
    if undeclared:
        raise StageContractError(f"job {job.name}: undeclared reason code {undeclared[0]!r}")


def apply_decisions(table: pa.Table, job: Job, decisions: pa.Table) -> pa.Table:
    """Write a job's decisions into a part's rows (matched on uid), then let the job `complete` the part."""
    if decisions.num_rows == 0:
        return job.complete(table)
    _check_decisions(job, decisions)
    by_uid = {u: i for i, u in enumerate(decisions.column("uid").to_pylist())}
    uids = table.column("uid").to_pylist()
    hit = [u in by_uid for u in uids]
    if not any(hit):
        return job.complete(table)
    pick = [by_uid.get(u, 0) for u in uids]
    taken = decisions.take(pa.array(pick))
    # an ok decision (e.g. a cluster's representative) sets the job's columns, not who decided or why
    decided = pc.fill_null(pc.not_equal(taken.column("status"), schema.OK), False)
    values: dict[str, Any] = {
        "status": taken.column("status"),
        "reason": pc.if_else(decided, taken.column("reason"), table.column("reason")),
        "stage": pc.if_else(decided, pa.scalar(job.name), table.column("stage")),
    }
    for col in job.writes:
        values[col] = taken.column(col)
    # only rows still active can be decided on
    mask = pc.and_(pa.array(hit), schema.active_mask(table))
    return job.complete(schema.set_rows(table, mask, values))


def reduce_records(job: Job, records: pa.Table) -> pa.Table:
    """Group keyed records by `key` and reduce each group to decisions (groups of one only if the job asks)."""
    out = []
    if records.num_rows:
        if not job.singletons_matter:
            sizes = records.group_by("key").aggregate([("key", "count")])
            multi = sizes.filter(pc.greater(sizes.column("key_count"), 1)).column("key")
            records = records.filter(pc.is_in(records.column("key"), value_set=multi.combine_chunks()))
        records = records.take(pc.sort_indices(records, sort_keys=[("key", "ascending"), ("uid", "ascending")]))
        keys = records.column("key").to_pylist()
        start = 0
        for i in range(1, len(keys) + 1):
            if i == len(keys) or keys[i] != keys[start]:
                out.append(job.reduce(records.slice(start, i - start)))
                start = i
    rs = job.reduce_schema()
    if not out:
        return rs.empty_table()
    return pa.concat_tables([t.select(rs.names).cast(rs) for t in out])


def prepare_records(job: Job, table: pa.Table) -> pa.Table:
    """The map side of a job: active rows only, the columns it needs, then the job's own prepare."""
    active = table.filter(schema.active_mask(table))
    return job.prepare(active.select(list(dict.fromkeys(["uid", "part", *job.needs()]))))


def fit_sample(job: Job, tables: list[pa.Table]) -> pa.Table:
    """At most `job.fit_rows` active rows (uid, part and the needed columns), evenly strided over `tables`."""
    cols = list(dict.fromkeys(["uid", "part", *job.needs()]))
    active = [t.filter(schema.active_mask(t)).select(cols) for t in tables if t is not None and t.num_rows]
    total = sum(t.num_rows for t in active)
    if total == 0:
        return pa.concat_tables(active) if active else pa.table({c: [] for c in cols})
    step = max(1, -(-total // job.fit_rows))
    return pa.concat_tables([t.take(pa.array(np.arange(0, t.num_rows, step))) for t in active])


def run_job_local(job: Job, table: pa.Table, prior: pa.Table | None = None) -> pa.Table:
    """Execute a Job in-process (tests, tiny inputs): the same map/group/reduce the runner does on Ray."""
    if job.fit_rows:
        job = job.fit(fit_sample(job, [table] + ([prior] if prior is not None else [])))
    records = prepare_records(job, table)
    if prior is not None and prior.num_rows:
        records = pa.concat_tables([prepare_records(job, prior), records], promote_options="default")
    return job.finalize(reduce_records(job, records))


def run_local(steps: list[Step], table: pa.Table, run_schema: pa.Schema | None = None) -> pa.Table:
    """Run a list of steps over one table in a plain loop: the reference semantics of a pipeline."""
    for step in steps:
        if run_schema is not None:
            table = schema.conform(table, run_schema)
        if isinstance(step, Job):
            table = apply_decisions(table, step, run_job_local(step, table))
        else:
            step.setup()
            table = step.run(table)
    return table
