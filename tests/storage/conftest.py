"""A real S3-compatible server (moto_server, from moto[server]) on 127.0.0.1 for the storage tests.

One server per test session on a random loopback port; the tests reach it the way users reach any
S3-compatible store: AWS_ENDPOINT_URL plus (dummy) credentials in the environment. Nothing is mocked in
process: s3fs, botocore, Arrow and DuckDB talk HTTP to the server.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from curate.demo.corpus import generate_corpus
from curate.demo.server import DemoServer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _moto_server() -> list[str]:
    exe = Path(sys.executable).with_name("moto_server")
    return [str(exe)] if exe.exists() else [shutil.which("moto_server") or "moto_server"]


@pytest.fixture(scope="session")
def s3_env():
    """Start moto_server, export AWS_* for this process (and its subprocesses); yields the variables."""
    port = _free_port()
    proc = subprocess.Popen([*_moto_server(), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise RuntimeError(f"moto_server did not start on 127.0.0.1:{port}")
            time.sleep(0.1)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for k, v in old.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


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
    generate_corpus(root, 60, seed=3)
    with DemoServer(root) as server:
        yield root, server
