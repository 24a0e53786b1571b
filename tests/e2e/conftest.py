"""A small demo corpus served over a real loopback HTTP server, shared by the end-to-end tests."""
from __future__ import annotations

import os
import shlex

import pytest

from curate.demo.corpus import generate_corpus, write_url_list
from curate.demo.server import DemoServer
from tests.conftest import curate_inprocess

MAIN_JOB = "curate run image_text -i urls.parquet -o out/"  # the README's main job (tests/e2e/test_doc_commands.py)


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


@pytest.fixture(scope="session")
def main_server(demo_corpus):
    """The main job's own server, kept for the session: the doc pages' commands download from it afterwards,
    as they did from their module's server after the main job."""
    with DemoServer(demo_corpus) as server:
        yield server


@pytest.fixture(scope="session")
def main_run(ray_address, demo_corpus, main_server, tmp_path_factory):
    """The README's main job, run once by its literal command line in a folder holding `urls.parquet`; the
    doc-tests run every page's commands against copies of its `out/`, and test_image_text.py checks the run
    itself (read-only: tests that change it work on a copy). One run instead of one per module."""
    base = tmp_path_factory.mktemp("doc_main")
    write_url_list(demo_corpus, main_server.url, base / "urls.parquet")
    old = os.getcwd()
    os.chdir(base)
    try:
        result = curate_inprocess(*shlex.split(MAIN_JOB)[1:])
    finally:
        os.chdir(old)
    assert result.returncode == 0, f"{MAIN_JOB} exited {result.returncode}"
    return base
