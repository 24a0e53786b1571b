"""A run without a TTY prints progress lines while it runs; every row failing exits 3; per-stage timings land
in the manifest and the `stages` query view. One small real run: a loopback server that answers slowly."""
from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq


class _Slow(http.server.BaseHTTPRequestHandler):
    """Every URL: wait, then 404 (so the download stage is in flight for a few seconds, then every row fails)."""

    def do_GET(self):
        time.sleep(0.6)
        self.send_error(404)

    def log_message(self, *args):
        pass


def test_progress_lines_before_the_run_ends(ray_address, tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        n = 24
        urls = tmp_path / "urls.parquet"
        pq.write_table(pa.table({"url": [f"http://127.0.0.1:{server.server_port}/{i}.jpg" for i in range(n)],
                                 "caption": [f"a photo number {i}" for i in range(n)]}), urls)
        out = tmp_path / "out"
        proc = subprocess.Popen(
            [sys.executable, "-m", "curate.cli", "run", "image_text", "-i", str(urls), "-o", str(out),
             "--set", "download.threads=4", "--set", "download.timeout_s=5"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "RAY_ADDRESS": ray_address, "CURATE_PROGRESS_INTERVAL": "0.2"})
        seen_running, stderr = [], []
        for line in proc.stderr:  # stderr is a pipe, not a TTY: plain lines
            stderr.append(line)
            if "download:" in line and "rows/s" in line:
                m = out / "manifest.json"
                seen_running.append(line.strip() if not m.exists() or '"complete"' not in m.read_text() else None)
        stdout = proc.stdout.read()
        rc = proc.wait(timeout=300)
    finally:
        server.shutdown()
    assert [x for x in seen_running if x], f"no progress line before the run ended: {seen_running}"
    assert any(f"/{n} rows" in x for x in seen_running if x)
    assert rc == 3, stdout  # every row failed: a distinct exit code, with a warning
    assert any(line.startswith("warning: every row failed") for line in stderr)
    noise = [line for line in stderr if "WARNING" in line or "logging.cc" in line or "core_worker" in line]
    assert not noise, noise  # Ray's start-up warnings and C++ log lines stay hidden without -v
    manifest = json.loads((out / "manifest.json").read_text())
    st = manifest["stage_timings"]
    assert list(st)[:3] == ["download", "image_size", "caption_text"]
    assert st["download"]["rows"] == n and st["download"]["failed"] == n and st["download"]["seconds"] > 0.5
    assert st["image_size"]["rows"] == n and st["image_size"]["in"] == 0 and st["exact_dedup"]["kind"] == "job"
    from curate.catalog import query

    cols, rows = query(out, "SELECT stage, rows, failed FROM stages ORDER BY step LIMIT 1")
    assert rows == [("download", n, n)]
