"""Stages of a user's own: how a recipe names a Step class that does not ship with curate.

A recipe's stage key is one of
  - a shipped (or already `@register`ed) stage name:        `- caption_text: {min_words: 2}`
  - an import path `module:Class` (dots in both parts):      `- stage: mypkg.filters:NoWatermark` style keys,
    e.g. `- mypkg.filters:NoWatermark: {max_ratio: 0.5}`
  - the name of an entry point in the group `curate.stages` of an installed distribution, whose object is
    the class (`no_watermark = "mypkg.filters:NoWatermark"` under [project.entry-points."curate.stages"]).
Whichever way a class is found it gets the same checks as a shipped stage (a Step subclass with a snake_case
name that no other class uses, declared reasons) and is registered, so its settings are validated by its own
pydantic model like any other stage's.

Importing a module runs its code: an import path in a recipe imports whatever is installed or on sys.path
under that name, with the same trust as a pytest or Ray plugin. Only the recipe's own key is imported, never
every entry point, so one broken plugin cannot stop unrelated runs.

Ray workers unpickle a user stage by importing its module, so they need the module too. `runtime_env_for`
gives Ray the folders of user packages that are not installed in site-packages (`py_modules`), which makes
them importable on every worker, on a local Ray and on a cluster alike.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import re
import sys
import sysconfig
from pathlib import Path

from curate import schema
from curate.stage import REGISTRY, Filter, Job, Stage, Step, register

ENTRY_POINT_GROUP = "curate.stages"
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
IMPORT_PATH = re.compile(rf"^{_IDENT}(\.{_IDENT})*:{_IDENT}(\.{_IDENT})*$")
STAGE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_BASES = (Step, Stage, Filter, Job)


class StageLookupError(ValueError):
    """A stage key that names no usable Step class; the message is one line for the user."""


def is_import_path(ref: str) -> bool:
    return ":" in ref


def resolve(ref: str, registry: dict[str, type[Step]]) -> type[Step]:
    """The Step class a recipe's stage key names (see the module docstring), registered and checked."""
    if ref in registry:
        return registry[ref]
    if is_import_path(ref):
        cls, origin = _from_import_path(ref), ref
    else:
        found = _from_entry_point(ref)
        if found is None:
            raise StageLookupError(
                f"unknown stage {ref!r} (known: {', '.join(sorted(registry))}; a stage of your own is named "
                f"by import path, module:Class, or by an entry point in the group {ENTRY_POINT_GROUP!r})")
        cls, origin = found
        if getattr(cls, "name", None) != ref:
            raise StageLookupError(f"entry point {ref!r} ({origin}) loads {_describe(cls)}, whose name is "
                                   f"{getattr(cls, 'name', None)!r}: the entry point's name must be the stage's name")
    return checked(cls, origin)


def checked(cls, origin: str, *, keep: bool = True) -> type[Step]:
    """`cls` as a checked Step class, or a one-line StageLookupError saying what is wrong with it. With
    `keep` the class is registered under its name (recipes loaded later find it); without, only its reason
    codes join the vocabulary (stage objects passed to a Pipeline: a test's local classes may share names)."""
    if not isinstance(cls, type) or not issubclass(cls, Step) or cls in _BASES:
        raise StageLookupError(f"{origin} is {_describe(cls)}, not a subclass of curate.Stage, curate.Filter or curate.Job")
    name = getattr(cls, "name", "")
    if not isinstance(name, str) or not STAGE_NAME.match(name):
        raise StageLookupError(f"{origin}: the class needs a snake_case `name` (its name in recipes and in the "
                               f"metadata's stage column), got {name!r}")
    holder = REGISTRY.get(name)
    if holder is not None and holder is not cls and not (keep is False and is_user_class(holder)):
        raise StageLookupError(f"{origin}: stage name {name!r} is already taken by {_describe(holder)}; give the "
                               "class another name")
    try:
        register(cls) if keep else schema.declare_reasons(cls.reasons)
    except ValueError as err:  # a reason code that is not snake_case
        raise StageLookupError(f"{origin}: {err}") from None
    return cls


def _describe(obj) -> str:
    if isinstance(obj, type):
        return f"class {obj.__module__}.{obj.__qualname__}"
    return f"a {type(obj).__name__}"


def _from_import_path(ref: str):
    if not IMPORT_PATH.match(ref):
        raise StageLookupError(f"stage {ref!r}: an import path looks like package.module:ClassName")
    module_name, attr = ref.split(":", 1)
    if module_name.split(".")[0] in sys.stdlib_module_names:  # no stages there; some run code on import
        raise StageLookupError(f"stage {ref!r}: {module_name!r} is a standard-library module, not a stage package")
    try:
        obj = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        missing = err.name or module_name
        raise StageLookupError(f"stage {ref!r}: cannot import {module_name!r} (no module named {missing!r}); install "
                               "its package or put its folder on PYTHONPATH") from None
    except Exception as err:  # noqa: BLE001 - whatever the user's module raises while importing
        line = " ".join(f"{type(err).__name__}: {err}".split())[:300]
        raise StageLookupError(f"stage {ref!r}: importing {module_name!r} failed: {line}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise StageLookupError(f"stage {ref!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def _from_entry_point(name: str):
    """(object, where it came from) for the entry point `name` in ENTRY_POINT_GROUP, or None if there is none."""
    found = [ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    dists = sorted({_dist_name(ep) for ep in found})
    if not found:
        return None
    if len({ep.value for ep in found}) > 1:
        raise StageLookupError(f"stage {name!r} is an entry point of more than one installed distribution "
                               f"({', '.join(dists)}); uninstall one, or name the class by import path")
    ep = found[0]
    origin = f"{ep.value} from {dists[0]}"
    try:
        return ep.load(), origin
    except Exception as err:  # noqa: BLE001 - whatever the plugin raises while importing
        line = " ".join(f"{type(err).__name__}: {err}".split())[:300]
        raise StageLookupError(f"stage {name!r}: loading entry point {origin} failed: {line}") from None


def _dist_name(ep) -> str:
    dist = getattr(ep, "dist", None)
    return dist.name if dist is not None else "an unknown distribution"


def is_user_class(cls: type) -> bool:
    return not (cls.__module__ == "curate" or cls.__module__.startswith("curate."))


def ref_of(cls: type[Step]) -> str:
    """The key a saved recipe uses for `cls`: its name for shipped classes and classes no other process can
    import (defined in __main__ or inside a function), else its import path, so `curate report`, --resume
    and refilter in another process find the class without the user's Python session."""
    if not is_user_class(cls) or cls.__module__ == "__main__" or "<locals>" in cls.__qualname__:
        return cls.name
    return f"{cls.__module__}:{cls.__qualname__}"


def _installed(path: Path) -> bool:
    """Whether `path` lies in an installation's site-packages, where a cluster's own install must provide it."""
    roots = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    resolved = path.resolve()
    if any(part in ("site-packages", "dist-packages") for part in resolved.parts):
        return True
    return any(resolved.is_relative_to(Path(r).resolve()) for r in roots)


def user_package_dirs(steps) -> list[str]:
    """Folders of the top-level packages of user steps that are not installed in site-packages: the ones
    Ray must ship to its workers (py_modules). Single-file modules cannot be shipped that way; they must be
    importable on the workers already (installed, or on PYTHONPATH of a local Ray)."""
    dirs: list[str] = []
    for step in steps:
        cls = type(step)
        if not is_user_class(cls) or cls.__module__ == "__main__":
            continue
        top = sys.modules.get(cls.__module__.split(".")[0])
        paths = list(getattr(top, "__path__", []) or [])
        if len(paths) != 1:  # a single-file module, or a namespace package spread over several folders
            continue
        folder = Path(paths[0])
        if folder.is_dir() and not _installed(folder) and str(folder) not in dirs:
            dirs.append(str(folder))
    return dirs


def runtime_env_for(steps, runtime_env: dict | None = None) -> dict | None:
    """`runtime_env` with the user packages of `steps` added to py_modules (None when there is nothing to add)."""
    dirs = user_package_dirs(steps)
    if not dirs:
        return runtime_env
    env = dict(runtime_env or {})
    env["py_modules"] = list(dict.fromkeys([*(env.get("py_modules") or []), *dirs]))
    return env
