"""The typed manifest of a run directory (out/manifest.json).

Why a model and not a dict: the manifest is written by the runner, refilter and reshard and read by validate,
report, the CLI and resume; a typed object makes a misspelt key an error instead of a silent None. The JSON on
disk keeps the shape it always had (part numbers as string keys, no null fields), so runs written by earlier
versions load, and keys this version does not know are kept and written back unchanged.
Fields are documented in docs/run_directory.md.
"""
from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

MANIFEST_FORMAT = 1
RUNNING, COMPLETE = "running", "complete"
RETRY = "retry-failed"  # a batch kind
COMMITTING = "committing"  # a retry batch moving its finished parts into place (the run is `running` then)


class ManifestError(Exception):
    """A manifest.json that cannot be read as a manifest (one line for the user)."""


class _Open(BaseModel):
    """A manifest section: known fields typed, unknown keys kept (newer or older versions wrote them).

    Item access (`m["counts"]`, `m.get("status")`) is read-only compatibility for code written against the
    manifest when it was a plain dict: it returns plain JSON data (a copy), as the dict did, so callers can
    `json.dumps` it; new code uses attributes.
    """
    model_config = ConfigDict(extra="allow", validate_assignment=True)

    def __getitem__(self, key: str) -> Any:
        if key in type(self).model_fields or key in (self.model_extra or {}):
            return _plain(getattr(self, key))
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        value = getattr(self, key, None) if key in type(self).model_fields or key in (self.model_extra or {}) else None
        return default if value is None else _plain(value)


def _plain(value: Any) -> Any:
    """Models (also inside lists and dicts) as the JSON data they are written as (string keys included)."""
    from pydantic_core import to_jsonable_python

    return json.loads(json.dumps(to_jsonable_python(value, exclude_none=True)))


class InputInfo(_Open):
    """The input list's identity (refuses a resume over a changed input) and its row count once split."""
    path: str | None = None
    files: int | None = None
    bytes: int | None = None
    mtime_ns: int | None = None
    version: str | None = None  # remote files: a digest of their versions (reader.fingerprint); None: local
    rows: int | None = None  # input rows, set when the input has been split into parts


class PartInfo(_Open):
    """One part: its input rows, the batch that made it and, once committed, its kept and failed counts."""
    rows: int
    batch: int = 0
    kept: int | None = None
    failed: int | None = None
    images: int | None = None  # kept samples with an image member (None: not recorded, e.g. older runs)
    committed: bool | None = None
    stages: dict[str, Any] | None = None  # per-stage row counts and seconds for this part (curate.progress)


class Batch(_Open):
    """One pass over a set of parts: the first run, a `--retry-failed`, or a reshard."""
    kind: str
    status: str
    parts: list[int] | None = None  # [first, last] part number
    rows: int | None = None
    recipe: dict | None = None  # retry-failed: the recipe it ran with


class Counts(_Open):
    """The funnel, counted from meta/ at finalisation: rows, kept, dropped and failed by "stage/reason"."""
    rows: int = 0
    kept: int = 0
    dropped: dict[str, int] = Field(default_factory=dict)
    failed: dict[str, int] = Field(default_factory=dict)
    derived: int | None = None  # rows a stage derived from input rows (video clips), included in rows


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class Manifest(_Open):
    format: int = MANIFEST_FORMAT
    status: str = RUNNING
    name: str = ""
    created: str | None = None
    updated: str | None = None
    recipe_sha256: str | None = None  # of recipe.yaml as the run wrote it (None in runs before this field)
    versions: dict[str, str] = Field(default_factory=dict)
    input: InputInfo = Field(default_factory=InputInfo)
    named_files: dict[str, dict] | None = None  # None: a run from before named files were checked
    batches: list[Batch] = Field(default_factory=list)
    parts: dict[int, PartInfo] = Field(default_factory=dict)
    timings: dict[str, float] = Field(default_factory=dict)  # seconds: split, segmentN, jobN:<name>
    stage_timings: dict[str, Any] | None = None  # per-stage detail, for the progress code to fill
    jobs: dict[str, dict] = Field(default_factory=dict)  # what each job did ("job0:dedup": {...})
    extra_columns: dict[str, str] = Field(default_factory=dict)  # input columns carried along: name -> type
    extra_schema: str | None = None  # the same as a base64 Arrow schema (nested types survive)
    counts: Counts | None = None  # set when the run completes
    note: str | None = None
    refilter: dict | None = None  # refilter runs: {"from", "where", "dropped"}
    reshard: dict | None = None  # resharded runs: {"from", "samples_per_shard"}

    @property
    def complete(self) -> bool:
        return self.status == COMPLETE

    @property
    def pending_retry(self) -> Batch | None:
        """The last batch when it is a --retry-failed that has not finished (None otherwise). While it runs,
        and after it stops, the run stays `complete` with its earlier parts: the retry's parts are staged
        under _work/retry until all are committed (RunDir.staged)."""
        last = self.batches[-1] if self.batches else None
        return last if last is not None and last.kind == RETRY and last.status != COMPLETE else None

    def settled(self) -> Manifest:
        """A copy without an unfinished --retry-failed (its batch and its staged parts): the run its readers
        see, for a command that writes a new run from this one (refilter), which must not carry a retry
        that never reached its meta/ over as if it had finished."""
        out = self.model_copy(deep=True)
        retry = out.pending_retry
        if retry is not None:
            out.batches.pop()
            lo, hi = retry.parts or (0, -1)
            out.parts = {k: p for k, p in out.parts.items() if not lo <= k <= hi}
        return out

    @property
    def current_batch(self) -> Batch:
        return self.batches[-1]

    def next_part(self) -> int:
        return max(self.parts) + 1 if self.parts else 0

    def add_timing(self, key: str, seconds: float) -> None:
        """Add seconds to a timing (a resumed segment adds to what the first attempt took)."""
        self.timings[key] = round(self.timings.get(key, 0) + seconds, 3)

    # -- JSON -------------------------------------------------------------------------------------------
    @classmethod
    def from_json(cls, text: str | bytes, where: str = "manifest.json") -> Manifest:
        try:
            data = json.loads(text)
        except ValueError as err:
            raise ManifestError(f"{where} is not valid JSON: {err}") from None
        return cls.from_dict(data, where)

    @classmethod
    def from_dict(cls, data: Any, where: str = "manifest.json") -> Manifest:
        if not isinstance(data, dict):
            raise ManifestError(f"{where} is not a curate manifest (a JSON object)")
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            first = err.errors()[0]
            loc = ".".join(str(x) for x in first["loc"])
            raise ManifestError(f"{where}: {loc}: {first['msg']}") from None

    def to_dict(self) -> dict:
        """The JSON shape on disk: null fields left out (as the dict manifest never wrote them)."""
        return self.model_dump(mode="json", exclude_none=True)

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), indent=2).encode()


def recipe_hash(recipe_yaml: bytes) -> str:
    return hashlib.sha256(recipe_yaml).hexdigest()
