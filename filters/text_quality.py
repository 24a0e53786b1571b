"""`text_quality`: drop captions that are links, or a few tokens repeated (SEO tag soup, spam alt-text).

Complements `caption_text` (empty / length / whole-caption boilerplate): these checks look at the
caption's tokens. Pure Python over whitespace tokens, so it costs about as much as splitting the text.
Only the caption's first `max_chars` characters are judged (curate.textmatch bounds what a pattern sees):
a 5 MB caption costs what a 16k-character one does, and its verdict is that of its beginning.
"""
from __future__ import annotations

from collections import Counter
from typing import ClassVar

import pyarrow as pa
from pydantic import Field

from curate.stage import Filter, register
from curate.textmatch import MAX_MATCH_CHARS, clip, compile_linear

# a token that is a link: scheme://..., www...., or a bare domain with a path / common TLD (RE2: linear time)
URL_TOKEN = compile_linear(
    r"^[(\[<\"']*("
    r"[a-z][a-z0-9+.\-]*://\S+"
    r"|www\.\S+"
    r"|[a-z0-9\-]+(\.[a-z0-9\-]+)*\.(com|org|net|edu|gov|io|co|uk|de|fr|ru|jp|cn|info|biz|html?|php|aspx?)(/\S*)?"
    r")[)\]>\"',.;:!?]*$",
    ignore_case=True,
)


def repeated_ngram_fraction(tokens: list[str], n: int) -> float:
    """Share of the caption's n-grams that are copies of an n-gram seen earlier in it (Gopher-style)."""
    if len(tokens) < n + 1:
        return 0.0
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams)


@register
class TextQuality(Filter):
    """Drop URL-like captions and captions dominated by one token or by repeated n-grams."""

    name: ClassVar[str] = "text_quality"
    reads: ClassVar[tuple[str, ...]] = ("text",)
    reasons: ClassVar[dict[str, str]] = {
        "caption_url": "links make up at least max_url_fraction of the caption's tokens",
        "caption_repeated_token": "the most common token is more than max_token_fraction of the tokens",
        "caption_repeated_ngram": "more than max_ngram_fraction of the caption's n-grams repeat an earlier one",
    }

    # 0.5: "www.shop.com/item/123" and "photo http://x.co/a.jpg" go; "sunset over the bay https://..." stays
    max_url_fraction: float = Field(0.5, gt=0.0, le=1.0)  # drop when at least this share of tokens are links
    max_token_fraction: float = Field(0.5, gt=0.0, le=1.0)  # drop when one token is more than this share of tokens
    max_ngram_fraction: float = Field(0.3, gt=0.0, le=1.0)  # drop when more than this share of n-grams repeat
    ngram: int = Field(2, ge=1, le=8)  # n-gram length in tokens for max_ngram_fraction
    # repetition checks only judge captions with at least this many tokens ("red red" is not spam)
    min_tokens: int = Field(4, ge=1)  # shorter captions skip both repetition checks
    # judge only the first max_chars characters (see the module doc)
    max_chars: int = Field(MAX_MATCH_CHARS, ge=1, le=MAX_MATCH_CHARS)  # judge only this many leading chars

    def verdict(self, text: str | None) -> str | None:
        tokens = clip(text or "", self.max_chars).lower().split()
        if not tokens:
            return None  # caption_text owns empty captions
        urls = sum(1 for t in tokens if URL_TOKEN.match(t))
        if urls and urls / len(tokens) >= self.max_url_fraction:
            return "caption_url"
        if len(tokens) < self.min_tokens:
            return None
        words = [t.strip(".,;:!?()[]\"'") for t in tokens]
        words = [w for w in words if w] or tokens
        if Counter(words).most_common(1)[0][1] / len(words) > self.max_token_fraction:
            return "caption_repeated_token"
        if repeated_ngram_fraction(words, self.ngram) > self.max_ngram_fraction:
            return "caption_repeated_ngram"
        return None

    def check(self, table: pa.Table) -> list[str | None]:
        return [self.verdict(t) for t in table.column("text").to_pylist()]
