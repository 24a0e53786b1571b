"""curate: build multimodal pre-training datasets you can trust.

Importing curate is cheap; Ray, torch and img2dataset are imported only by the modules that need them.
The public Python API (docs/python_api.md) is exported here and imported on first use:
Pipeline, RunDir, Stage, Filter, Job, Annotations, register, RecipeError, RunError.
"""
import os as _os

# img2dataset imports albumentations, which phones home for updates on import; curate runs offline.
_os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# Ray reports usage statistics to its developers unless told not to; curate sends nothing anywhere.
_os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

__version__ = "0.1.0"

# public name -> module that defines it (imported lazily by __getattr__, PEP 562)
_EXPORTS = {
    "Pipeline": "curate.pipeline",
    "RunDir": "curate.io.rundir",
    "Stage": "curate.stage",
    "Filter": "curate.stage",
    "Job": "curate.stage",
    "Annotations": "curate.stage",
    "register": "curate.stage",
    "RecipeError": "curate.recipe",
    "RunError": "curate.runner",
}
__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'curate' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted([*globals(), *_EXPORTS])
