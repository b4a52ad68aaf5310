"""The table engine's structure: one writer module per shared word, one-way imports, sizes.

An AST scan of ``sharedzarr/_table/`` finds every store into shared memory, however it
is spelled (``H[L.H_GEN] = ...``, ``H[9] += 1``, a tuple target, ``seg.words[i] = ...``,
``struct.pack_into`` on the header, ``X_HDR.pack_into`` on an arena or index header,
``operator.setitem``, or a call of a helper whose parameter is the word index), and
checks that each word is stored by exactly one module: the one the package docstring
names.  The checker is itself tested on sources with a store added in the wrong module.
"""

from __future__ import annotations

import ast
import struct
from pathlib import Path

import pytest
from _imports import runtime_imports

from sharedzarr import _layout as L

ROOT = Path(__file__).resolve().parent.parent / "sharedzarr"
ENGINE = ROOT / "_table"
# the import order: each module may import only the engine modules before it
ORDER = [
    "_undo",
    "_header",
    "_catalog",
    "_ownership",
    "_arenas",
    "_index",
    "_space",
    "_read",
    "_recovery",
    "_fill",
    "_reserve",
    "_session",
    "_write",
    "_bulk",
    "_table",
    "__init__",
]
FORBIDDEN_IMPORTS = ("sharedzarr.array", "sharedzarr.storage", "sharedzarr.zarr_store")
FORBIDDEN_IMPORTS += ("sharedzarr.cli", "sharedzarr._export", "sharedzarr.testing")

H_NAMES = {v: k for k, v in vars(L).items() if k.startswith("H_") and k not in ("H_WORDS",)}
A_NAMES = {v: k for k, v in vars(L).items() if k.startswith("A_")}
H_NAMES.pop(L.H_POOL, None)  # a base index, not a word of its own
POOL = "H_POOL[*]"
DYNAMIC = "H[?]"

# who stores what (the package docstring of sharedzarr._table says why)
OWNERS = {
    "H_MAGIC": "_header",
    "H_OPTIONS": "_header",
    "H_CREATED": "_header",
    "H_WRITES": "_header",
    "H_RECLAIM": "_header",
    "H_CUR_ARENA": "_arenas",
    "H_NEXT_ARENA": "_arenas",
    "H_REUSE": "_arenas",
    POOL: "_arenas",
    **{name: "_arenas" for name in A_NAMES.values()},
    "A_HEADER": "_arenas",
    "INDEX_SLOTS": "_index",
    "INDEX_HEADER": "_index",
    "H_GEN": "_index",
    "H_USED_SLOTS": "_index",
    "H_GARBAGE": "_space",
    "H_LIVE_RECORD": "_space",
    "H_HOLDER": "_session",
    "H_DIRTY": "_session",
    "H_OPSEQ": "_session",
    "H_READER_WAIT": "_read",
    "H_RECOVERIES": "_recovery",
    "H_UNDO": "_undo",
    "UNDO_LOG": "_undo",
    "H_KEYS": "_write",
    "H_OBJECTS": "_write",
    "H_LIVE_VALUE": "_write",
    "H_DELETED": "_catalog",
    "H_OWNER_PID": "_ownership",
    "H_OWNER_START": "_ownership",
    "H_HEIR_PID": "_ownership",
    "H_HEIR_START": "_ownership",
}


def _header_word_name(i: int) -> str:
    if i == 0:
        return "H_MAGIC"
    if i in (1, 2):
        return "H_OPTIONS"  # version, header size, type/access/named/persistent, mode
    if i == 7:
        return "H_CREATED"
    if L.H_POOL <= i < L.H_POOL + 2 * L.POOL_SLOTS:
        return POOL
    return H_NAMES.get(i, f"H[{i}]")


def _word_of_index(node: ast.expr, base: str) -> str | None:
    """The word a subscript index names: ``H_*``/``A_*`` names, literal ints, pool words."""
    arena_base = base == "w" or base.endswith("words")
    if isinstance(node, ast.Attribute) and node.attr.startswith(("H_", "A_")):
        name = node.attr
    elif isinstance(node, ast.Name) and node.id.startswith(("H_", "A_")):
        name = node.id
    elif isinstance(node, ast.Constant) and isinstance(node.value, int):
        if arena_base:
            return A_NAMES.get(node.value, f"A[{node.value}]")
        return _header_word_name(node.value)
    else:
        text = ast.unparse(node)
        if "H_POOL" in text or text in ("w", "w + 1"):
            return POOL
        if arena_base:
            return "A[?]"
        return None
    if name == "H_POOL":
        return POOL
    if name.startswith("H_"):
        return _header_word_name(getattr(L, name))
    return name


def _base_text(node: ast.expr) -> str:
    return ast.unparse(node)


def _is_view(base: str) -> bool:
    """Whether ``base`` spells a header or arena word view (``H``, ``self._H``, ``w``...)."""
    return base in ("H", "w", "words") or base.endswith(("._H", ".words", "_H"))


class _Scanner(ast.NodeVisitor):
    """Collect ``(word, line)`` stores of one module; learn its store helpers."""

    def __init__(self, helpers: dict[str, int]) -> None:
        self.stores: list[tuple[str, int]] = []
        self.helpers = helpers  # function name -> index of the word parameter
        self.new_helpers: dict[str, int] = {}
        self._params: list[list[str]] = []
        self._func: list[str] = []

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        params = [a.arg for a in node.args.posonlyargs + node.args.args]
        self._params.append(params)
        self._func.append(node.name)
        self.generic_visit(node)
        self._params.pop()
        self._func.pop()

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def _store_target(self, target: ast.expr, line: int) -> None:
        if isinstance(target, (ast.Tuple, ast.List)):
            for elt in target.elts:
                self._store_target(elt, line)
            return
        if isinstance(target, ast.Starred):
            self._store_target(target.value, line)
            return
        if not isinstance(target, ast.Subscript):
            return
        self._subscript_store(target.value, target.slice, line)

    def _subscript_store(self, value: ast.expr, index: ast.expr, line: int) -> None:
        base = _base_text(value)
        if isinstance(index, ast.Slice):
            lower = ast.unparse(index.lower) if index.lower is not None else "0"
            if "INDEX_HEADER" in lower:
                self.stores.append(("INDEX_SLOTS", line))
            elif lower == "0" and base in ("buf", "hdr.buf", "self._hdr.buf"):
                self.stores.append(("H_MAGIC", line))
            elif "idx" in base:
                self.stores.append(("INDEX_SLOTS", line))
            return  # a record's bytes (unpublished: not a shared word)
        if base.endswith("_idx") or base == "idx":
            self.stores.append(("INDEX_SLOTS", line))
            return
        named = (isinstance(index, ast.Attribute) and index.attr.startswith(("H_", "A_"))) or (
            isinstance(index, ast.Name) and index.id.startswith(("H_", "A_"))
        )
        if not named and not _is_view(base):
            return  # a dict or list of this process (caches, maps): not shared memory
        word = _word_of_index(index, base)
        if word is None:
            # an index held in a variable: a helper when it is a parameter, else dynamic
            if (
                isinstance(index, ast.Name)
                and self._params
                and index.id in self._params[-1]
                and self._func
            ):
                self.new_helpers[self._func[-1]] = self._params[-1].index(index.id)
                return
            word = DYNAMIC
        elif word == "A[?]" and isinstance(index, ast.Name) and self._params:
            if index.id in self._params[-1]:
                self.new_helpers[self._func[-1]] = self._params[-1].index(index.id)
                return
        self.stores.append((word, line))

    def visit_Assign(self, node: ast.Assign) -> None:
        for t in node.targets:
            self._store_target(t, node.lineno)
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._store_target(node.target, node.lineno)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self._store_target(node.target, node.lineno)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        f = node.func
        fname = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
        line = node.lineno
        if fname == "pack_into":
            owner = ast.unparse(f.value) if isinstance(f, ast.Attribute) else ""
            if owner.endswith("ARENA_HDR"):
                self.stores.append(("A_HEADER", line))
                self.stores.extend((a, line) for a in A_NAMES.values())
            elif owner.endswith("INDEX_HDR"):
                self.stores.append(("INDEX_HEADER", line))
            elif owner.endswith(("_UNDO_HDR", "_UNDO_ENTRY")):
                self.stores.append(("UNDO_LOG", line))
            elif len(node.args) >= 3:  # struct.pack_into(fmt, buf, offset, ...)
                fmt, off = node.args[0], node.args[2]
                if isinstance(fmt, ast.Constant) and isinstance(off, ast.Constant):
                    size = struct.calcsize(fmt.value)
                    for i in range(off.value // 8, (off.value + size + 7) // 8):
                        self.stores.append((_header_word_name(i), line))
                else:
                    self.stores.append((DYNAMIC, line))
        elif fname in ("setitem", "__setitem__") and node.args:
            args = node.args if fname == "setitem" else [f.value, *node.args]  # type: ignore[union-attr]
            if len(args) >= 2:
                self._subscript_store(args[0], args[1], line)
        elif fname in self.helpers:
            k = self.helpers[fname]
            # a method's self is not passed explicitly
            args = node.args
            if isinstance(f, ast.Attribute) and k > 0:
                k -= 1
            if k < len(args):
                word = _word_of_index(args[k], "words")
                self.stores.append((word or DYNAMIC, line))
        self.generic_visit(node)


def scan(sources: dict[str, str]) -> dict[str, dict[str, list[int]]]:
    """``word -> {module: [lines]}`` for the engine ``sources`` (module name -> text)."""
    trees = {m: ast.parse(src) for m, src in sources.items()}
    helpers: dict[str, int] = {}
    for _round in range(3):  # helpers of helpers
        for tree in trees.values():
            s = _Scanner(helpers)
            s.visit(tree)
            helpers.update(s.new_helpers)
    out: dict[str, dict[str, list[int]]] = {}
    for m, tree in trees.items():
        s = _Scanner(helpers)
        s.visit(tree)
        for word, line in s.stores:
            out.setdefault(word, {}).setdefault(m, []).append(line)
    return out


def engine_sources() -> dict[str, str]:
    return {p.stem: p.read_text() for p in sorted(ENGINE.glob("*.py"))}


def violations(found: dict[str, dict[str, list[int]]]) -> list[str]:
    bad = []
    for word, by_module in sorted(found.items()):
        mods = sorted(by_module)
        if len(mods) != 1:
            bad.append(f"{word} is stored by {len(mods)} modules: {by_module}")
        elif word not in OWNERS:
            bad.append(f"{word} is stored by {mods[0]} but has no documented owner")
        elif OWNERS[word] != mods[0]:
            bad.append(f"{word} is stored by {mods[0]}, owner is {OWNERS[word]}")
    return bad


def test_each_shared_word_has_one_writer_module():
    found = scan(engine_sources())
    assert not violations(found), "\n".join(violations(found))
    # the scan sees the stores it must see (a scanner that finds nothing passes vacuously)
    for word in ("H_GEN", "H_WRITES", "INDEX_SLOTS", "A_NOREUSE", "A_LIVE", POOL, "H_DELETED"):
        assert word in found, word
    assert DYNAMIC not in found


@pytest.mark.parametrize(
    "stmt",
    [
        "H[L.H_GEN] = 0",
        "self._H[L.H_GEN] += 1",
        "H[9] = 0",
        "a, H[L.H_GEN] = 1, 2",
        "struct.pack_into('<Q', buf, 72, 0)",
        "operator.setitem(H, L.H_GEN, 0)",
        "H.__setitem__(L.H_GEN, 0)",
        "self._idx[(slot << 1) + 1] = 0",
        "seg.words[L.A_NOREUSE] = 1",
        "w[7] = 1",
        "_set_arena_word(seg, L.A_ID, 0)",
        "L.ARENA_HDR.pack_into(buf, 0, 0, 0, 0, 0, 0, 0, 0, 0)",
        "H[w] = 0",
        "H[i] = 0",
    ],
)
def test_a_store_in_another_module_is_found(stmt):
    sources = engine_sources()
    sources["_write"] += f"\n\ndef _intruder(self, H, buf, seg, w, slot):\n    i = 3\n    {stmt}\n"
    bad = violations(scan(sources))
    assert any("_write" in b for b in bad), bad


def test_imports_run_one_way():
    for path in sorted(ENGINE.glob("*.py")):
        m = path.stem
        for name in sorted(runtime_imports(path)):
            assert not name.startswith(FORBIDDEN_IMPORTS), f"_table/{m}.py imports {name}"
            if name.startswith("sharedzarr._table."):
                dep = name.split(".")[2]  # (a name imported from it follows)
                assert dep in ORDER, f"{m} imports unknown {dep}"
                ok = ORDER.index(dep) < ORDER.index(m)
                assert ok, f"_table/{m}.py imports {dep}, which is above it"
    for extra in ("_platform.py", "_faults.py"):
        imported = runtime_imports(ROOT / extra)
        assert not [n for n in imported if n.startswith(FORBIDDEN_IMPORTS)]


def test_sizes():
    files = sorted(ENGINE.glob("*.py")) + [ROOT / "_platform.py", ROOT / "_faults.py"]
    for p in files:
        src = p.read_text()
        assert src.count("\n") <= 1000, f"{p.name} has {src.count(chr(10))} lines"
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.ClassDef):
                n = node.end_lineno - node.lineno + 1
                assert n <= 700, f"class {node.name} in {p.name} has {n} lines"


def test_hot_word_literals_match_the_layout():
    from sharedzarr._table._header import HOT_WORDS

    for name, value in HOT_WORDS.items():
        assert getattr(L, name) == value
    # every literal header index the read path uses is one of them
    src = (ENGINE / "_read.py").read_text()
    hot = {v for k, v in HOT_WORDS.items() if k.startswith("H_")}
    for node in ast.walk(ast.parse(src)):
        if (
            isinstance(node, ast.Subscript)
            and isinstance(node.slice, ast.Constant)
            and isinstance(node.slice.value, int)
            and ast.unparse(node.value) == "H"
        ):
            assert node.slice.value in hot, ast.unparse(node)


def test_no_method_call_on_an_imported_object():
    """``imported_name.method()`` loses CPython 3.11's method-call fast path (see _header)."""
    import importlib
    import inspect

    for m, src in engine_sources().items():
        tree = ast.parse(src)
        mod = importlib.import_module(
            f"sharedzarr._table.{m}" if m != "__init__" else "sharedzarr._table"
        )
        imported = {
            (a.asname or a.name)
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)
            for a in node.names
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id in imported
            ):
                obj = getattr(mod, node.func.value.id, None)
                if obj is None:
                    continue  # imported inside a function (``from multiprocessing import util``)
                plain = inspect.ismodule(obj) or inspect.isclass(obj) or callable(obj)
                assert plain, (
                    f"_table/{m}.py:{node.lineno} calls a method of imported {node.func.value.id}"
                )
