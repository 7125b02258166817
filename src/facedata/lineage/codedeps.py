"""Which facedata source files a stage runs, and one hash of them: the stage's code version.

The set is the static import graph of the stage's entry points (`facedata.pipeline.runner`, which imports
`facedata.pipeline.<stage>` by name), walked with `ast` through every `facedata` import, including imports
inside functions (they run when the stage does) but not those under `if TYPE_CHECKING:`. A submodule brings
its packages' `__init__.py` files, which Python runs first.

The same set serves twice, so the two cannot disagree:

- `facedata dvc-yaml --write` lists it as each stage's code deps in this repository's dvc.yaml, so editing a
  file a stage imports reruns that stage (and only the stages that import it);
- `code_hash(stage)` hashes it at run time into every row's lineage, so reuse is honest where DVC does not
  see the package (a project made by `facedata init` runs the installed facedata): a row made by other code is
  recomputed, not reused.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from collections.abc import Iterable
from pathlib import Path

PACKAGE = "facedata"


def package_dir() -> Path:
    """The directory of the facedata package that is running (src/facedata in a checkout)."""
    return Path(__file__).resolve().parent.parent


def module_path(module: str, base: Path | None = None) -> Path | None:
    """The source file of a facedata module (`facedata.faces.detect`), or None when there is none."""
    base = base or package_dir()
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    rel = Path(*parts[1:]) if len(parts) > 1 else Path()
    for candidate in (base / rel / "__init__.py", (base / rel).with_suffix(".py") if len(parts) > 1 else None):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> Iterable[ast.Import | ast.ImportFrom]:
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)  # the TYPE_CHECKING branch never runs
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def imported_modules(path: Path, module: str) -> set[str]:
    """Every facedata module `path` (the source of `module`) may import, as dotted names."""
    tree = ast.parse(path.read_bytes(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in _import_nodes(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
            continue
        if node.level:  # relative: from the module's package upwards
            pkg = module.split(".") if is_pkg else module.split(".")[:-1]
            pkg = pkg[: len(pkg) - (node.level - 1)]
            base = ".".join(pkg + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        out.add(base)
        out.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import submodule`
    return {m for m in out if m == PACKAGE or m.startswith(PACKAGE + ".")}


def _with_parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def import_closure(roots: Iterable[str], base: Path | None = None) -> tuple[str, ...]:
    """Source files (relative to the directory holding the package, e.g. `facedata/faces/detect.py`) of the
    modules `roots` import, directly or not, with the packages they sit in; sorted."""
    base = base or package_dir()
    seen: set[str] = set()
    files: set[Path] = set()
    todo = [m for r in roots for m in _with_parents(r)]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = module_path(module, base)
        if path is None:  # a name imported from a module (`from facedata.x import func`), not a module
            continue
        files.add(path)
        for dep in imported_modules(path, module):
            todo.extend(m for m in _with_parents(dep) if m not in seen)
    return tuple(sorted(p.relative_to(base.parent).as_posix() for p in files))


def stage_entry_modules(stage: str) -> tuple[str, ...]:
    """What `python -m stages.<stage>` runs: the runner, which imports the stage's module by name."""
    return (f"{PACKAGE}.pipeline.runner", f"{PACKAGE}.pipeline.{stage}")


def stage_code_files(stage: str, base: Path | None = None) -> tuple[str, ...]:
    """The facedata source files stage `stage` runs (its DVC code deps, under `src/` in this repository)."""
    return import_closure(stage_entry_modules(stage), base)


def files_hash(files: Iterable[str], base_parent: Path) -> str:
    """sha256 over (relative path, content sha256) of each file: a rename or an edit changes it."""
    h = hashlib.sha256()
    for rel in sorted(files):
        h.update(rel.encode() + b"\0" + hashlib.sha256((base_parent / rel).read_bytes()).digest() + b"\n")
    return h.hexdigest()


@functools.cache
def code_hash(stage: str) -> str:
    """The code version of `stage` in this process: a hash of the files `stage_code_files` lists (16 hex)."""
    base = package_dir()
    return files_hash(stage_code_files(stage, base), base.parent)[:16]
