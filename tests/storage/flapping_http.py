"""A loopback http server that sends no validator (no ETag, Last-Modified, Content-MD5 or Digest) and no
Range support, and answers GET n of a file with its bytes whose last 8 are replaced by n: the same size,
other bytes each time (a tar's last bytes are end-of-archive padding, so a served tar stays readable).
A second download is both counted (`gets`) and visible in what was read."""
from __future__ import annotations

import contextlib
import http.server
import threading


class Flapping(http.server.BaseHTTPRequestHandler):
    files: dict = {}
    gets: dict = {}

    def log_message(self, *args):
        pass

    def _body(self, count: bool) -> bytes | None:
        data = self.files.get(self.path)
        if data is None:
            self.send_error(404)
            return None
        if count:
            n = self.gets[self.path] = self.gets.get(self.path, 0) + 1
            data = served(data, n)
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Accept-Ranges", "none")
        self.end_headers()
        return data

    def do_HEAD(self):
        self._body(count=False)

    def do_GET(self):
        data = self._body(count=True)
        if data is not None:
            self.wfile.write(data)


def served(data: bytes, n: int) -> bytes:
    """What GET number `n` of `data` returns."""
    return data[:-8] + b"%08d" % n


@contextlib.contextmanager
def serve():
    """A fresh handler class (its own files and counts) on loopback: yields (handler, base URL)."""
    handler = type("Handler", (Flapping,), {"files": {}, "gets": {}})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield handler, f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()
