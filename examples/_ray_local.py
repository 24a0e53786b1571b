"""A local Ray shared by an example's `curate run`s, started with retries (examples only).

Why: Ray waits a fixed 30 s for a new node's raylet; on a heavily loaded machine that start can fail
several times in a row, and each `Runner` would start (and stop) its own. With `--ray-address` (a running
cluster, e.g. `ray start --head`) nothing is started here.
"""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager


@contextmanager
def shared_ray(address: str | None, tries: int = 4):
    """Yield the address to give Runner: `address` as is, or None with a local Ray started here."""
    import ray

    if address or ray.is_initialized():
        yield address
        return
    for k in range(tries):
        try:
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level=logging.ERROR,
                     log_to_driver=False)
            break
        except Exception as err:  # noqa: BLE001 - any start-up failure is retried, the last one raised
            ray.shutdown()
            if k == tries - 1:
                raise
            print(f"ray start failed ({str(err).splitlines()[0]}); retrying")
    try:
        yield None
    finally:
        ray.shutdown()


def complete(run) -> bool:
    """True for a finished run folder (reused); an unfinished one is removed so the run starts afresh."""
    import json
    import shutil
    from pathlib import Path

    m = Path(run) / "manifest.json"
    if m.is_file() and json.loads(m.read_text()).get("status") == "complete":
        return True
    if Path(run).exists():
        shutil.rmtree(run)
    return False
