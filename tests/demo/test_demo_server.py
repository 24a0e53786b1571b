"""The loopback server answers the fault grammar exactly, fast, and never outlives its parent."""
from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from curate.demo.server import DemoServer


def get(url: str, timeout: float = 5.0) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def _gone(pid: int, port: int, within: float = 5.0) -> bool:
    """True once the process has exited (or is a zombie) and its port refuses connections."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                alive = f.read().split(") ", 1)[1][0] != "Z"
        except FileNotFoundError:
            alive = False
        if not alive:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            except OSError:
                return True
        time.sleep(0.05)
    return False


def test_serves_files_with_type_and_length(server, corpus, table):
    root, _ = corpus
    for fmt, ctype in [("jpeg", "image/jpeg"), ("png", "image/png")]:
        row = table[(table.noise == "clean") & (table.format == fmt)].iloc[0]
        status, headers, body = get(server.url + row.path)
        assert status == 200 and headers["Content-Type"] == ctype
        assert int(headers["Content-Length"]) == len(body)
        assert body == (root / "files" / row.path.rsplit("/", 1)[1]).read_bytes()


def test_status_faults(server, table):
    for kind, code in [("http_404", 404), ("http_500", 500)]:
        for path in table[table.noise == kind].path:
            assert get(server.url + path)[0] == code
    assert get(server.url + "/status/503/anything")[0] == 503
    assert get(server.url + "/img/does-not-exist.jpg")[0] == 404
    assert get(server.url + "/img/%2e%2e/corpus.parquet")[0] == 404
    assert get(server.url + "/nonsense/path")[0] == 404
    assert get(server.url + "/slow/abc/img/000000.jpg")[0] == 400


def test_slow_and_timeout(server, table, corpus):
    path = table[table.noise == "slow_ok"].path.iloc[0]
    t = time.monotonic()
    assert get(server.url + path)[0] == 200
    assert 0.45 <= time.monotonic() - t < 2.0
    timeout_path = table[table.noise == "timeout"].path.iloc[0]
    assert timeout_path.startswith(f"/slow/{corpus[1]['timeout_ms']}/")
    t = time.monotonic()
    with pytest.raises((TimeoutError, socket.timeout, urllib.error.URLError)):
        get(server.url + timeout_path, timeout=0.3)
    assert time.monotonic() - t < 1.5


def test_flaky_fails_first_then_succeeds(server, table):
    path = table[table.noise == "flaky"].path.iloc[0]
    assert [get(server.url + path)[0] for _ in range(3)] == [500, 200, 200]
    assert [get(server.url + "/flaky/2/img/000000.jpg")[0] for _ in range(3)] == [500, 500, 200]
    # counters are per exact path, and prefixes nest
    assert [get(server.url + "/slow/10/flaky/1/status/404/x")[0] for _ in range(2)] == [500, 404]


def test_head_and_keep_alive(server, table):
    path = table[table.noise == "clean"].path.iloc[0]
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("HEAD", path)
    r = conn.getresponse()
    assert r.status == 200 and int(r.getheader("Content-Length")) > 0 and r.read() == b""
    for _ in range(3):  # same socket, several requests
        conn.request("GET", path)
        r = conn.getresponse()
        assert r.status == 200 and len(r.read()) == int(r.getheader("Content-Length"))
    conn.close()


def test_throughput(server, table):
    paths = list(table[table.noise == "clean"].path)[:100]

    def worker(_):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        n = 0
        for p in paths:
            conn.request("GET", p)
            r = conn.getresponse()
            r.read()
            n += r.status == 200
        conn.close()
        return n

    t = time.monotonic()
    with ThreadPoolExecutor(8) as ex:
        assert sum(ex.map(worker, range(8))) == 8 * len(paths)
    assert time.monotonic() - t < 4.0  # ~0.3 s expected; 40 ms Nagle stalls would blow this


def test_child_process_is_gone_after_exit(corpus):
    with DemoServer(corpus[0]) as srv:
        pid, port = srv.pid, srv.port
        assert get(srv.url + "/")[0] == 200
    assert _gone(pid, port, within=1.0)


def test_no_orphan_when_parent_is_killed(corpus):
    script = textwrap.dedent(f"""
        import sys, time
        from curate.demo.server import DemoServer
        srv = DemoServer({str(corpus[0])!r}).start()
        print(srv.pid, srv.port, flush=True)
        time.sleep(60)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    pid = None
    try:
        pid, port = map(int, parent.stdout.readline().split())
        assert get(f"http://127.0.0.1:{port}/")[0] == 200
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(5)
        assert _gone(pid, port)
    finally:
        parent.kill()
        parent.wait()
        if pid is not None:  # do not leave an orphan behind if the assertion failed
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_standalone_module_prints_port(corpus):
    proc = subprocess.Popen([sys.executable, "-m", "curate.demo.server", "--root", str(corpus[0])],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        port = int(proc.stdout.readline())
        assert get(f"http://127.0.0.1:{port}/img/000000.jpg")[0] == 200
    finally:
        proc.terminate()
        proc.wait(5)
