"""The lightest install (docs/install.md): `pip install .` with no extra must run `curate demo`.

A fresh venv per test run costs minutes, so this checks the same thing from the source: every third-party
module that the demo's code path can import (the imports of the `demo` command, of the stages its recipes
use, and everything those modules import, at module level or inside functions, minus imports guarded by
`except ImportError`) comes from a distribution that [project.dependencies] pulls in, directly or through
the requirements of those distributions (with the extras they name). An import of an extra's package
(transformers, av, ...) on the demo path fails it, with the module that imports it."""
from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PACKAGE_DIRS = PYPROJECT["tool"]["setuptools"]["package-dir"]  # curate.filters -> filters, ...
# recipes `curate demo` runs: image (the default; image_text with --no-clip-filter), video
DEMO_RECIPES = {"image": ("image_text", "image_text_clip"), "video": ("video_text",)}


def source_of(module: str) -> Path | None:
    """The .py file of a curate module, from the package-dir mapping (no import: importing a package runs it)."""
    for pkg in sorted(PACKAGE_DIRS, key=len, reverse=True):
        if module == pkg or module.startswith(pkg + "."):
            base = REPO / PACKAGE_DIRS[pkg] / Path(*module[len(pkg):].strip(".").split(".") if module != pkg else ())
            for candidate in (base.with_suffix(".py"), base / "__init__.py"):
                if candidate.is_file():
                    return candidate
    return None


def _guarded(parents: list[ast.AST]) -> bool:
    """Inside `try: ... except ImportError` (an optional dependency)."""
    return any(isinstance(p, ast.Try) and any(h.type is not None and re.search(r"\b(ImportError|ModuleNotFoundError)\b",
                                                                                ast.unparse(h.type)) for h in p.handlers)
               for p in parents)


def imports_of(path: Path, module: str, only: str | None = None) -> set[str]:
    """Modules imported anywhere in `path` (or only inside the function named `only`)."""
    tree = ast.parse(path.read_text())
    if only is not None:
        tree = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == only)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node, parents):
        if isinstance(node, ast.Import) and not _guarded(parents):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not _guarded(parents):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import submodule`
        for child in ast.iter_child_nodes(node):
            visit(child, parents + [node])

    visit(tree, [])
    return found


def demo_third_party(modality: str = "image") -> dict[str, str]:
    """Top-level third-party module -> a curate module on the path of `curate demo --modality M` that imports it."""
    from curate.recipe import find_recipe, load_yaml
    from curate.stage import load_builtin_steps

    registry = load_builtin_steps()
    roots = imports_of(REPO / "curate" / "cli.py", "curate.cli", only="demo")
    if modality == "image":  # the demo command's branch for --modality video imports it
        roots -= {"curate.demo.video_run", "curate.demo.video_run.run_video_demo"}
    roots |= imports_of(REPO / "curate" / "cli.py", "curate.cli", only="main")
    for name in DEMO_RECIPES[modality]:
        for entry in load_yaml(find_recipe(name).read_text())["stages"]:
            roots.add(registry[next(iter(entry)) if isinstance(entry, dict) else entry].__module__)
    tree = ast.parse((REPO / "curate" / "cli.py").read_text())  # cli's module-level imports run for every command
    for node in tree.body:
        if isinstance(node, ast.Import):
            roots |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    seen: set[str] = set()
    todo, third = sorted(roots), {}
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        top = module.split(".")[0]
        if top != "curate":
            if top not in sys.stdlib_module_names and top != "__future__":
                third.setdefault(top, "?")
            continue
        path = source_of(module)
        if path is None:  # `from curate.x import name`: a name, not a module
            continue
        for imported in imports_of(path, module):
            if imported.split(".")[0] != "curate":
                third.setdefault(imported.split(".")[0], module) if imported.split(".")[0] not in sys.stdlib_module_names else None
            else:
                todo.append(imported)
    return {k: v for k, v in third.items() if k != "__future__"}


def run_closure() -> set[str]:
    """Normalised names of every distribution [project.dependencies] installs (markers as on this machine)."""
    todo = [(Requirement(r), "") for r in PYPROJECT["project"]["dependencies"]]
    seen: set[tuple[str, str]] = set()
    names: set[str] = set()
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        for want in [""] + sorted(req.extras):
            if (norm(req.name), want) in seen:
                continue
            seen.add((norm(req.name), want))
            names.add(norm(req.name))
            try:
                requires = md.requires(req.name) or []
            except md.PackageNotFoundError:
                continue
            todo += [(Requirement(r), want) for r in requires]
    return names


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def not_installed_by_default(modality: str) -> dict[str, tuple[str, list[str]]]:
    """Third-party modules on the demo path that [project.dependencies] does not install: module -> (the
    curate module importing it, its distributions)."""
    third = demo_third_party(modality)
    assert {"ray", "torch", "open_clip", "duckdb", "pyarrow"} <= set(third)  # the walk reaches the demo's stack
    closure, dists = run_closure(), md.packages_distributions()
    return {mod: (where, dists.get(mod, [])) for mod, where in third.items()
            if not any(norm(d) in closure for d in dists.get(mod, []))}


def test_the_image_demo_needs_no_extra():
    missing = not_installed_by_default("image")
    assert not missing, f"imported on the demo path but not installed by [project.dependencies]: {missing}"


def test_the_video_demo_needs_only_the_video_extra():
    video = {norm(Requirement(r).name) for r in PYPROJECT["project"]["optional-dependencies"]["video"]}
    missing = not_installed_by_default("video")
    assert missing and {norm(d) for _, ds in missing.values() for d in ds} <= video, missing
