"""Shared fixtures: one local Ray instance per test session, reachable by in-process runs and by `curate`
subprocesses (through RAY_ADDRESS), plus small corpora served from a real loopback HTTP server."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

# Cache bytecode for this process, its subprocesses and Ray workers (see the Makefile).
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")


@pytest.fixture(scope="session")
def ray_address():
    """Start the session's Ray (2 CPUs, small object store) and export its address for subprocesses."""
    import ray

    from curate.lean_ray import lean_local_init

    if not ray.is_initialized():  # started as curate starts a local Ray (no API server/monitors)
        lean_local_init(num_cpus=2, object_store_memory=400 * 1024 * 1024, include_dashboard=False,
                        log_to_driver=False, configure_logging=False, keep_log_monitor=False)
    address = ray.get_runtime_context().gcs_address
    os.environ["RAY_ADDRESS"] = address
    yield address


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    """A randomly initialised curate-tiny saved in our checkpoint format (plumbing tests need no training)."""
    import torch

    from curate.models.clip import load_clip

    torch.manual_seed(0)
    clip = load_clip("curate-tiny", device="cpu")
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    torch.save({"state_dict": clip.model.state_dict(), "config": {"model": "curate-tiny"}}, path)
    return path


def curate_cli(*args: str, env: dict | None = None, timeout: float = 300, check: bool | None = None) -> subprocess.CompletedProcess:
    """Run the real `curate` console entry point in a subprocess; returns the completed process."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "curate.cli", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"curate {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def cli():
    return curate_cli


def curate_inprocess(*args: str, capsys=None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `curate` through its real entry point (curate.cli.main) in this process: same error handling as
    the console script, without paying a fresh interpreter's imports for every error-message test.
    `env` is set for the call only; without `capsys` (module-scoped callers) stdout/stderr come back empty."""
    from curate.cli import main

    old_argv, old_env = sys.argv, dict(os.environ)
    os.environ.update(env or {})
    sys.argv = ["curate", *map(str, args)]
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = old_argv
        os.environ.clear()
        os.environ.update(old_env)
    out = capsys.readouterr() if capsys is not None else None
    return subprocess.CompletedProcess(args, code, out.out if out else "", out.err if out else "")


@pytest.fixture
def cli_inprocess(capsys):
    """`curate` in this process (see curate_inprocess): cli_inprocess("eval", ...)."""
    return lambda *args: curate_inprocess(*args, capsys=capsys)
