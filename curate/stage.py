"""Stage, Filter and Job: the three kinds of pipeline step, and the registry of their public names.

A Stage sees one batch (a pyarrow Table holding one input part) and returns it with columns added or
rows marked. A Filter is a pure per-row keep/drop check. A Job sees the whole dataset (dedup clustering,
global quantiles): it maps rows to keyed records, reduces each key group to decisions, and the runner
applies the decisions between streaming segments. None of these import Ray: they run in a plain loop in
tests and inside Ray workers in runs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict

from curate import schema

REGISTRY: dict[str, type["Step"]] = {}


def register(cls: type["Step"]) -> type["Step"]:
    """Class decorator: make a step available to recipes under `cls.name`."""
    if not getattr(cls, "name", None):
        raise TypeError(f"{cls.__name__} has no name")
    if cls.name in REGISTRY and REGISTRY[cls.name] is not cls:
        raise TypeError(f"step name {cls.name!r} is already registered by {REGISTRY[cls.name].__name__}")
    REGISTRY[cls.name] = cls
    schema.declare_reasons(cls.reasons)
    return cls


# Packages whose modules register shipped steps. Every public module in them is imported, so a new
# step needs no edit here; modules must keep heavy imports (torch, models) inside functions.
STEP_PACKAGES = ("curate.filters", "curate.download", "curate.dedup", "curate.scorers", "curate.caption",
                 "curate.video", "curate.interleaved", "curate.balance")


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
                importlib.import_module(f"{package_name}.{info.name}")

    return REGISTRY


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

    def needs(self) -> tuple[str, ...]:
        """Columns this configured step reads (defaults to `reads`; config may change it)."""
        return self.reads

    def for_run(self, root) -> "Step":
        """This step as configured for the run directory `root`: a step with a `cache_dir` setting left
        unset caches in <root>/cache, so a re-run or --resume of the same run reuses what it paid for."""
        if "cache_dir" in type(self).model_fields and getattr(self, "cache_dir") is None:
            return self.model_copy(update={"cache_dir": str(Path(root) / "cache")})
        return self


class Stage(Step):
    """Per-batch step. `process` gets every row of a part and may only change rows with status ok."""

    def setup(self) -> None:
        """Load heavy state (models, clients) once per worker."""

    def process(self, table: pa.Table) -> pa.Table:
        raise NotImplementedError


class Filter(Stage):
    """Pure per-row decision. Subclasses implement `check(table)` over the active rows only.

    `check` returns a list with one entry per row: None to keep, or a reason code (from `reasons`) to drop.
    Rows are marked, never deleted.
    """

    def check(self, table: pa.Table) -> list[str | None]:
        raise NotImplementedError

    def process(self, table: pa.Table) -> pa.Table:
        active = schema.active_mask(table)
        idx = np.flatnonzero(active.to_numpy(zero_copy_only=False))
        if len(idx) == 0:
            return table
        verdicts = self.check(table.take(pa.array(idx)))
        if len(verdicts) != len(idx):
            raise RuntimeError(f"{self.name}: check returned {len(verdicts)} verdicts for {len(idx)} rows")
        reasons: list[str | None] = [None] * table.num_rows
        for i, verdict in zip(idx, verdicts):
            if verdict is not None:
                if verdict not in self.reasons:
                    raise RuntimeError(f"{self.name}: undeclared reason code {verdict!r}")
                reasons[i] = verdict
        drop = pa.array([r is not None for r in reasons])
        if not pc.any(drop).as_py():
            return table
        return schema.mark(table, drop, schema.DROPPED, self.name, reasons)


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

    def complete(self, table: pa.Table) -> pa.Table:
        return table

    def decision_schema(self) -> pa.Schema:
        fields = [("uid", pa.string()), ("part", pa.int32()), ("status", pa.string()), ("reason", pa.string())]
        fields += list(self.writes.items())
        return pa.schema(fields)


def apply_decisions(table: pa.Table, job: Job, decisions: pa.Table) -> pa.Table:
    """Write a job's decisions into a part's rows (matched on uid), then let the job `complete` the part."""
    if decisions.num_rows == 0:
        return job.complete(table)
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
            table = step.process(table)
    return table
