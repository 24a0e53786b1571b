"""Synthetic image-text demo corpus with planted noise, and a loopback HTTP server that serves it.

Imports are lazy so `python -m curate.demo.server` starts without numpy, PIL or pyarrow.
"""
from __future__ import annotations

_EXPORTS = {
    "generate_corpus": "corpus",
    "write_url_list": "corpus",
    "expected_outcome": "noise",
    "DEFAULT_RATES": "noise",
    "NOISE_KINDS": "noise",
    "DemoServer": "server",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
