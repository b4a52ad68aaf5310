"""A Hypothesis state machine comparing each table type against a plain-Python model."""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from sharedzarr._index import sort_key as _sort_key
from sharedzarr._table import Table

KEYS = st.one_of(
    st.integers(-3, 3),
    st.sampled_from(["a", "b", "", b"k"]),
    st.tuples(st.just("chunk"), st.tuples(st.integers(0, 2), st.integers(0, 2))),
)
VALUES = st.one_of(st.binary(max_size=40), st.sampled_from([b"", b"x" * 3000, b"y" * 70000]))


class TableModel(RuleBasedStateMachine):
    """Drive a table and a model with the same operations; compare after each step."""

    table_type = "set"

    def __init__(self) -> None:
        super().__init__()
        self.t = Table.create(table_type=self.table_type)
        self.reader = Table.attach(self.t.name)
        self.model: dict = {}

    def _add(self, k, v) -> None:
        vals = self.model.setdefault(k, [])
        if self.table_type in ("set", "ordered_set"):
            vals[:] = [v]
        elif self.table_type == "bag":
            if v not in vals:
                vals.append(v)
        else:
            vals.append(v)

    @rule(k=KEYS, v=VALUES)
    def insert(self, k, v):
        self.t.insert(k, v)
        self._add(k, v)

    @rule(k=KEYS, v=VALUES)
    def insert_new(self, k, v):
        done = self.t.insert_new(k, v)
        assert done == (k not in self.model)
        if done:
            self._add(k, v)

    @rule(k=KEYS)
    def delete(self, k):
        self.t.delete(k)
        self.model.pop(k, None)

    @rule(k=KEYS)
    def take(self, k):
        got = self.t.take(k)
        assert sorted(got) == sorted(self.model.pop(k, []))

    @rule(k=KEYS, v=VALUES)
    def delete_object(self, k, v):
        self.t.delete_object(k, v)
        if k in self.model:
            self.model[k] = [x for x in self.model[k] if x != v]
            if not self.model[k]:
                del self.model[k]

    @precondition(lambda self: len(self.model) > 0)
    @rule()
    def clear(self):
        self.t.clear()
        self.model.clear()

    @rule(k=KEYS)
    def lookup_from_other_handle(self, k):
        got = self.reader.lookup(k)
        assert sorted(got) == sorted(self.model.get(k, []))
        views = self.reader.lookup(k, copy=False)
        assert sorted(bytes(x) for x in views) == sorted(self.model.get(k, []))
        assert self.reader.member(k) == (k in self.model)

    @invariant()
    def same_size_and_keys(self):
        assert len(self.t) == sum(len(v) for v in self.model.values())
        keys = self.reader.keys()
        assert sorted(keys, key=_sort_key) == sorted(self.model, key=_sort_key)
        if self.table_type == "ordered_set":
            assert keys == sorted(self.model, key=_sort_key)

    def teardown(self):
        self.reader.close()
        self.t.delete_table()


def _machine(tt: str):
    cls = type(f"TableModel_{tt}", (TableModel,), {"table_type": tt})
    cls.TestCase.settings = settings(max_examples=25, stateful_step_count=30, deadline=None)
    return cls.TestCase


TestSet = _machine("set")
TestOrderedSet = _machine("ordered_set")
TestBag = _machine("bag")
TestDuplicateBag = _machine("duplicate_bag")
