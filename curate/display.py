"""Show data strangers wrote (captions, uids, URLs, error text) on a terminal without it acting on it.

Two things in a cell can act: rich markup (`[bold]`, and `[/]`, which crashed `curate query`), and
terminal control sequences (`\\x1b[2J` clears the screen; C1 controls such as U+009B are CSI on some
terminals). Cells become rich `Text` (never parsed as markup) with every control character but newline
and tab written as a visible escape (`\\x1b`); JSON output escapes control characters losslessly.
"""
from __future__ import annotations

import json
import re

from rich.text import Text

# C0 controls except \t and \n, DEL, C1 controls; plus the Unicode line/paragraph separators and the
# bidirectional overrides that reorder what a terminal shows
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_JSON_CONTROL = re.compile("[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """`text` with control characters (but newline and tab) shown as \\xNN / \\uNNNN escapes."""
    return _CONTROL.sub(lambda m: _escape(m.group()), text)


def _escape(ch: str) -> str:
    n = ord(ch)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}"


CELL_CHARS = 500  # a table cell shows at most this many characters (csv and json keep every one)


def cell(value, limit: int | None = CELL_CHARS) -> Text:
    """A table cell for any value: literal text (no markup), control characters escaped, and cut to `limit`
    characters with a note of how many more there are (a 100k-character caption would fill the terminal;
    `--format csv` or `json` gives the whole value)."""
    text = "" if value is None else printable(str(value))
    if limit is not None and len(text) > limit:
        text = f"{text[:limit]}... (+{len(text) - limit} characters; --format json shows all)"
    return Text(text)


def json_line(obj) -> str:
    """`obj` as one JSON line whose text cannot drive a terminal: json escapes C0 controls itself; C1
    controls and bidi overrides are escaped here too (\\u009b is the same string to any JSON reader)."""
    text = json.dumps(obj, default=str, ensure_ascii=False)
    return _JSON_CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
