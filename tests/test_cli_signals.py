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


# main() as the console script runs it, or as a function called by a program that goes on (a notebook)
SCRIPT = """
import atexit, os, signal, sys, threading, time
import curate.cli as cli

cli.STOP_GRACE_S = 2  # the watchdog's wait, short for the test
fifo, how = sys.argv[1], sys.argv[2]
sys.argv = ["curate", "run", fifo, "--dry-run"]


def ctrl_c():  # once main() has its handler and waits on the pipe
    while signal.getsignal(signal.SIGINT) is not cli._on_stop_signal:
        time.sleep(0.01)
    time.sleep(0.3)
    os.kill(os.getpid(), signal.SIGINT)


def watchdog() -> str:
    return "watchdog armed" if any(t.name == "stop-grace" for t in threading.enumerate()) else "no watchdog"


threading.Thread(target=ctrl_c, daemon=True).start()
if how == "console":
    atexit.register(lambda: print(watchdog(), flush=True))
    from curate.entry import main
    sys.exit(main())
try:
    cli.main()
except SystemExit as e:
    print(f"main() raised SystemExit({e.code}); {watchdog()}", flush=True)
time.sleep(cli.STOP_GRACE_S + 1.5)
print("the program goes on", flush=True)
"""


@pytest.mark.parametrize("how", ["console", "function"])
def test_the_stop_watchdog_is_the_programs_not_a_callers(tmp_path, how):
    """The console script arms the watchdog that ends a stuck process STOP_GRACE_S after a stop signal; a
    program that calls main() as a function does not get it (before, a notebook interrupted during a command
    had its kernel exit 20 s later)."""
    fifo = tmp_path / "recipe.yaml"
    os.mkfifo(fifo)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(fifo), how], capture_output=True, text=True, timeout=120)
    assert proc.stderr == "interrupted\n"
    if how == "console":
        assert (proc.returncode, proc.stdout) == (130, "watchdog armed\n")
    else:
        assert (proc.returncode, proc.stdout) == (0, "main() raised SystemExit(130); no watchdog\nthe program goes on\n")


def test_a_ctrl_c_that_code_turns_into_another_error_is_still_a_stop(tmp_path, capsys, monkeypatch):
    """Code that catches the KeyboardInterrupt and raises its own error (pydantic-core building a stage's
    schema turned a Ctrl-C into 'error: SchemaError ...', exit 1) still stops with the stop line and 130.
    Here a user stage's module does what such code does, while the recipe loads it."""
    from tests.conftest import curate_inprocess

    (tmp_path / "wrapping_stage.py").write_text(
        "import os, signal\n"
        "try:\n"
        "    os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while this module loads\n"
        "except KeyboardInterrupt:\n"
        "    raise RuntimeError('building the schema failed') from None\n")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("name: x\nstages:\n  - download: {}\n  - wrapping_stage:Stage: {}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    res = curate_inprocess("run", str(recipe), "-i", str(recipe), "-o", str(tmp_path / "out"), "--dry-run",
                           capsys=capsys)
    assert (res.returncode, res.stderr) == (130, "interrupted\n")
