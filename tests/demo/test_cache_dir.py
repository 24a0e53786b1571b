"""One variable, CURATE_CACHE_DIR, places every curate cache, the demo's included: with only
CURATE_CACHE_DIR set the demo used to write its corpora to ~/.cache/curate/demo (it read CURATE_CACHE, a
second name no other cache knew). CURATE_CACHE still moves the demo's cache when CURATE_CACHE_DIR is unset,
and nothing else, as before."""
from __future__ import annotations

import pytest

from curate.demo.run import cache_root, corpus_dir
from curate.io import storage


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CURATE_CACHE_DIR", raising=False)
    monkeypatch.delenv("CURATE_CACHE", raising=False)
    return tmp_path / "home"


def test_curate_cache_dir_places_the_demo_cache_with_every_other(home, tmp_path, monkeypatch):
    default = home / ".cache" / "curate"
    assert corpus_dir(3000, 0) == default / "demo" / "image-text-n3000-s0"
    assert storage.fetch_cache_dir() == default / "fetched"
    monkeypatch.setenv("CURATE_CACHE_DIR", str(tmp_path / "big"))
    assert corpus_dir(3000, 0) == tmp_path / "big" / "demo" / "image-text-n3000-s0"
    assert corpus_dir(200, 1, "held-out") == tmp_path / "big" / "demo" / "image-text-heldout-n200-s1"
    assert cache_root() == storage.cache_dir() == tmp_path / "big"  # the video and interleaved demos' too
    assert storage.fetch_cache_dir() == tmp_path / "big" / "fetched"
    monkeypatch.setenv("CURATE_CACHE", str(tmp_path / "old"))  # the old name does not override the new
    assert corpus_dir(3000, 0) == tmp_path / "big" / "demo" / "image-text-n3000-s0"


def test_the_old_curate_cache_still_moves_the_demo_cache_and_nothing_else(home, tmp_path, monkeypatch):
    monkeypatch.setenv("CURATE_CACHE", str(tmp_path / "old"))
    assert corpus_dir(3000, 0) == tmp_path / "old" / "demo" / "image-text-n3000-s0"
    assert storage.fetch_cache_dir() == home / ".cache" / "curate" / "fetched"  # where it always was
