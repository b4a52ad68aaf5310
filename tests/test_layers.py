"""The package's modules import one way: no cycle, and nothing below the adapters reaches up.

Every import counts, at module level or inside a function (a lazy import is still a
dependency); imports under ``TYPE_CHECKING`` are types only and do not.
"""

from __future__ import annotations

from _imports import ROOT, module_name, runtime_imports

# the top layer: they may use everything below; nothing below may use them
ADAPTERS = ("sharedzarr.cli", "sharedzarr.zarr_store", "sharedzarr._export", "sharedzarr.testing")


def _graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in ROOT.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        graph[name] = {d for d in runtime_imports(path) if d in files and d != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles() -> None:
    graph = _graph()
    # the package's __init__ is the public surface: it imports what it re-exports, and a
    # submodule may read ``sharedzarr.__version__`` from it; it is left out of the check
    graph.pop("sharedzarr", None)
    for deps in graph.values():
        deps.discard("sharedzarr")
    assert _cycles(graph) == []


def test_nothing_below_the_adapters_imports_them() -> None:
    for name, deps in _graph().items():
        if name in ("sharedzarr", "sharedzarr.__main__") or name.startswith(ADAPTERS):
            continue
        up = sorted(d for d in deps if d.startswith(ADAPTERS))
        assert not up, f"{name} imports the adapter(s) {up}"


def test_the_checker_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
