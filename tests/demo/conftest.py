"""Shared fixtures: one small generated corpus per session and a server over it per module."""
from __future__ import annotations

import pytest

from curate.demo.corpus import generate_corpus
from curate.demo.server import DemoServer

N = 300


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """(root, summary) of an n=300 corpus with seed 0."""
    root = tmp_path_factory.mktemp("demo_corpus")
    summary = generate_corpus(root, N, seed=0)
    return root, summary


@pytest.fixture(scope="session")
def table(corpus):
    import pyarrow.parquet as pq

    return pq.read_table(corpus[0] / "corpus.parquet").to_pandas()


@pytest.fixture(scope="module")
def server(corpus):
    with DemoServer(corpus[0]) as srv:
        yield srv
