"""The array's structure: one mixin per module in ``sharedzarr/_array/``, imports one way.

``sharedzarr.array`` is the facade; each module of ``_array`` adds one concern on top of
the one below it.  A module imports only the modules below it (imports under
``TYPE_CHECKING`` are types, not dependencies, and may point anywhere), nothing of the
array's part imports the adapters, and no class or module outgrows a size a reader can
hold in mind.
"""

from __future__ import annotations

import ast

from _imports import ROOT, runtime_imports

import sharedzarr
from sharedzarr._array._base import ArrayBase

PARTS = ROOT / "_array"
# the import order: each module may import only the modules before it
ORDER = ["_attributes", "_base", "_gather", "_read", "_write", "_chunks", "_shape", "__init__"]
ABOVE = ("sharedzarr.array", "sharedzarr.zarr_store", "sharedzarr.cli", "sharedzarr._export")
ABOVE += ("sharedzarr.testing", "sharedzarr._constructors")


def test_array_parts_import_one_way() -> None:
    for p in sorted(PARTS.glob("*.py")):
        for name in sorted(runtime_imports(p)):
            assert not name.startswith(ABOVE), f"_array/{p.name} imports {name}"
            if name.startswith("sharedzarr._array."):
                dep = name.split(".")[2]  # (a name imported from it follows)
                assert ORDER.index(dep) < ORDER.index(p.stem), (
                    f"_array/{p.name} imports {dep}, which is above it"
                )


def test_array_sizes() -> None:
    for p in [ROOT / "array.py", *sorted(PARTS.glob("*.py"))]:
        src = p.read_text()
        assert src.count("\n") <= 1000, f"{p.name} has {src.count(chr(10))} lines"
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.ClassDef):
                n = (node.end_lineno or 0) - node.lineno + 1
                assert n <= 700, f"class {node.name} in {p.name} has {n} lines"


def test_array_is_the_stack_of_its_parts() -> None:
    """Every mixin is in the MRO once, in the import order, and no two define a name."""
    mro = [c for c in sharedzarr.Array.__mro__ if c.__module__.startswith("sharedzarr")]
    modules = [c.__module__.rsplit(".", 1)[1] for c in mro]
    assert modules == ["array", "_shape", "_chunks", "_write", "_read", "_gather", "_base"]
    assert mro[-1] is ArrayBase
    seen: dict[str, str] = {}
    for cls in mro:
        for name in vars(cls):
            if name.startswith("__") and name.endswith("__"):
                continue
            assert name not in seen, f"{name} is defined by {seen.get(name)} and {cls.__name__}"
            seen[name] = cls.__name__
