"""A real S3-compatible server (moto_server, from moto[server]) on 127.0.0.1 for the storage tests.

One server per test session on a random loopback port; the tests reach it the way users reach any
S3-compatible store: AWS_ENDPOINT_URL plus (dummy) credentials in the environment. Nothing is mocked in
process: s3fs, botocore, Arrow and DuckDB talk HTTP to the server.
"""
from __future__ import annotations

import os
import uuid

import pytest

from curate.demo.corpus import generate_corpus
from curate.demo.server import DemoServer
from tests.storage.moto import start_moto_server, stop


@pytest.fixture(scope="session")
def s3_env():
    """Start moto_server, export AWS_* for this process (and its subprocesses); yields the variables."""
    proc, env = start_moto_server(timeout=60)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for k, v in old.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    stop(proc)


@pytest.fixture
def bucket(s3_env) -> str:
    """A new empty bucket (its name) for one test."""
    import fsspec

    name = f"t-{uuid.uuid4().hex[:12]}"
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.mkdir(name)
    return name


@pytest.fixture(scope="module")
def s3_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("s3corpus")
    generate_corpus(root, 40, seed=3, eval_n=0, seed_n=0)  # no eval/seed splits: only the URL corpus is used
    with DemoServer(root) as server:
        yield root, server
