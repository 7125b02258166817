"""The package layout: library code never imports stage drivers, the CLI or the Prefect flow (walked with the
same import graph that computes the stages' code deps), and the library has no import cycles between modules."""

from __future__ import annotations

import pkgutil

import facedata
from facedata.lineage.codedeps import imported_modules, module_path

#: What is not library: stage drivers, the DAG and runner (pipeline), the CLI, the Prefect flows, and the public
#: API's facade (Project.build runs the flow).
ORCHESTRATION = ("facedata.pipeline", "facedata.cli", "facedata.flows")
DRIVERS = ("facedata.api",)
#: One package per domain; the top level holds only what every package shares.
DOMAINS = {
    "collect",
    "faces",
    "embed",
    "cluster",
    "quality",
    "export",
    "review",
    "train",
    "video",
    "recon3d",
    "scale",
}
CORE = {
    "api",
    "atomic",
    "device",
    "errors",
    "gitinfo",
    "ids",
    "imageio",
    "interrupt",
    "lineage",
    "lock",
    "manifest",
    "models",
    "params",
    "project",
    "store",
    "storecheck",
    "torchvision_compat",
}


def _modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(facedata.__path__, "facedata."))


def _is(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _graph() -> dict[str, set[str]]:
    """module -> the facedata modules it imports (anywhere in its source: lazy imports count)."""
    mods = set(_modules()) | {"facedata"}
    out = {}
    for m in mods:
        path = module_path(m)
        deps = imported_modules(path, m) if path else set()
        out[m] = {d for d in deps if d in mods and d != m}
    return out


def test_library_never_imports_stage_code_the_cli_or_the_flow():
    graph = _graph()
    library = [m for m in graph if not _is(m, ORCHESTRATION + DRIVERS)]
    assert {"facedata.quality.gates", "facedata.cluster.evaluate", "facedata.faces.analyze"} <= set(library)
    seen_bad = {}
    for root in library:
        todo, seen = [root], {root}
        while todo:
            m = todo.pop()
            for d in graph[m]:
                if _is(d, ORCHESTRATION):
                    seen_bad.setdefault(root, d)
                elif d not in seen:
                    seen.add(d)
                    todo.append(d)
    assert not seen_bad, "library modules reaching orchestration code: " + ", ".join(
        f"{m} -> {d}" for m, d in sorted(seen_bad.items())
    )


#: Known two-way imports, each lazy on one side, and why they stay until the package moves of issue 15 item 1.
KNOWN_CYCLES: dict[tuple[str, str], str] = {}


def test_no_import_cycles_between_library_modules():
    """Two modules importing each other (even lazily, inside a function) are one idea split in two; a package
    importing its own modules (a registry: `facedata.embed` makes its embedders) is not a cycle."""
    graph = _graph()
    cycles = sorted(
        (a, b)
        for a, deps in graph.items()
        for b in deps
        if a < b
        and a in graph.get(b, set())
        and not _is(a, ORCHESTRATION)
        and not b.startswith(a + ".")
        and "facedata" not in (a, b)
    )
    assert "facedata.cluster.algorithms" not in {m for c in cycles for m in c}
    assert [c for c in cycles if c not in KNOWN_CYCLES] == []


def test_top_level_is_one_package_per_domain_plus_shared_core():
    """A new domain is a package beside the others, not a loose module: the top level is the shared core, the
    domain packages, and the orchestration on top (pipeline, flows, cli)."""
    top = {m.name for m in pkgutil.iter_modules(facedata.__path__)}
    assert top == CORE | DOMAINS | {"pipeline", "flows", "cli"}, sorted(
        top ^ (CORE | DOMAINS | {"pipeline", "flows", "cli"})
    )
