"""The `curate` console script's entry point ([project.scripts]): the first code that runs, kept free of
heavy imports.

Loading the CLI (typer and rich, then pyarrow, DuckDB, torch and Ray for their error types) takes ~0.6 s. A
Ctrl-C in that window met Python's default handler deep inside an import and printed a KeyboardInterrupt
traceback. So SIGINT and SIGTERM are handled from here on: until curate.cli.main installs its own handler
nothing has been written, and a stop signal is one line and exit 130 or 143 at once. `python -m curate.cli`
installs the same handler at the top of curate/cli.py.
"""
from __future__ import annotations

import os
import signal


def _stop_now(signum, frame) -> None:  # noqa: ARG001 - a signal handler's signature
    """A stop signal while the CLI loads: nothing is written yet, so one line and exit now (os._exit: no
    exception that an import, an at-fork hook or a __del__ could swallow or print as a traceback)."""
    term = signum == signal.SIGTERM
    os.write(2, b"terminated\n" if term else b"interrupted\n")
    os._exit(143 if term else 130)


def install() -> None:
    """Handle SIGINT and SIGTERM with _stop_now (main thread only, as Python allows)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stop_now)


def main() -> None:
    """`curate ...`: the CLI as a program (curate.cli.main with console=True: the stop watchdog is armed)."""
    install()
    from curate.cli import main as cli_main

    cli_main(console=True)
