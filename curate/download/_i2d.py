"""Load img2dataset's resizer without its package __init__.

`import img2dataset` runs img2dataset.main, which imports webdataset (and through it torch), pandas and
fsspec writers: ~10-20 s per Ray worker on a small machine, for the one class we call. We load the
submodule against a bare package object instead, then forget that object so a later `import img2dataset`
elsewhere still gets the real package. (Fetching is curate.download.fetch, not img2dataset's downloader.)
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types


def _load():
    if "img2dataset" in sys.modules:  # the real package is already here: use it
        return importlib.import_module("img2dataset.resizer")
    spec = importlib.util.find_spec("img2dataset")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("img2dataset is not installed")
    bare = types.ModuleType("img2dataset")
    bare.__path__ = list(spec.submodule_search_locations)
    sys.modules["img2dataset"] = bare
    try:
        resizer = importlib.import_module("img2dataset.resizer")
    finally:
        if sys.modules.get("img2dataset") is bare:
            del sys.modules["img2dataset"]
    return resizer


resizer = _load()
Resizer = resizer.Resizer
ResizeMode = resizer.ResizeMode
