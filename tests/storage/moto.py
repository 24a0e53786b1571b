"""Start and stop a real S3-compatible server (moto_server, from moto[server]) on a free 127.0.0.1 port.

One function for the storage tests (tests/storage/conftest.py) and the storage benchmark (bench/storage.py),
which imports it as it imports tests/hostile/pixel_cases.Server. Users reach the server as they reach any
S3-compatible store: AWS_ENDPOINT_URL plus credentials in the environment.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _executable() -> list[str]:
    exe = Path(sys.executable).with_name("moto_server")
    return [str(exe)] if exe.exists() else [shutil.which("moto_server") or "moto_server"]


def start_moto_server(server_env: dict | None = None, timeout: float = 120, key: str = "testing"):
    """(process, AWS_* environment for clients) of a moto_server that accepts connections.

    `server_env` goes to the server process only, e.g. {"INITIAL_NO_AUTH_ACTION_COUNT": "3"}: moto then
    checks the signature and IAM permissions of every request after the first three (which create the
    user and its key), so it really rejects wrong keys. Raises RuntimeError when it does not start."""
    port = _free_port()
    proc = subprocess.Popen([*_executable(), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, **(server_env or {})})
    deadline = time.time() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise RuntimeError(f"moto_server did not start on 127.0.0.1:{port}")
            time.sleep(0.1)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": key,
           "AWS_SECRET_ACCESS_KEY": key, "AWS_DEFAULT_REGION": "us-east-1"}
    return proc, env


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
