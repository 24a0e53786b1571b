"""`caption_text`: drop captions that carry no description: empty, too short/long, or boilerplate alt-text."""
from __future__ import annotations

from functools import lru_cache
from typing import ClassVar

import pyarrow as pa
from pydantic import Field, field_validator

from curate.stage import Filter, register
from curate.textmatch import MAX_MATCH_CHARS, PatternError, compile_linear

# Whole-caption patterns (matched against the lower-cased, whitespace-collapsed text) for alt-text that
# describes nothing: file names, camera defaults, UI words. RE2 syntax (curate.textmatch: linear time;
# \p{L}/\p{Nd} because RE2's \w and \d are ASCII-only).
DEFAULT_BOILERPLATE = [
    r"[\p{L}\p{N}_\-. ]*\.(jpe?g|png|gif|webp|bmp|tiff?|svg)",
    r"(img|dsc|dscn|dscf|pic|pict|image|photo|screenshot|untitled|scan)[_\- ]?\p{Nd}*",
    r"(click|tap) (here|to enlarge|to zoom|for more)",
    r"(download|download now|read more|learn more|see more|view more|more info|buy now|shop now)",
    r"(image|photo|picture|thumbnail|placeholder|logo|icon|banner|untitled|no image|null|none|n/?a|alt|default)",
    # any run of UI/camera words, numbers and dates: "default image", "image not found", "screenshot 2016-02-26"
    r"((default|view|no|missing|placeholder|full|large|small|thumbnail|thumb|image|images|photo|photos|picture|pic|"
    r"img|not|found|available|description|stock|click|here|to|enlarge|zoom|untitled|screenshot|scan|logo|icon|banner|[\p{Nd}\-_:./]+)\s*)+",
]


def normalise(text: str) -> str:
    """Lower-case and collapse white space (shared with exact text dedup)."""
    return " ".join(text.lower().split())


@lru_cache(maxsize=32)
def matchers(patterns: tuple[str, ...]) -> tuple:
    """The compiled (RE2, linear-time) boilerplate patterns; cached because check() runs per batch."""
    return tuple(compile_linear(p) for p in patterns)


def is_boilerplate(text: str, patterns: tuple[str, ...] = tuple(DEFAULT_BOILERPLATE)) -> bool:
    """Whether normalised `text` (at most MAX_MATCH_CHARS long: callers route longer text elsewhere) is
    wholly boilerplate."""
    return len(text) <= MAX_MATCH_CHARS and any(p.fullmatch(text) for p in matchers(patterns))


@register
class CaptionText(Filter):
    """Drop empty, too short/long and boilerplate captions (file names, 'click here', 'image not found')."""

    name: ClassVar[str] = "caption_text"
    reads: ClassVar[tuple[str, ...]] = ("text",)
    reasons: ClassVar[dict[str, str]] = {
        "caption_empty": "no text, or only white space",
        "caption_boilerplate": "the whole caption matches a boilerplate pattern (file name, 'click here', ...)",
        "caption_too_short": "fewer than min_words words",
        "caption_too_long": "more than max_words words, or more than max_chars characters",
    }

    min_words: int = Field(2, ge=0)  # fewer whitespace-separated words: caption_too_short; 0 = no minimum
    max_words: int = Field(256, ge=1)  # more words: caption_too_long
    # longer captions go as caption_too_long before any pattern runs: boilerplate is short, and this bounds
    # the text a regex sees (curate.textmatch). 16k characters is far above max_words' 256 words.
    max_chars: int = Field(MAX_MATCH_CHARS, ge=1, le=MAX_MATCH_CHARS)  # more chars: caption_too_long (checked first)
    boilerplate: list[str] = Field(  # RE2 patterns, each matched against the whole lower-cased caption
        default_factory=lambda: list(DEFAULT_BOILERPLATE))
    use_recaption: bool = False  # judge `recaption` (from an earlier recaption stage) where set, else `text`

    def needs(self) -> tuple[str, ...]:
        return ("text", "recaption") if self.use_recaption else self.reads

    @field_validator("boilerplate")
    @classmethod
    def _compiles(cls, patterns: list[str]) -> list[str]:
        for p in patterns:
            try:
                compile_linear(p)
            except PatternError as err:
                raise ValueError(f"bad regular expression {p!r}: {err}") from None
        return patterns

    def check(self, table: pa.Table) -> list[str | None]:
        patterns = tuple(self.boilerplate)
        out: list[str | None] = []
        texts = table.column("text").to_pylist()
        if self.use_recaption:
            texts = [r if r else t for t, r in zip(texts, table.column("recaption").to_pylist())]
        for text in texts:
            t = normalise(text or "")
            words = len(t.split())
            if not t:
                out.append("caption_empty")
            elif len(t) > self.max_chars:
                out.append("caption_too_long")
            elif is_boilerplate(t, patterns):
                out.append("caption_boilerplate")
            elif words < self.min_words:
                out.append("caption_too_short")
            elif words > self.max_words:
                out.append("caption_too_long")
            else:
                out.append(None)
        return out
