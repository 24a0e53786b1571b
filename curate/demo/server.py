"""Loopback HTTP server for the demo corpus, with fault injection encoded in the path.

Why a real server in a subprocess: the real downloader (threads, timeouts, retries) must run against
real sockets, and a server in its own process neither competes for the test's GIL nor survives it.

Path grammar (prefixes nest, e.g. /slow/200/flaky/1/img/000001.jpg):
  /img/NAME          the file root/files/NAME (Content-Type from the extension)
  /status/CODE/REST  answer CODE (200..599) with a short text body
  /slow/MS/REST      sleep MS milliseconds, then answer REST
  /flaky/K/REST      answer 500 to the first K requests of this exact path, then answer REST
  /endless/NAME      200 video/mp4 with no Content-Length, bytes until the client hangs up (a live stream)
  /                  200 "ok" (readiness)
"""
from __future__ import annotations

import argparse
import os
import selectors
import subprocess
import sys
import threading
import time
import weakref
from collections import defaultdict
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

CONTENT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp",
                 ".gif": "image/gif", ".txt": "text/plain", ".json": "application/json",
                 ".mp4": "video/mp4", ".webm": "video/webm", ".m4a": "audio/mp4", ".vtt": "text/vtt",
                 ".html": "text/html; charset=utf-8"}  # interleaved demo pages
ENDLESS_CAP = 4 << 30  # an endless stream still ends somewhere if a client never hangs up


class Files:
    """Serves root/files with an in-memory byte cache (up to cache_bytes) and per-path flaky counters."""

    def __init__(self, root: Path, cache_bytes: int = 512 << 20):
        self.base = (Path(root) / "files").resolve()
        self.cache: dict[str, bytes] = {}
        self.cached, self.cache_bytes = 0, cache_bytes
        self.hits: dict[tuple[str, int], int] = defaultdict(int)
        self.lock = threading.Lock()

    def read(self, name: str) -> bytes | None:
        data = self.cache.get(name)
        if data is not None:
            return data
        path = (self.base / name).resolve()
        if self.base not in path.parents or not path.is_file():
            return None
        data = path.read_bytes()
        with self.lock:
            if self.cached + len(data) <= self.cache_bytes:
                self.cache[name] = data
                self.cached += len(data)
        return data

    def resolve(self, path: str) -> tuple[int, bytes, str]:
        """(status, body, content type) for a request path; sleeps for /slow/."""
        parts = unquote(path).strip("/").split("/")
        i = 0
        while True:
            head = parts[i] if i < len(parts) else ""
            if head == "" and i == 0 and len(parts) == 1:
                return 200, b"ok\n", "text/plain"
            if head == "img" and i + 1 < len(parts):
                name = "/".join(parts[i + 1:])
                data = self.read(name)
                if data is None:
                    return _text(404)
                return 200, data, CONTENT_TYPES.get(os.path.splitext(name)[1].lower(), "application/octet-stream")
            if head not in ("status", "slow", "flaky") or i + 1 >= len(parts):
                return _text(404)
            try:
                arg = int(parts[i + 1])
            except ValueError:
                return _text(400)
            if head == "status":
                return _text(arg) if 200 <= arg <= 599 else _text(400)
            if head == "slow":
                time.sleep(max(0, arg) / 1000)
            else:
                with self.lock:
                    seen = self.hits[(path, i)]
                    self.hits[(path, i)] = seen + 1
                if seen < arg:
                    return _text(500)
            i += 2


def _text(code: int) -> tuple[int, bytes, str]:
    try:
        phrase = HTTPStatus(code).phrase
    except ValueError:
        phrase = "Status"
    body = b"" if code in (204, 304) else f"{code} {phrase}\n".encode()
    return code, body, "text/plain"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a downloader's connection pool reuses sockets
    server_version = "curate-demo/1"
    disable_nagle_algorithm = True  # else headers and body in two writes stall ~40 ms on delayed ACK
    wbufsize = 1 << 16  # one send per response; handle_one_request flushes

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _endless(self, body: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        chunk = bytes(range(256)) * 256
        sent = 0
        try:
            while body and sent < ENDLESS_CAP:
                self.wfile.write(chunk)
                sent += len(chunk)
        except (ConnectionError, OSError):
            pass

    def _answer(self, body: bool) -> None:
        if urlsplit(self.path).path.startswith("/endless/"):
            return self._endless(body)
        status, data, ctype = self.server.files.resolve(urlsplit(self.path).path)
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body and data:
            self.wfile.write(data)

    def log_message(self, format: str, *args) -> None:  # quiet
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True

    def handle_error(self, request, client_address) -> None:
        exc = sys.exc_info()[1]
        if not isinstance(exc, (ConnectionError, TimeoutError)):  # clients that hang up are normal here
            super().handle_error(request, client_address)


def make_server(root: Path, host: str = "127.0.0.1", port: int = 0, cache_bytes: int = 512 << 20) -> _Server:
    """An unstarted server bound to (host, port); call serve_forever() on it (used in-process by the child)."""
    srv = _Server((host, port), _Handler)
    srv.files = Files(root, cache_bytes)
    return srv


def _watch_parent(parent_pid: int, watch_stdin: bool) -> None:
    """Exit when the parent dies: stdin reaches EOF (pipe closed) or our parent pid changes."""
    if watch_stdin:
        def stdin_eof() -> None:
            try:
                while sys.stdin.buffer.read(4096):
                    pass
            finally:
                os._exit(0)

        threading.Thread(target=stdin_eof, daemon=True).start()

    def poll() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.2)
        os._exit(0)

    if os.getppid() == parent_pid:  # not when started through a wrapper process
        threading.Thread(target=poll, daemon=True).start()


class DemoServer:
    """Context manager running the demo server in a child process; `.url` is http://HOST:PORT."""

    def __init__(self, root: Path, host: str = "127.0.0.1", port: int = 0, startup_timeout: float = 30.0):
        self.root, self.host, self.port = Path(root), host, port
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen | None = None
        self._finalizer = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "DemoServer":
        pkg_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([pkg_root, *filter(None, [env.get("PYTHONPATH")])])
        cmd = [sys.executable, "-m", "curate.demo.server", "--root", str(self.root), "--host", self.host,
               "--port", str(self.port), "--parent-pid", str(os.getpid()), "--watch-stdin"]
        self.process = proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self._finalizer = weakref.finalize(self, _stop, proc)
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            ready = sel.select(self.startup_timeout)
        line = proc.stdout.readline().decode().strip() if ready else ""
        if not line.isdigit():
            self.stop()
            raise RuntimeError(f"demo server did not start (exit code {proc.returncode}, said {line!r})")
        self.port = int(line)
        return self

    def stop(self) -> None:
        if self._finalizer is not None:
            self._finalizer()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def __enter__(self) -> "DemoServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _stop(proc: subprocess.Popen) -> None:
    for f in (proc.stdin, proc.stdout):
        try:
            f.close()
        except OSError:
            pass
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Serve a demo corpus with fault injection (see module docstring).")
    p.add_argument("--root", type=Path, required=True, help="corpus root (serves ROOT/files)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port; the bound port is printed on stdout")
    p.add_argument("--cache-mb", type=int, default=512)
    p.add_argument("--parent-pid", type=int, default=None, help="exit when this process is no longer our parent")
    p.add_argument("--watch-stdin", action="store_true", help="exit when stdin closes")
    args = p.parse_args(argv)
    srv = make_server(args.root, args.host, args.port, args.cache_mb << 20)
    if args.parent_pid is not None or args.watch_stdin:
        _watch_parent(args.parent_pid if args.parent_pid is not None else os.getppid(), args.watch_stdin)
    print(srv.server_address[1], flush=True)
    if not args.watch_stdin:  # standalone: say where we are
        url = f"http://{args.host}:{srv.server_address[1]}"
        print(f"serving {args.root / 'files'} at {url}", file=sys.stderr, flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
