"""A small demo corpus served over a real loopback HTTP server, shared by the end-to-end tests."""
from __future__ import annotations

import pytest

from curate.demo.corpus import generate_corpus, write_url_list
from curate.demo.server import DemoServer


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    generate_corpus(root, 300, seed=1)
    return root


@pytest.fixture(scope="module")
def demo_server(demo_corpus):
    """One server per test module: its flaky paths fail once per server, so modules must not share one."""
    with DemoServer(demo_corpus) as server:
        yield server


@pytest.fixture(scope="module")
def demo_urls(demo_corpus, demo_server, tmp_path_factory):
    return write_url_list(demo_corpus, demo_server.url, tmp_path_factory.mktemp("urls") / "urls.parquet")
