"""Pattern matching on text strangers wrote (captions, alt text, document text): linear time, bounded input.

Python's `re` backtracks: a pattern with nested or overlapping quantifiers (`((a|\\d+)\\s*)+`) takes
exponential time on a short crafted caption (41 digits and a symbol hung a whole run). RE2 (google-re2)
runs every pattern as an automaton, in time linear in the text, and refuses the features that cannot be
(backreferences, lookaround). So every regex curate applies to user text, and every pattern a recipe
supplies, goes through `compile_linear`.

RE2 differences a recipe author sees: no backreferences or lookaround; `\\w`, `\\d`, `\\s` and `\\b` are
ASCII-only (write `\\p{L}`, `\\p{N}`, `\\p{Nd}` for Unicode letters, numbers and digits, as the shipped
patterns do).

On top of linear time, the text a pattern sees is bounded (`MAX_MATCH_CHARS`): each stage says what it
does with longer text (caption_text gives it a reason; text_quality judges its first characters).
"""
from __future__ import annotations

import re2

# Longest text any pattern is run on. Captions and alt text are far shorter (LAION's 99.9th percentile
# is under 1,000 characters); a 16k-character "caption" is a document or junk, judged by its stage.
MAX_MATCH_CHARS = 16_384

# RE2 builds its automaton within this budget; a pattern like (a{1000}){1000} fails to compile instead
# of taking gigabytes.
_MAX_MEM = 8 << 20


class PatternError(ValueError):
    """A pattern RE2 cannot run (bad syntax, or a feature that is not linear-time)."""


def compile_linear(pattern: str, ignore_case: bool = False):
    """Compile `pattern` with RE2 (linear-time matching); PatternError with RE2's reason if it cannot be."""
    options = re2.Options()
    options.log_errors = False  # the message goes into PatternError, not onto stderr
    options.max_mem = _MAX_MEM
    options.case_sensitive = not ignore_case
    try:
        return re2.compile(pattern, options)
    except re2.error as err:
        reason = err.args[0] if err.args else err
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise PatternError(f"{reason} (patterns use RE2 syntax: no backreferences or lookaround)") from None


def clip(text: str, limit: int = MAX_MATCH_CHARS) -> str:
    """The first `limit` characters of `text`: what a pattern may see of it."""
    return text if len(text) <= limit else text[:limit]
