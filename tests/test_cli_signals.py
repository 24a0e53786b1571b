"""Ctrl-C and SIGTERM at the edges of the CLI's life, on real processes (no Ray): while it loads, and when
main() is a function inside another program. The command that waits is `curate run FIFO --dry-run`: reading
a recipe from a named pipe blocks until a writer comes, which none does."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

# how a `curate` process starts: the console script pip writes ([project.scripts]), and python -m
STARTS = {"console script": [sys.executable, "-c", "import sys; from curate.entry import main; sys.exit(main())"],
          "python -m curate.cli": [sys.executable, "-m", "curate.cli"]}


def _loading_heavy_modules(pid: int) -> bool:
    """The process has mapped DuckDB's or Arrow's library: main()'s imports are under way (the ~0.5 s before
    it used to install its signal handler)."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False
    return "duckdb" in maps or "libarrow" in maps


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="watches /proc/PID/maps")
@pytest.mark.parametrize("start", STARTS)
@pytest.mark.parametrize("sig,rc,word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_a_stop_signal_while_the_cli_loads_is_one_line(tmp_path, start, sig, rc, word):
    """Before, a Ctrl-C in the first ~0.5 s met Python's default handler inside an import: a KeyboardInterrupt
    traceback (and SIGTERM killed the process silently)."""
    fifo = tmp_path / "recipe.yaml"
    os.mkfifo(fifo)
    proc = subprocess.Popen([*STARTS[start], "run", str(fifo), "--dry-run"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not _loading_heavy_modules(proc.pid) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode, err, out) == (rc, f"{word}\n", "")
