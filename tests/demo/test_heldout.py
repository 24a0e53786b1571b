"""Held-out-noise corpus: every planted row is labelled, distributions overlap clean data, the boilerplate
vocabulary is not the one the caption patterns were written for, and duplicates are what they say."""
from __future__ import annotations

import hashlib
import re

import numpy as np
import pyarrow.parquet as pq
import pytest

from curate.demo import captions, heldout, images
from curate.demo.corpus import generate_corpus

N = 240


@pytest.fixture(scope="module")
def held(tmp_path_factory):
    root = tmp_path_factory.mktemp("heldout")
    summary = generate_corpus(root, N, seed=3, eval_n=16, seed_n=16, noise_mode="held-out")
    return root, summary, pq.read_table(root / "corpus.parquet").to_pylist()


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def _content(text: str) -> set[str]:
    """Words longer than two letters: "to" or "on" are shared by any English text."""
    return {w for w in _words(text) if len(w) > 2}


def test_every_family_is_planted_with_its_label(held):
    root, summary, rows = held
    assert summary["noise_mode"] == "held-out"
    assert [r["id"] for r in rows] == list(range(N))
    assert {r["noise"] for r in rows} == set(heldout.FAMILIES)
    assert summary["counts"] == {f: sum(r["noise"] == f for r in rows) for f in heldout.FAMILIES}
    for r in rows:
        assert (r["grade"] is None) == (r["noise"] == "clean"), r
        assert r["harmful"] == heldout.HARMFUL[r["noise"]]
        assert (root / "files" / r["path"].rsplit("/", 1)[1]).is_file()
    # no family of the tuned corpus leaks in
    assert not {r["noise"] for r in rows} & {"mismatched_caption", "boilerplate_caption", "tiny_image"}


def test_size_and_aspect_overlap_the_clean_distribution():
    rng = np.random.default_rng(0)
    low = [min(heldout.low_resolution_dims(rng)[:2]) for _ in range(400)]
    wide = [max(w, h) / min(w, h) for w, h, _ in (heldout.aspect_wide_dims(rng) for _ in range(400))]
    clean = [images.sample_attributes(np.random.default_rng([1, i])) for i in range(400)]
    clean_short = [min(a["width"], a["height"]) for a in clean]
    clean_aspect = [max(a["width"], a["height"]) / min(a["width"], a["height"]) for a in clean]
    # some low-resolution rows are as large as clean ones, some pass the 32 px threshold, some do not
    assert sum(s >= min(clean_short) for s in low) > 20
    assert sum(s < 32 for s in low) > 5 and sum(32 <= s < 96 for s in low) > 100
    # wide rows span the clean range and both sides of the 4.0 threshold
    assert sum(a <= max(clean_aspect) for a in wide) > 20
    assert sum(a < 4 for a in wide) > 100 and sum(a >= 4 for a in wide) > 100


def test_boilerplate_vocabulary_is_not_the_regex_list():
    rng = np.random.default_rng(0)
    texts = [heldout.boilerplate_web(rng) for _ in range(500)]
    assert {g for _, g in texts} == set(heldout.BOILERPLATE_WEB)
    tuned_vocab = set().union(*(_content(t) for t in captions.BOILERPLATE_FIXED))
    for p in captions.BOILERPLATE_PATTERNS:  # the literal words of the patterns' alternatives
        tuned_vocab |= _content(re.sub(r"\\[a-z]|\[[^]]*\]|\{[^}]*\}", " ", p))
    assert {"click", "image", "thumbnail", "screenshot", "placeholder"} <= tuned_vocab
    for text, _ in texts:
        assert not captions.is_boilerplate(text), text
        assert not _content(text) & tuned_vocab, text
    demo_words = set(images.SHAPES) | set(images.COLOURS)
    for _ in range(200):
        assert not _words(heldout.unrelated_caption(rng)) & demo_words


def test_graded_mismatch_changes_exactly_the_named_attributes(held):
    _, _, rows = held
    colour_words = set(images.COLOURS)
    seen = set()
    for r in rows:
        words = _words(r["caption"])
        has_shape = r["shape"] in words or captions.plural(r["shape"]) in words
        if r["noise"] == "caption_one_wrong":
            seen.add(r["grade"])
            if r["grade"] == "colour":
                assert r["colour"] not in words and has_shape and words & colour_words, r
            else:
                assert r["colour"] in words and not has_shape, r
        elif r["noise"] == "caption_two_wrong":
            assert r["colour"] not in words and not has_shape, r
        elif r["noise"] == "clean":
            assert r["colour"] in words and has_shape, r
    assert seen == {"colour", "shape"}


def test_duplicates_copy_an_earlier_clean_row(held):
    root, _, rows = held
    by_id = {r["id"]: r for r in rows}
    digest = lambda r: hashlib.sha256((root / "files" / r["path"].rsplit("/", 1)[1]).read_bytes()).hexdigest()  # noqa: E731
    for r in rows:
        if r["noise"] not in heldout.DUPLICATES:
            assert r["dup_of"] is None
            continue
        src = by_id[r["dup_of"]]
        assert src["noise"] == "clean" and src["id"] < r["id"]
        assert (digest(r) == digest(src)) == (r["grade"] == "exact")
        same_label = src["colour"] in _words(r["caption"])
        if r["noise"] == "dup_benign":
            assert same_label, r
        assert r["label"] == src["label"]


def test_splits_draw_bigger_shapes_than_the_tuned_corpus():
    rng = np.random.default_rng(5)
    a = images.sample_attributes(rng, count=1, size="small", shape="square", colour="red", background="navy",
                                 texture="plain", width=128, height=128, position="center")
    small = np.asarray(images.draw(np.random.default_rng(1), a))
    big = np.asarray(images.draw(np.random.default_rng(1), {**a, "scale": heldout.SHAPE_SCALE}))
    fg = lambda x: int((np.abs(x.astype(int) - images.BACKGROUNDS["navy"]).sum(-1) > 60).sum())  # noqa: E731
    assert fg(big) > 1.8 * fg(small)
