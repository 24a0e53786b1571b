"""Hostile captions: every pattern curate runs on user text finishes in linear time, and over-long text is
bounded, without changing decisions on normal captions (tests/test_filters.py, tests/test_heuristics.py).

The probe that found it: a 41-character caption of digits ending in a symbol hung a whole run in
caption_text's boilerplate patterns (Python's backtracking `re`; 24 digits already took 23 s).
"""
from __future__ import annotations

import time

import pyarrow as pa
import pytest

from curate.filters.caption_text import DEFAULT_BOILERPLATE, CaptionText, matchers
from curate.filters.text_quality import URL_TOKEN, TextQuality
from curate.textmatch import MAX_MATCH_CHARS, PatternError, compile_linear

N = 100_000
# a linear-time match of 100k characters takes about a millisecond; a backtracking one takes years.
# The budget leaves room for a loaded 2-core CI machine.
BUDGET_S = 0.25


def adversarial(n: int = N) -> dict[str, str]:
    """Strings that make backtracking matchers explode on curate's patterns: long runs of each pattern's
    prefixes and repeated fragments, ending in a character that makes the match fail at the very end."""
    return {
        "digits+symbol (the probe's case)": "1" * n + "!",
        "digits+symbol, 41 chars": "1" * 40 + "!",
        "ui words": "default " * (n // 8) + "!",
        "ui words no space": "image" * (n // 5) + "!",
        "date parts": "2016-02-26 " * (n // 11) + "?",
        "separators": "-_:./" * (n // 5) + "x",
        "file name, wrong ext": "a" * n + ".jpgx",
        "file name chars": ". " * (n // 2) + "!",
        "camera prefix": "dsc_" + "1" * n + "x",
        "click here": "click " * (n // 6) + "x",
        "domain labels": "a." * (n // 2) + "!",
        "domain dashes": "a-" * (n // 2) + ".comx/",
        "scheme chars": "a+" * (n // 2) + ":/",
        "www": "www." * (n // 4),
        "brackets": "(" * n + "x",
        "unicode": "é" * n + "!",
    }


def _seconds(fn, *args) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


@pytest.mark.parametrize("pattern", DEFAULT_BOILERPLATE)
def test_each_boilerplate_pattern_is_linear_on_100k_adversarial_text(pattern):
    (compiled,) = matchers((pattern,))
    for name, text in adversarial().items():
        took = _seconds(compiled.fullmatch, text)
        assert took < BUDGET_S, f"{pattern!r} took {took:.3f} s on {name}"


def test_url_token_pattern_is_linear_on_100k_adversarial_tokens():
    for name, text in adversarial().items():
        token = text.replace(" ", "")  # text_quality matches whitespace tokens
        took = _seconds(URL_TOKEN.match, token)
        assert took < BUDGET_S, f"URL_TOKEN took {took:.3f} s on {name}"


def test_other_patterns_on_user_text_stay_linear():
    """Patterns outside filters/ that see user text (sentence split of documents, minhash punctuation)
    use stdlib `re` without nested quantifiers: check they stay linear on the same inputs."""
    from curate.dedup.minhash import _PUNCT
    from curate.interleaved.placement import split_sentences

    for name, text in adversarial().items():
        for label, run in (("sentences", lambda: split_sentences(text)), ("minhash _PUNCT", lambda: _PUNCT.sub(" ", text))):
            took = _seconds(run)
            assert took < 4 * BUDGET_S, f"{label} took {took:.3f} s on {name}"


def test_the_probes_caption_is_judged_at_once_and_as_before():
    stage = CaptionText()
    table = pa.table({"text": ["1" * 40 + "!", "1" * 10_000 + "!", "12345 67890", "screenshot 2016-02-26"]})
    t = time.perf_counter()
    reasons = stage.check(table)
    assert time.perf_counter() - t < 1.0
    # one word: too short; digits/dates alone are camera/UI boilerplate
    assert reasons == ["caption_too_short", "caption_too_short", "caption_boilerplate", "caption_boilerplate"]


def test_over_long_captions_are_bounded_and_have_a_reason():
    """5 MB captions: caption_text routes them to caption_too_long before any pattern runs; text_quality
    judges their first max_chars characters; both in bounded time."""
    five_mb = "a dog on the beach " * (5 * 2**20 // 19)
    link_soup = "www.spam.com " * (5 * 2**20 // 13)
    start_clean = "a red bicycle leaning on a blue wall " + "x" * (5 * 2**20)
    t = time.perf_counter()
    ct = CaptionText(max_words=10**9).check(pa.table({"text": [five_mb, "1" * (5 * 2**20) + "!"]}))
    tq = [TextQuality().verdict(x) for x in (link_soup, start_clean)]
    took = time.perf_counter() - t
    assert ct == ["caption_too_long", "caption_too_long"]
    assert tq == ["caption_url", None]
    assert took < 5.0, took
    # a caption of exactly the bound is still judged by the patterns
    edge = "image " * (MAX_MATCH_CHARS // 6)
    assert CaptionText(max_words=10**9).check(pa.table({"text": [edge]})) == ["caption_boilerplate"]


def test_unicode_captions_keep_their_decisions():
    """RE2's \\w and \\d are ASCII: the shipped patterns use \\p{L}/\\p{Nd} so Unicode captions are judged as
    Python's re judged them."""
    stage = CaptionText()
    texts = ["café.jpg", "日本語の写真.jpg", "img_٣٤", "an old café in the rain", "ünïcödé bild"]
    assert stage.check(pa.table({"text": texts})) == [
        "caption_boilerplate", "caption_boilerplate", "caption_boilerplate", None, None]


@pytest.mark.parametrize("pattern", [r"(a)\1", r"(?<=x)y", r"(?=a)", "(unclosed", "(a{1000}){1000}"])
def test_patterns_that_cannot_run_in_linear_time_are_refused(pattern):
    with pytest.raises(PatternError, match="RE2"):
        compile_linear(pattern)


def test_a_recipes_own_boilerplate_pattern_runs_linear_too():
    """A recipe's boilerplate list goes through RE2 as well: the classic evil pattern is harmless."""
    stage = CaptionText(boilerplate=[r"(a+)+b", r"((\d+)\s*)+"], min_words=0)
    text = "a" * (MAX_MATCH_CHARS - 1) + "!"  # stdlib re: 2^16k steps
    took = _seconds(stage.check, pa.table({"text": [text, "1 2 3"]}))
    assert took < 1.0
    assert stage.check(pa.table({"text": [text, "1 2 3"]})) == [None, "caption_boilerplate"]


# -- hostile ids: tar keys are unique by construction -------------------------------------------------------

def _commit(tmp_path, uids: list[str]):
    """Commit one real part (tar + meta Parquet) holding one kept sample per uid; returns the tar's members."""
    import tarfile

    from curate import schema
    from curate.io.rundir import RunDir
    from curate.io.shard_writer import write_part

    run = RunDir(tmp_path / "run")
    run_schema = schema.run_schema({})
    n = len(uids)
    table = schema.conform(pa.table({"uid": uids, "row": list(range(n)), "part": [0] * n, "status": ["ok"] * n,
                                     "text": [f"caption {i}" for i in range(n)], "image": [b"\xff\xd8jpeg"] * n,
                                     "image_format": ["jpg"] * n}), run_schema)
    summary = write_part(run, 0, table, run_schema)
    with tarfile.open(run.shard(0)) as tar:
        return summary, [m.name for m in tar.getmembers()]


def test_an_id_equal_to_another_ids_hashed_key_gets_its_own_key(tmp_path):
    from curate.io.shard_writer import key_for

    hashed = key_for("a/b.c")
    assert hashed != "a/b.c" and key_for(hashed) != hashed  # a uid shaped like a hashed key is hashed too
    summary, members = _commit(tmp_path, ["a/b.c", hashed, "plain_id"])
    assert summary["kept"] == 3
    assert len(members) == len(set(members)) == 9  # jpg, txt, json per sample
    keys = {m.split(".", 1)[0] for m in members}
    assert len(keys) == 3 and "plain_id" in keys


@pytest.mark.parametrize("uid", ["img.001", "../../etc/passwd", "a/b", "", " ", "x" * 121, "é", "a\x00b", "h" + "0" * 24,
                                 "H" + "0" * 24, "-rf", "🙂"])
def test_hostile_ids_give_safe_distinct_keys(uid):
    from curate.io.shard_writer import key_for

    key = key_for(uid)
    assert key == key_for(uid) and key and len(key) <= 120
    assert all(c.isascii() and (c.isalnum() or c in "_-") for c in key), key
    assert key == uid or key != key_for(key)


def test_repeated_keys_in_a_part_are_a_bug_not_a_tar(tmp_path):
    with pytest.raises(RuntimeError, match="repeated tar keys"):
        _commit(tmp_path, ["same", "same"])
    assert not (tmp_path / "run" / "shards" / "000000.tar").exists()
