"""Read a JSONL input line by line when Arrow's typed reader refuses it, so one bad record fails alone.

Arrow reads a JSON file as one typed table: a single record whose values have another type than the
rest's (`"texts": [123, null]` among lists of strings) or one line that is not JSON refused the whole
input ("JSON parse error: Column(/texts/[]) changed from string to number in row 13"). Good files keep
Arrow's fast path (curate/io/reader.py); only a file that Arrow refuses is read here, with Python's json
(a few microseconds a line). Each field's type is the one most of its first SAMPLE values have (the
outlier is the record that is wrong, not the file); a line that is not a JSON object, is longer than the
line bound, or holds a value that does not fit its field's type becomes a row of its own that fails at
`input` as `input_bad_record`, with the file, line number and why in its `error`.

`JsonLines` offers what curate uses of a `pyarrow.dataset.Dataset`: `schema`, `count_rows()` and
`to_batches(batch_size, columns)`.
"""
from __future__ import annotations

import json
from collections import Counter
from functools import cached_property

import pyarrow as pa

from curate import schema as cschema
from curate.io import inputfs, utf8

REASONS = {
    "input_bad_record": "a JSONL line that is not a JSON object, or whose values have other types than the "
                        "file's other records (e.g. a number where the others hold text); the other lines are read",
}
cschema.declare_reasons(REASONS)

SAMPLE = 10_000  # non-null values of a field that decide its type
ERROR_CHARS = 300  # of a bad line's message, kept in its row's `error`


class NoGoodRecords(ValueError):
    """Not one line of the input is a JSON object: the input as a whole is unreadable."""


def _lines(path: str, max_line: int):
    """(line number, bytes or None when the line is over max_line bytes) of each non-blank line."""
    with inputfs.open_read(path) as f:
        n = 0
        while True:
            line = f.readline(max_line + 1)
            if not line:
                return
            n += 1
            if len(line) > max_line and not line.endswith(b"\n"):
                while (rest := f.readline(1 << 20)) and not rest.endswith(b"\n"):  # skip the rest of it
                    pass
                yield n, None
            elif line.strip():
                yield n, line


def _parse(line: bytes | None, max_line: int) -> tuple[dict | None, str | None]:
    """(record, None) for a JSON object line, else (None, why); a line whose text is not UTF-8 (raw bytes,
    or a \\ud800 escape that is half a UTF-16 pair) says so in words that start with utf8.NOT_TEXT."""
    if line is None:
        return None, f"line longer than {max_line} bytes"
    text, why = utf8.decode(line)
    if why:
        return None, why
    try:
        rec = json.loads(text)
    except ValueError as err:
        return None, f"not valid JSON: {err}"
    if not isinstance(rec, dict):
        return None, f"not a JSON object but {type(rec).__name__}"
    try:
        json.dumps(rec, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as err:  # Arrow cannot hold it either (it raised UnicodeEncodeError, a traceback)
        return None, f"{utf8.NOT_TEXT}: a \\u{ord(err.object[err.start]):04x} escape is half of a UTF-16 pair, no character"
    return rec, None


def _field_type(values: list) -> pa.DataType:
    """The type of a field's sample values; when they disagree, the type most of them have (so the one
    wrong record fails, not the others). All-null fields are strings."""
    try:
        t = pa.array(values).type
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        counts: Counter = Counter()
        for v in values:
            if v is None:
                continue
            try:
                counts[pa.array([v]).type] += 1
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
                pass
        t = max(counts, key=lambda k: (counts[k], "null" not in str(k))) if counts else pa.null()
    return pa.string() if pa.types.is_null(t) else t


class JsonLines:
    """JSONL files read line by line (see the module docstring); `why` is Arrow's refusal, kept for the
    one-line error when no line is readable."""

    def __init__(self, files: list[str], max_line: int, why: str = ""):
        self.files, self.max_line, self.why = files, max_line, why

    def _records(self):
        """(where, record or None, why) for each non-blank line of every file."""
        for path in self.files:
            for n, line in _lines(path, self.max_line):
                rec, why = _parse(line, self.max_line)
                yield f"{path}:{n}", rec, why

    @cached_property
    def schema(self) -> pa.Schema:
        """Every field of every record (in order of first appearance), each typed by up to SAMPLE of its
        non-null values. The whole file is read: a field that first appears, or first holds a value, after
        the first SAMPLE records (an optional `license`, a `width` null until then) failed every record that
        has it. Memory is bounded by SAMPLE values per field, not by the file."""
        values: dict[str, list] = {}
        any_record = False
        self._rows = 0
        for _, rec, _ in self._records():
            self._rows += 1  # every non-blank line is a row, good or bad (count_rows)
            if rec is None:
                continue
            any_record = True
            for k, v in rec.items():
                seen = values.setdefault(k, [])
                if v is not None and len(seen) < SAMPLE:
                    seen.append(v)
        if not any_record:
            raise NoGoodRecords(self.why or "no line is a JSON object")
        return pa.schema([(k, _field_type(v)) for k, v in values.items()])

    def count_rows(self) -> int:
        """Every non-blank line (a bad one is a failed row), counted by the pass that reads the schema."""
        self.schema  # noqa: B018
        return self._rows

    def to_batches(self, batch_size: int = 65536, columns: list[str] | None = None):
        """Record batches of the file's rows, each line one row (in order): the schema's columns (or
        `columns` of them) and `_reason`/`_error`, set on the rows of bad lines (all their columns null)."""
        buf: list[tuple[str, dict | None, str | None]] = []
        for item in self._records():
            buf.append(item)
            if len(buf) >= batch_size:
                yield self._batch(buf, columns)
                buf = []
        if buf:
            yield self._batch(buf, columns)

    def _problems(self, rows: list) -> list[str | None]:
        """Why each row is bad (None: fine): its line's own problem, or the first value that does not fit its
        field's type (every field of the file is in the schema)."""
        whys = [why for _, _, why in rows]
        for f in self.schema:
            values = [None if rec is None else rec.get(f.name) for _, rec, _ in rows]
            try:
                pa.array(values, f.type)
                continue
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
                pass
            for i, v in enumerate(values):  # find the values that do not fit: their rows fail
                try:
                    pa.array([v], f.type)
                except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as err:
                    whys[i] = whys[i] or f"field {f.name!r} is not {f.type} like the file's other records: {err}"
        return whys

    def _batch(self, rows: list, columns: list[str] | None) -> pa.RecordBatch:
        whys = self._problems(rows)
        fields = [self.schema.field(c) for c in columns] if columns else list(self.schema)
        arrays = [pa.array([rec.get(f.name) if why is None else None for (_, rec, _), why in zip(rows, whys)], f.type)
                  for f in fields]
        errors = [None if why is None else f"{where}: {why}"[:ERROR_CHARS] for (where, _, _), why in zip(rows, whys)]
        reasons = [None if e is None else utf8.REASON if why.startswith(utf8.NOT_TEXT) else "input_bad_record"
                   for e, why in zip(errors, whys)]
        arrays += [pa.array(reasons, pa.string()),
                   pa.array(errors, pa.string())]
        return pa.RecordBatch.from_arrays(arrays, names=[f.name for f in fields] + ["_reason", "_error"])
