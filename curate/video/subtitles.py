"""WebVTT subtitle/caption sidecars (parsed with webvtt-py) and the text of the cues that overlap a clip."""
from __future__ import annotations

import io

import pyarrow as pa

CUE_TYPE = pa.list_(pa.struct([("start", pa.float64()), ("end", pa.float64()), ("text", pa.string())]))


class SubtitleError(ValueError):
    pass


def _seconds(stamp: str) -> float:
    parts = [float(p) for p in stamp.replace(",", ".").split(":")]
    secs = 0.0
    for p in parts:
        secs = secs * 60 + p
    return secs


def parse_vtt(text: str) -> tuple[list[dict], int]:
    """(cues as [{start, end, text}], number of cues skipped). Seconds; text with markup removed, lines
    joined by a space. A cue that does not end after it starts (`00:00:05.000 --> 00:00:01.000`) is
    skipped, as a browser never shows it: kept, it overlapped no clip, so every clip of the video got
    empty text and was dropped as caption_empty."""
    import webvtt

    try:
        vtt = webvtt.from_buffer(io.StringIO(text)) if hasattr(webvtt, "from_buffer") else webvtt.read_buffer(io.StringIO(text))
    except Exception as err:  # noqa: BLE001 - webvtt-py raises its own MalformedFileError and friends
        raise SubtitleError(f"not a WebVTT file: {err}") from None
    cues, skipped = [], 0
    for c in vtt:
        words = " ".join(c.text.split())
        start, end = _seconds(c.start), _seconds(c.end)
        if end <= start:
            skipped += 1
        elif words:
            cues.append({"start": start, "end": end, "text": words})
    return cues, skipped


def overlapping(cues: list[dict] | None, start: float, end: float) -> list[dict]:
    """Cues that overlap [start, end) by more than a few milliseconds."""
    return [c for c in cues or [] if min(c["end"], end) - max(c["start"], start) > 1e-3]


def clip_text(cues: list[dict]) -> str:
    """Cue texts in order, with consecutive repeats (rolling captions) said once."""
    out: list[str] = []
    for c in cues:
        if not out or out[-1] != c["text"]:
            out.append(c["text"])
    return " ".join(out)
