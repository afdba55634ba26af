"""Property tests: every public entry point of the core and of the operator layer, called
with arbitrary Python values, raises only the documented exception classes and leaves
the objects valid (docs/workspaces.md, docs/caffe2.md "Choices where Caffe2 had no answer").

What counts as documented: ``so.ScopeError`` subclasses, ``TypeError``, ``ValueError``,
``KeyError`` and ``OverflowError``. A hostile object's own exception (``HostileError``,
raised by its ``__index__``, ``__iter__``, ``__bool__``...) may propagate unchanged: that
is the caller's code failing. ``MemoryError`` is never acceptable here (every tensor the
tests ask for is small). A ``str`` subclass used as a name is stored as a plain ``str``,
and its ``__hash__``/``__eq__`` never run inside the core: if they do, ``NameMethodCalled``
escapes and the test fails.

Each failed call must change nothing; after every call the stack passes ``check_stack()``,
the workspaces list their blobs without duplicates, and every value fetched is one that
was fed.
"""

import operator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import reference_find, run_python

import scopeops as so
import scopeops.ops.math  # noqa: F401  - registers the numeric operators
import scopeops.ops.nn  # noqa: F401

FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])
FUZZ_SMALL = settings(FUZZ, max_examples=100)

DOCUMENTED = (so.ScopeError, TypeError, ValueError, KeyError, OverflowError)
OPERATOR_DOCUMENTED = (so.ScopeError, TypeError, ValueError)


class HostileError(Exception):
    """Raised by hostile objects' own methods: propagating it unchanged is acceptable."""


class NameMethodCalled(Exception):
    """Raised when the core runs a method of a str-subclass name it promised not to run."""


# -- hostile values -----------------------------------------------------------------------


class RaisingEqHash:
    def __eq__(self, other):
        raise HostileError("__eq__")

    def __hash__(self):
        raise HostileError("__hash__")


class RaisingBool:
    def __bool__(self):
        raise HostileError("__bool__")


class WeirdEqHash:
    """__eq__ returns an object whose truth raises; __hash__ is huge and unstable."""
    _n = 0

    def __eq__(self, other):
        return RaisingBool()

    def __hash__(self):
        WeirdEqHash._n += 1
        return 2**100 + WeirdEqHash._n


class RaisingIndex:
    def __index__(self):
        raise HostileError("__index__")


class WeirdIndex:
    def __init__(self, result):
        self.result = result

    def __index__(self):
        return self.result

    def __repr__(self):
        return f"WeirdIndex({self.result!r})"


class RaisingIter:
    def __iter__(self):
        raise HostileError("__iter__")


class WeirdIter:
    def __init__(self, items):
        self.items = items

    def __iter__(self):
        return iter(self.items)

    def __repr__(self):
        return f"WeirdIter({self.items!r})"


class RaisingLen:
    def __len__(self):
        raise HostileError("__len__")

    def __iter__(self):
        return iter([("a", "a")])


class RaisingGetattr:
    def __getattr__(self, name):
        raise HostileError(f"__getattr__({name})")


class HostileMapping:
    """Looks like a mapping; items() yields what it was given, or raises."""

    def __init__(self, items):
        self._items = items

    def items(self):
        if self._items is None:
            raise HostileError("items()")
        return self._items

    def __repr__(self):
        return f"HostileMapping({self._items!r})"


ARMED = [False]   # True while a call into scopeops runs (see ``armed``)


class armed:
    """While active, EvilStr's methods raise: the core is running."""

    def __enter__(self):
        ARMED[0] = True

    def __exit__(self, *exc):
        ARMED[0] = False


class EvilStr(str):
    """A str subclass whose hash and comparisons must never run inside the core (they
    work normally outside it, so that the tests can build dicts of them)."""

    def __hash__(self):
        if ARMED[0]:
            raise NameMethodCalled("__hash__ of a str-subclass name")
        return str.__hash__(self)

    def __eq__(self, other):
        if ARMED[0]:
            raise NameMethodCalled("__eq__ of a str-subclass name")
        return str.__eq__(self, other)

    def __ne__(self, other):
        if ARMED[0]:
            raise NameMethodCalled("__ne__ of a str-subclass name")
        return str.__ne__(self, other)


class Sentinel:
    """A fed value, identified by object identity."""
    __slots__ = ("tag",)

    def __init__(self, tag):
        self.tag = tag

    def __repr__(self):
        return f"Sentinel({self.tag})"


NAME_POOL = ["a", "b", "c", "x", "y", "z", "ünï", "名前"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
    st.sampled_from([2**63, -2**63 - 1, 2**100, -1, 0]), st.binary(max_size=8),
    st.text(max_size=6), st.sampled_from(["", "float32", "Tensor", "U3", "garbage", "\x00"]))

hostile = st.one_of(
    st.builds(RaisingEqHash), st.builds(WeirdEqHash), st.builds(RaisingIndex),
    st.builds(WeirdIndex, st.sampled_from([-1, 0, 3, 2**100, 2.5, "3", None, True])),
    st.builds(RaisingIter), st.builds(RaisingLen), st.builds(RaisingGetattr),
    st.builds(WeirdIter, st.lists(scalars, max_size=3)),
    st.builds(EvilStr, st.sampled_from(NAME_POOL + [""])),
    st.builds(HostileMapping, st.one_of(st.none(), st.lists(scalars, max_size=2))),
    st.sampled_from([object(), object, int, str, type, np.ndarray, np.float32, np.dtype("f4"),
                     Ellipsis, NotImplemented, so.Workspace, so.Blob, so.WorkspaceStack]),
)

arrays = st.builds(lambda shape, dtype: np.zeros(shape, dtype),
                   st.lists(st.integers(0, 3), max_size=3).map(tuple),
                   st.sampled_from(["f4", "f8", "i8", "?", "u1", "c8", ">f8", "U2", "O"]))

junk = st.recursive(
    st.one_of(scalars, hostile, arrays),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.tuples(children, children),
        st.dictionaries(st.one_of(st.text(max_size=3), st.integers()), children, max_size=3)),
    max_leaves=6)

names = st.one_of(st.sampled_from(NAME_POOL), st.sampled_from(NAME_POOL),
                  st.builds(EvilStr, st.sampled_from(NAME_POOL)), st.text(max_size=4), junk)
FED_NAMES = ["a", "b", "c", "x"]     # the names World feeds into its root
good_names = st.one_of(st.sampled_from(FED_NAMES), st.sampled_from(FED_NAMES),
                       st.sampled_from(NAME_POOL), st.builds(EvilStr, st.sampled_from(NAME_POOL)))
hashable_names = st.one_of(good_names, st.text(max_size=4), st.integers(), st.none(),
                           st.binary(max_size=3), st.floats(), st.builds(RaisingIndex),
                           st.builds(WeirdIndex, st.sampled_from([1, 2.5, "3"])))
bindings = st.one_of(
    st.none(),
    st.dictionaries(good_names, good_names, max_size=3),
    st.dictionaries(good_names, st.sampled_from(FED_NAMES), max_size=3),
    st.dictionaries(st.sampled_from(NAME_POOL), st.sampled_from(FED_NAMES), max_size=2),
    st.dictionaries(hashable_names, names, max_size=3),
    st.lists(st.tuples(good_names, good_names), max_size=3),
    st.lists(st.one_of(st.lists(names, max_size=3), st.tuples(names, names), names),
             max_size=3),
    st.builds(HostileMapping, st.one_of(st.none(), st.lists(st.tuples(names, names), max_size=2))),
    junk)


def plain(name):
    """The exact-str copy the core stores for a (possibly subclassed) name."""
    return str.__str__(name)


# -- the world under test -----------------------------------------------------------------


class World:
    """A root, a read-through child, a forwarding child, a stack with a pushed workspace,
    every value ever fed, and checks of its invariants."""

    def __init__(self):
        self.fed = []                       # every value passed to a feed (kept alive)
        self.root = so.Workspace()
        for name in ("a", "b", "x"):
            self.feed_value(self.root, name, np.arange(3.0))
        self.root.feed_blob("c", Sentinel("c"))
        self.fed.append(self.root.fetch_blob("c"))
        self.shared_child = so.Workspace(shared=self.root)
        self.shared_child.feed_blob("y", Sentinel("y"))
        self.fed.append(self.shared_child.fetch_blob("y"))
        self.bound_child = so.Workspace.from_bindings(self.root, {"a": "x", "z": "b"})
        self.stack = so.WorkspaceStack()
        self.stack.push_forward_workspace(self.root, {"a": "a"})
        self.blob = so.Blob()
        self.extra = []                     # workspaces made during the run

    def feed_value(self, ws, name, value):
        self.fed.append(value)
        ws.feed_blob(name, value)

    def workspaces(self):
        return [self.root, self.shared_child, self.bound_child] + self.stack.workspaces() \
            + self.extra[-4:]

    def snapshot(self):
        state = []
        for ws in self.workspaces():
            local = {}
            for name in ws.local_blobs():
                blob = ws.get_blob(name)
                local[name] = (id(blob), None if blob.is_empty() else id(blob.get()))
            forwarded = {inner: (id(parent), outer)
                         for inner, (parent, outer) in ws.forwarded_blobs().items()}
            state.append((id(ws), ws.shared is not None and id(ws.shared), local, forwarded))
        stack = (len(self.stack), self.stack.capacity, id(self.stack.top),
                 [id(w) for w in self.stack.workspaces()], self.stack.debug)
        blob = (self.blob.meta, None if self.blob.is_empty() else id(self.blob.get()))
        return state, stack, blob

    def check(self):
        self.stack.check_stack()
        assert len(self.stack) <= self.stack.capacity
        fed_ids = {id(v) for v in self.fed}
        for ws in self.workspaces():
            listed = ws.blobs()
            assert len(listed) == len(set(listed)), f"blobs() has duplicates: {listed}"
            assert sorted(listed) == sorted(ws), "iter(ws) differs from blobs()"
            assert len(ws) == len(listed)
            for name in listed:
                assert name in ws and ws.has_blob(name)
                blob = ws.get_blob(name)
                assert blob is not None, f"{name} is listed but get_blob() gives None"
                assert ws.get_blob(name) is blob, "two lookups gave two Blob objects"
                if not blob.is_empty():
                    value = ws.fetch_blob(name)
                    assert value is blob.get()
                    # A fed value, or an array the core made (tensor(), snapshots).
                    assert id(value) in fed_ids or type(value) is np.ndarray, \
                        f"{name} holds {value!r:.60} which nobody fed"
            for name in set(NAME_POOL) | set(listed):
                expected = reference_find(ws, name)
                assert ws.get_blob(name) is expected, \
                    f"{name} resolves to {ws.get_blob(name)!r}, the rules say {expected!r}"
                assert ws.has_blob(name) == (expected is not None) == (name in listed)
            ws.forwarded_blobs()
            assert ws.nbytes >= 0


def requested_bytes(shape, dtype):
    """Best-effort size of ``tensor(shape, dtype)``; 0 when it cannot be worked out."""
    try:
        dims = (operator.index(shape),) if hasattr(shape, "__index__") else \
            tuple(operator.index(d) for d in shape)
        return int(np.prod([max(d, 0) for d in dims], dtype=object)) * np.dtype(dtype).itemsize
    except Exception:
        return 0


HUGE = 1 << 30   # a tensor request above this may fail with MemoryError...
IMPOSSIBLE = 1 << 56   # ...and one above this is refused with ValueError (Blob.tensor)
# What tensor() documents: TypeError for a bad shape or dtype, ValueError for a bad or
# impossible shape (never OverflowError, whatever the sizes).
TENSOR_DOCUMENTED = (TypeError, ValueError)


def tensor_documented(shape, dtype):
    """The exceptions tensor(shape, dtype) may raise: MemoryError only for a request
    too big to be sure of but still possible."""
    size = requested_bytes(shape, dtype)
    return TENSOR_DOCUMENTED + ((MemoryError,) if HUGE < size <= IMPOSSIBLE else ())


def call(world, action, *args, documented=DOCUMENTED, type_spec=False):
    """Run ``action(*args)``; a failure must be documented and change nothing.

    ``type_spec``: an argument is a type or dtype spec, looked up in the registry's
    dicts like any key (a str subclass's __hash__ may run there; it is not a name)."""
    before = world.snapshot()
    allowed = (*documented, HostileError) + ((NameMethodCalled,) if type_spec else ())
    try:
        with armed():
            result = action(*args)
    except allowed:
        after = world.snapshot()
        assert after == before, f"a failed {getattr(action, '__name__', action)} changed state"
        world.check()
        return None
    world.check()
    return result


def bound_as_requested(ws, parent, requested):
    """Every requested pair is forwarded to ``parent`` under its plain-str names."""
    forwarded = ws.forwarded_blobs()
    pairs = requested.items() if isinstance(requested, dict) else requested
    for inner, outer in pairs:
        got = forwarded.get(plain(inner))
        if ws.get_blob(plain(inner)) is not None and got is None:
            continue    # skipped: already defined (skip_defined_blobs / pop's grad bindings)
        assert got is not None and got[0] is parent and got[1] == plain(outer), \
            f"asked {plain(inner)} -> {plain(outer)}, forwarded {got}"


# -- Workspace -----------------------------------------------------------------------------


workspace_actions = st.one_of(
    st.tuples(st.just("has_blob"), names), st.tuples(st.just("contains"), names),
    st.tuples(st.just("get_blob"), names), st.tuples(st.just("fetch_blob"), names),
    st.tuples(st.just("getitem"), names), st.tuples(st.just("create_blob"), names),
    st.tuples(st.just("create_local_blob"), names),
    st.tuples(st.just("feed_blob"), names, junk), st.tuples(st.just("setitem"), names, junk),
    st.tuples(st.just("remove_blob"), names), st.tuples(st.just("delitem"), names),
    st.tuples(st.just("rename_blob"), names, names),
    st.tuples(st.just("add_blob_mapping"), st.integers(0, 5), bindings, junk),
    st.tuples(st.just("copy_forwarded_tensors"), st.one_of(names, st.lists(names, max_size=3))),
    st.tuples(st.just("new_shared"), junk), st.tuples(st.just("from_bindings"), st.integers(0, 5),
                                                      bindings),
    st.tuples(st.just("from_bindings_junk_parent"), junk, bindings),
)


def do_workspace_action(world, ws, action):
    kind, *args = action

    def pick(i):
        return world.workspaces()[i % len(world.workspaces())]
    if kind == "has_blob":
        assert call(world, ws.has_blob, args[0]) in (None, True, False)
    elif kind == "contains":
        call(world, lambda n: n in ws, args[0])
    elif kind == "get_blob":
        blob = call(world, ws.get_blob, args[0])
        assert blob is None or isinstance(blob, so.Blob)
    elif kind in ("fetch_blob", "getitem"):
        call(world, ws.fetch_blob if kind == "fetch_blob" else ws.__getitem__, args[0])
    elif kind in ("create_blob", "create_local_blob"):
        blob = call(world, getattr(ws, kind), args[0])
        if blob is not None:
            assert ws.get_blob(plain(args[0])) is blob
            if kind == "create_local_blob":
                assert plain(args[0]) in ws.local_blobs()
    elif kind in ("feed_blob", "setitem"):
        name, value = args
        world.fed.append(value)
        method = ws.feed_blob if kind == "feed_blob" else ws.__setitem__
        before_ok = isinstance(name, str) and name and not isinstance(value, so.Blob)
        call(world, method, name, value)
        if before_ok and ws.get_blob(plain(name)) is not None \
                and not ws.get_blob(plain(name)).is_empty():
            assert ws.fetch_blob(plain(name)) is value
    elif kind == "remove_blob":
        call(world, ws.remove_blob, args[0])
    elif kind == "delitem":
        call(world, ws.__delitem__, args[0])
    elif kind == "rename_blob":
        old, new = args
        blob = call(world, ws.rename_blob, old, new)
        if blob is not None:
            assert ws.get_blob(plain(new)) is blob and plain(old) not in ws.local_blobs()
    elif kind == "add_blob_mapping":
        parent = pick(args[0])
        requested, skip = args[1], args[2]
        pairs = _pairs_or_none(requested)
        before = world.snapshot()
        call(world, ws.add_blob_mapping, parent, requested, skip)
        if pairs is not None and world.snapshot() != before:
            bound_as_requested(ws, parent, pairs)
    elif kind == "copy_forwarded_tensors":
        call(world, ws.copy_forwarded_tensors, args[0])
    elif kind == "new_shared":
        new = call(world, so.Workspace, args[0])
        if new is not None:
            assert args[0] is None or new.shared is args[0]
    elif kind == "from_bindings":
        parent = pick(args[0])
        requested = args[1]
        pairs = _pairs_or_none(requested)
        new = call(world, so.Workspace.from_bindings, parent, requested)
        if new is None and pairs is not None and valid_bindings(parent, pairs):
            raise AssertionError(f"from_bindings of valid bindings {pairs!r} was refused")
        if new is not None:
            world.extra.append(new)
            if pairs is not None:
                bound_as_requested(new, parent, pairs)
                assert set(new.forwarded_blobs()) == {plain(i) for i, _ in pairs}
    elif kind == "from_bindings_junk_parent":
        call(world, so.Workspace.from_bindings, *args)
    else:  # pragma: no cover
        raise AssertionError(kind)


def _pairs_or_none(requested):
    """The (inner, outer) pairs of well-formed bindings of str names, else None."""
    if isinstance(requested, dict):
        pairs = list(requested.items())
    elif isinstance(requested, list) and all(isinstance(p, tuple) for p in requested):
        pairs = list(requested)
    else:
        return None
    if all(len(p) == 2 and all(isinstance(n, str) and len(plain(n)) for n in p) for p in pairs):
        return pairs
    return None


@FUZZ
@given(st.integers(0, 5), st.lists(workspace_actions, min_size=1, max_size=12))
def test_workspace_methods_with_arbitrary_arguments_raise_only_documented_errors(which, actions):
    world = World()
    for action in actions:
        ws = world.workspaces()[which % len(world.workspaces())]
        do_workspace_action(world, ws, action)
    world.check()


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["x", "y"]), st.sampled_from(NAME_POOL)),
                min_size=1, max_size=8))
def test_names_given_as_str_subclasses_behave_as_their_plain_str(pairs):
    ws = so.Workspace()
    values = {}
    for _, name in pairs:
        value = Sentinel(name)
        with armed():
            ws.feed_blob(EvilStr(name), value)
        values[name] = value
    assert sorted(ws.blobs()) == sorted(values)
    for name, value in values.items():
        with armed():
            found = ws.fetch_blob(EvilStr(name)), EvilStr(name) in ws
        assert found == (value, True)
        assert all(type(n) is str for n in ws.local_blobs())
    requested = {EvilStr(n): EvilStr(n) for n in values}
    with armed():
        child = so.Workspace.from_bindings(ws, requested)
    assert all(type(n) is str and type(o) is str
               for n, (_, o) in child.forwarded_blobs().items())
    for name, value in values.items():
        assert child.fetch_blob(name) is value


def test_a_str_subclass_name_whose_len_raises_is_used_as_its_plain_str():
    """docs/caffe2.md: names are str, subclasses accepted and stored as plain str; the
    core must not depend on a subclass's overridden methods (here __len__)."""

    class LenRaisingStr(str):
        def __len__(self):
            raise NameMethodCalled("__len__ of a str-subclass name")

    class LenZeroStr(str):
        def __len__(self):
            return 0

    ws = so.Workspace()
    ws.feed_blob("v", 1)
    assert ws.has_blob(LenRaisingStr("v"))
    assert ws.fetch_blob(LenZeroStr("v")) == 1


def test_a_workspace_cannot_become_its_own_shared_ancestor():
    """Workspace.__new__ + __init__(shared=...) can close a shared cycle (a -> b -> a);
    lookups must still terminate (docs/caffe2.md 6: "Lookups always terminate"), or the
    cycle must be refused."""
    proc = run_python(r"""
        import scopeops as so
        a = so.Workspace.__new__(so.Workspace)
        b = so.Workspace(shared=a)
        try:
            a.__init__(b)
        except (so.ScopeError, TypeError, ValueError) as exc:
            print("refused:", exc)
        print(a.has_blob("x"), b.get_blob("x"), a.blobs(), len(b))
        c = so.Workspace.__new__(so.Workspace)
        try:
            c.__init__(c)
        except (so.ScopeError, TypeError, ValueError) as exc:
            print("refused:", exc)
        print(c.has_blob("x"), "x" in c, c.blobs())
        print("ok")
    """, timeout=10)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), \
        f"exit status {proc.returncode}\n{proc.stdout}\n{proc.stderr[-2000:]}"


# -- WorkspaceStack --------------------------------------------------------------------------


stack_actions = st.one_of(
    st.tuples(st.just("push"), st.integers(0, 5), bindings),
    st.tuples(st.just("push_junk"), junk, bindings),
    st.tuples(st.just("pop"), st.integers(0, 5), bindings),
    st.tuples(st.just("pop_junk"), junk, bindings),
    st.tuples(st.just("reuse"), st.integers(0, 5), bindings),
    st.tuples(st.just("reuse_junk"), junk, bindings),
    st.tuples(st.just("clear")), st.tuples(st.just("release")),
    st.tuples(st.just("debug"), junk),
    st.tuples(st.just("check_bindings_match"), bindings, bindings),
    st.tuples(st.just("new_stack"), junk),
    st.tuples(st.just("feed_top"), names, junk),
    st.tuples(st.just("fetch_top"), names),
)


def valid_bindings(parent, pairs):
    """Every outer name visible in ``parent`` and no inner name bound to two outers."""
    return all(parent.has_blob(plain(outer)) for _, outer in pairs) and \
        len({plain(i) for i, _ in pairs}) == len({(plain(i), plain(o)) for i, o in pairs})


def do_stack_action(world, action):
    kind, *args = action
    stack = world.stack

    def pick(i):
        parents = [world.root, world.shared_child, world.bound_child]
        if stack.top is not None:
            parents.append(stack.top)
        return parents[i % len(parents)]
    if kind == "push":
        parent, requested = pick(args[0]), args[1]
        pairs = _pairs_or_none(requested)
        depth = len(stack)
        ws = call(world, stack.push_forward_workspace, parent, requested)
        if ws is not None:
            assert len(stack) == depth + 1 and stack.top is ws
            assert type(ws) is type(parent)
            if pairs is not None:
                bound_as_requested(ws, parent, pairs)
        elif pairs is not None and not stack.debug and valid_bindings(parent, pairs):
            raise AssertionError(f"push of valid bindings {pairs!r} was refused")
    elif kind == "push_junk":
        call(world, stack.push_forward_workspace, *args)
    elif kind == "pop":
        depth = len(stack)
        top = stack.top
        ws = call(world, stack.pop_gradient_workspace, pick(args[0]), args[1])
        if ws is not None:
            assert ws is top and len(stack) == depth - 1
    elif kind == "pop_junk":
        call(world, stack.pop_gradient_workspace, *args)
    elif kind == "reuse":
        depth = len(stack)
        call(world, stack.reuse_last_forward_workspace, pick(args[0]), args[1])
        assert len(stack) == depth
    elif kind == "reuse_junk":
        call(world, stack.reuse_last_forward_workspace, *args)
    elif kind == "clear":
        capacity = stack.capacity
        call(world, stack.clear)
        assert stack.empty() and len(stack) == 0 and stack.capacity == capacity
    elif kind == "release":
        depth, capacity = len(stack), stack.capacity
        freed = call(world, stack.release)
        assert freed == capacity - depth and stack.capacity == depth
    elif kind == "debug":
        def set_debug(value):
            stack.debug = value
        call(world, set_debug, args[0])
        assert stack.debug in (True, False)
    elif kind == "check_bindings_match":
        call(world, so.WorkspaceStack.check_bindings_match, *args)
    elif kind == "new_stack":
        new = call(world, so.WorkspaceStack, args[0])
        if new is not None:
            new.check_stack()
            assert new.empty() and new.capacity == 0
    elif kind == "feed_top":
        if stack.top is not None:
            world.fed.append(args[1])
            call(world, stack.top.feed_blob, *args)
    elif kind == "fetch_top":
        if stack.top is not None:
            call(world, stack.top.fetch_blob, args[0])
    else:  # pragma: no cover
        raise AssertionError(kind)


@FUZZ
@given(st.booleans(), st.lists(stack_actions, min_size=1, max_size=15))
def test_stack_methods_with_arbitrary_arguments_raise_only_documented_errors(debug, actions):
    world = World()
    world.stack.debug = debug
    for action in actions:
        do_stack_action(world, action)
    world.check()
    world.stack.debug = False
    while world.stack.pop_gradient_workspace(world.root) is not None:
        pass
    world.stack.clear()
    world.stack.release()
    world.stack.check_stack()


def test_push_with_str_subclass_bindings_never_reuses_other_bindings():
    """A dormant workspace bound to a -> x must not be reused as is for a -> y (nor for a
    -> a missing name) because the requested names are a str subclass whose __eq__ says
    "equal": the core compares plain str copies."""

    class EqualsEverything(str):
        def __eq__(self, other):
            return True

        __hash__ = str.__hash__

    root = so.Workspace()
    root.feed_blob("x", "value of x")
    root.feed_blob("y", "value of y")
    stack = so.WorkspaceStack()
    stack.push_forward_workspace(root, {"a": "x"})
    stack.pop_gradient_workspace(root)
    child = stack.push_forward_workspace(root, {"a": EqualsEverything("y")})
    assert child.fetch_blob("a") == "value of y"
    assert child.forwarded_blobs()["a"] == (root, "y")
    stack.pop_gradient_workspace(root)
    with pytest.raises(so.BindingError, match="Invalid parent workspace blob: missing"):
        stack.push_forward_workspace(root, {"a": EqualsEverything("missing")})


def test_push_with_str_subclass_bindings_never_runs_their_eq():
    root = so.Workspace()
    root.feed_blob("x", 1)
    stack = so.WorkspaceStack()
    stack.push_forward_workspace(root, {"a": "x"})
    stack.pop_gradient_workspace(root)
    with armed():
        child = stack.push_forward_workspace(root, {"a": EvilStr("x")})
    assert child.fetch_blob("a") == 1


# -- Blob --------------------------------------------------------------------------------------


small_shapes = st.one_of(
    st.integers(0, 6), st.lists(st.integers(0, 4), max_size=4),
    st.lists(st.integers(0, 4), max_size=4).map(tuple),
    st.tuples(st.integers(0, 3), st.sampled_from([np.int64(2), np.uint8(1), True])))
shapes = st.one_of(small_shapes, small_shapes, junk,
                   st.sampled_from([(2**62,), (2**31, 2**31, 4), (2**63,), (2**64,), (-1,),
                                    (3, -2), [2**100], 2**70, -5, (1,) * 65, np.array([2, 3])]))
dtypes = st.one_of(
    st.sampled_from(["float32", "float64", "int8", "uint64", "bool", "complex64", "float16",
                     ">f8", "<i4", np.float32, np.int16, np.bool_, np.dtype("f8"), float, int,
                     bool, complex, "U3", "S2", "O", object, "M8[s]", "f4,i4", "Tensor",
                     so.type_meta("float32"), so.type_meta(str), None]), junk)
blob_actions = st.one_of(
    st.tuples(st.just("set"), junk), st.tuples(st.just("get"), junk),
    st.tuples(st.just("is_type"), junk), st.tuples(st.just("tensor"), shapes, dtypes),
    st.tuples(st.just("reset")), st.tuples(st.just("read")),
)


def do_blob_action(world, action):
    kind, *args = action
    blob = world.blob
    if kind == "set":
        world.fed.append(args[0])
        call(world, blob.set, args[0])
        if not isinstance(args[0], so.Blob):
            assert blob.get() is args[0]
            if not isinstance(args[0], (np.ndarray, np.generic)):
                assert blob.meta is so.type_meta(type(args[0]))
    elif kind == "get":
        call(world, blob.get, args[0], type_spec=True)
    elif kind == "is_type":
        assert call(world, blob.is_type, args[0], type_spec=True) in (None, True, False)
    elif kind == "tensor":
        shape, dtype = args
        out = call(world, blob.tensor, shape, dtype, type_spec=True,
                   documented=tensor_documented(shape, dtype))
        if out is not None:
            assert blob.get() is out and blob.meta.name == "Tensor"
            assert out.dtype == (dtype.dtype if isinstance(dtype, so.TypeMeta) else np.dtype(dtype))
            assert out.nbytes <= blob.nbytes
    elif kind == "reset":
        call(world, blob.reset)
        assert blob.is_empty() and blob.meta is None
    elif kind == "read":
        blob.meta, blob.is_empty(), blob.dtype, blob.shape, blob.nbytes, repr(blob)
    else:  # pragma: no cover
        raise AssertionError(kind)


@FUZZ
@given(st.lists(blob_actions, min_size=1, max_size=10))
def test_blob_methods_with_arbitrary_arguments_raise_only_documented_errors(actions):
    world = World()
    world.blob = world.root.create_blob("t")
    for action in actions:
        do_blob_action(world, action)
    world.check()


@FUZZ_SMALL
@given(shapes, dtypes)
def test_tensor_with_arbitrary_shape_and_dtype_is_refused_before_any_change(shape, dtype):
    blob = so.Blob()
    first = blob.tensor((2, 3), "float32")
    first[...] = 7
    refused = (*tensor_documented(shape, dtype), HostileError, NameMethodCalled)
    try:
        out = blob.tensor(shape, dtype)
    except refused:
        assert blob.get() is first and first.shape == (2, 3) and (first == 7).all()
        return
    assert blob.get() is out and out.dtype.kind in "biufc"


def test_huge_tensor_shapes_are_refused_with_value_error_not_overflow_or_memory_error():
    for shape in [(2**62,), (2**31, 2**31, 4), (2**63,), (2**64,), 2**70, (0, 2**64),
                  (np.uint64(2**63),), (2**31, 2**29)]:
        with pytest.raises(ValueError, match="too large"):
            so.Blob().tensor(shape, "float64")


# -- known types -----------------------------------------------------------------------------


@FUZZ
@given(junk)
def test_type_meta_of_arbitrary_values_is_a_stable_meta(spec):
    try:
        meta = so.type_meta(spec)
    except (*DOCUMENTED, HostileError, NameMethodCalled):
        return
    assert isinstance(meta, so.TypeMeta)
    assert so.type_meta(spec) is meta
    assert so.type_meta(meta) is meta
    assert meta in so.known_types()
    assert hash(meta) == meta.id and meta == meta
    assert isinstance(meta.name, str) and isinstance(meta.itemsize, int)


_fresh_classes = iter(type(f"Fuzzed{i}", (), {}) for i in range(10**6))


@FUZZ
@given(st.one_of(st.none(), names, junk), st.booleans())
def test_register_known_type_with_arbitrary_names_is_idempotent_or_refused(name, junk_class):
    cls = next(_fresh_classes)
    target = name if junk_class else cls
    # Compared as sets: a class the registry held weakly may be collected meanwhile.
    before = set(so.known_types())
    try:
        meta = so.register_known_type(target, name)
    except (*DOCUMENTED, HostileError):
        if not junk_class:
            assert not set(so.known_types()) - before, "a refused registration registered"
        return
    assert isinstance(target, type)
    assert so.register_known_type(target) is meta
    assert so.type_meta(target) is meta
    if isinstance(name, str) and name:
        assert meta.name == plain(name)
    assert meta in so.known_types()


def test_register_known_type_refuses_junk_without_registering_anything():
    before = set(so.known_types())
    for pytype, name in [(3, None), ("int", None), (None, None), (int, 5), (int, ""),
                         (type("Fresh", (), {}), ""), (type("Fresh", (), {}), b"x")]:
        with pytest.raises((TypeError, ValueError)):
            so.register_known_type(pytype, name)
    assert not set(so.known_types()) - before


# -- failures in the middle of feed ---------------------------------------------------------


def test_feed_of_a_value_whose_type_cannot_be_registered_creates_no_blob():
    """Errors are raised before any state changes: a value that cannot be typed must not
    leave an empty blob behind."""

    class HostileModule(type):
        @property
        def __module__(cls):
            raise HostileError("__module__")

    class Untypable(metaclass=HostileModule):
        pass

    ws = so.Workspace()
    with pytest.raises(HostileError):
        ws.feed_blob("v", Untypable())
    assert ws.blobs() == [] and ws.get_blob("v") is None


# -- objects that lie about their class ------------------------------------------------------


def test_a_value_claiming_to_be_an_ndarray_is_not_treated_as_a_tensor():
    """isinstance() believes __class__: a value that only claims to be an ndarray must
    not be handled as one by the C code (copy_forwarded_tensors reads its memory as an
    array's and crashes the interpreter)."""
    proc = run_python(r"""
        import numpy as np, scopeops as so

        class FakeArray(bytes):
            @property
            def __class__(self):
                return np.ndarray
            dtype = np.dtype("float64")
            shape = (4,)

        fake = FakeArray(b"\x01" * 64)
        root = so.Workspace()
        root.feed_blob("x", fake)
        child = so.Workspace.from_bindings(root, {"x": "x"})
        try:
            child.copy_forwarded_tensors(["x"])
        except (so.ScopeError, TypeError, ValueError) as exc:
            print("refused:", type(exc).__name__)
        blob = so.Blob()
        blob.set(fake)
        print("meta:", blob.meta.name, "dtype:", blob.dtype)
    """)
    assert proc.returncode == 0, f"crashed with {proc.returncode}: {proc.stderr[-2000:]}"
    assert "meta: Tensor" not in proc.stdout, proc.stdout


# -- ndarray subclasses that lie, raise or mutate ----------------------------------------------
#
# docs/caffe2.md, "ndarray subclasses": the core reads arrays at the C level; a subclass's
# Python-level attributes (shape, dtype, strides, nbytes, size, itemsize, ndim) and numpy
# hooks (__array__, __array_finalize__, __array_function__, __array_ufunc__...) never run
# inside it, and copies are plain ndarrays. Each generated subclass overrides a few of them
# to lie, raise or mutate the workspaces when read *while the core runs* (they behave
# normally outside, so that the checks can read the real arrays). A crash here is the
# interpreter's, so the properties run in a subprocess (the test at the end).

SUBCLASS_HOOKS = {"armed": False, "fired": [], "mutate": None}


class hooks_armed:
    """While active, the generated subclasses' overrides misbehave: the core is running."""

    def __enter__(self):
        SUBCLASS_HOOKS["armed"] = True

    def __exit__(self, *exc):
        SUBCLASS_HOOKS["armed"] = False


def _misbehave(attr, behaviour):
    """An override ran while armed: record it, then raise or mutate as drawn."""
    SUBCLASS_HOOKS["fired"].append(attr)
    if behaviour == "raise":
        raise HostileError(f"{attr} of an ndarray subclass")
    if behaviour == "mutate" and SUBCLASS_HOOKS["mutate"] is not None:
        SUBCLASS_HOOKS["armed"] = False
        try:
            SUBCLASS_HOOKS["mutate"]()
        finally:
            SUBCLASS_HOOKS["armed"] = True


ATTRIBUTE_LIES = {
    "shape": [(1,), (), (10**7,), (2**62,), "junk"],
    "dtype": [np.dtype("i1"), np.dtype("f8"), np.dtype("O"), np.dtype("S9"), np.dtype("c16"),
              "junk"],
    "strides": [(0,), (10**9,), (), (-8, 8)],
    "nbytes": [0, 1, 10**12, -1, 2**70],
    "size": [0, 1, 10**12, -1],
    "itemsize": [0, 1, 16, -1],
    "ndim": [0, 1, 64, -1],
}
METHOD_LIES = [None, 42, (), "junk"]
HOOKED_METHODS = ["__array__", "__array_finalize__", "__array_function__", "__array_ufunc__",
                  "__array_wrap__", "copy", "view", "astype", "tolist", "reshape", "__len__",
                  "__getitem__"]


def _lying_attribute(attr, behaviour, lie):
    real = getattr(np.ndarray, attr)

    def get(self):
        if SUBCLASS_HOOKS["armed"]:
            _misbehave(attr, behaviour)
            if behaviour == "lie":
                return lie
        return real.__get__(self)
    return property(get)


def _lying_method(name, behaviour, lie):
    real = getattr(np.ndarray, name)

    def method(self, *args, **kwargs):
        if SUBCLASS_HOOKS["armed"]:
            _misbehave(name, behaviour)
            if behaviour == "lie":
                return lie
        return real(self, *args, **kwargs)
    method.__name__ = name
    return method


def real_view(array):
    """The array as numpy sees it at the C level (call unarmed)."""
    return np.ndarray.view(array, np.ndarray)


SUBCLASS_DTYPES = ["f4", "f8", "f2", "i8", "u1", "?", "c8", ">f8", "U2", "O"]


@st.composite
def hostile_arrays(draw, dtypes=SUBCLASS_DTYPES):
    """An ndarray subclass instance (a class made for it) over real data of any layout."""
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    layout = draw(st.sampled_from(["c", "f", "strided", "broadcast", "0d", "empty"]))
    shape = draw(st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple))
    start = draw(st.integers(-3, 3))
    if layout == "0d":
        shape = ()
    elif layout == "empty":
        shape = shape[:-1] + (0,)
    n = int(np.prod(shape, dtype=np.int64))
    values = np.arange(start, start + max(n, 1) * (2 if layout == "strided" else 1))
    base = values.astype(object) if dtype.kind == "O" else values.astype(dtype)
    if layout == "strided":
        data = base[::2][:n].reshape(shape) if n else base[:0].reshape(shape)
    elif layout == "broadcast":
        data = np.broadcast_to(base[:1], shape)
    elif layout == "f":
        data = np.asfortranarray(base[:n].reshape(shape))
    else:
        data = base[:n].reshape(shape).copy()
    namespace = {}
    for attr in draw(st.sets(st.sampled_from(list(ATTRIBUTE_LIES) + HOOKED_METHODS),
                             max_size=5)):
        behaviour = draw(st.sampled_from(["lie", "raise", "mutate"]))
        if attr in ATTRIBUTE_LIES:
            lie = draw(st.sampled_from(ATTRIBUTE_LIES[attr]))
            namespace[attr] = _lying_attribute(attr, behaviour, lie)
        else:
            namespace[attr] = _lying_method(attr, behaviour, draw(st.sampled_from(METHOD_LIES)))
    cls = type("HostileArray", (np.ndarray,), namespace)
    return np.ndarray.view(data, cls)


def same_contents(a, b):
    """Equal dtype, shape and values (objects by identity)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind == "O":
        return all(x is y for x, y in zip(a.ravel().tolist(), b.ravel().tolist(), strict=True))
    return np.array_equal(a, b)


class SubclassWorld:
    """A root fed with hostile arrays, a stack, a free blob; the real contents every array
    and snapshot must keep (a model), and the checks that nothing else changed."""

    NAMES = ["a", "b", "c"]

    def __init__(self, arrays):
        self.root = so.Workspace()
        self.stack = so.WorkspaceStack()
        self.blob = so.Blob()
        self.kept = []           # (array, its real contents): nothing may change them
        self.fed = {}            # name -> the array the root must hold
        for name, array in zip(self.NAMES, arrays, strict=False):
            self.feed(name, array)

    def remember(self, array):
        self.kept.append((array, real_view(array).copy()))

    def feed(self, name, array):
        self.remember(array)
        with hooks_armed():
            self.root[name] = array
        self.fed[name] = array

    def mutate(self):
        """What a misbehaving override does when the core runs it: change the world."""
        self.root["a"] = np.zeros(3)
        self.fed["a"] = self.root["a"]
        self.root.remove_blob("c")
        self.fed.pop("c", None)
        self.stack.push_forward_workspace(self.root)

    def check(self):
        self.stack.check_stack()
        assert sorted(self.root.blobs()) == sorted(self.fed)
        for name, array in self.fed.items():
            blob = self.root.get_blob(name)
            assert blob.get() is array
            real = real_view(array)
            assert blob.meta.name == "Tensor"
            assert blob.dtype == real.dtype and blob.shape == real.shape
            assert blob.nbytes == real.nbytes
            repr(blob)
        assert self.root.nbytes == sum(real_view(a).nbytes for a in self.fed.values())
        for array, contents in self.kept:
            assert same_contents(real_view(array), contents), "an array's data changed"


def core_call(world, action, *args, documented=(), may_fire=False, check=True):
    """Run a core call with the overrides armed; no override may run, only documented
    errors may come out, and the world stays intact (``check``: checked here)."""
    SUBCLASS_HOOKS["fired"] = []
    try:
        with hooks_armed():
            result = action(*args)
    except documented:
        result = None
    except HostileError:
        assert may_fire, f"an override ran inside the core: {SUBCLASS_HOOKS['fired']}"
        result = None
    if not may_fire:
        assert not SUBCLASS_HOOKS["fired"], \
            f"the core read {SUBCLASS_HOOKS['fired']} of an ndarray subclass"
    if check:
        world.check()
    return result


subclass_actions = st.one_of(
    st.tuples(st.just("feed"), st.sampled_from(SubclassWorld.NAMES), hostile_arrays()),
    st.tuples(st.just("set"), hostile_arrays()),
    st.tuples(st.just("snapshot"), st.lists(st.sampled_from(SubclassWorld.NAMES), min_size=1,
                                            max_size=3)),
    st.tuples(st.just("stack_snapshot"), st.lists(st.sampled_from(SubclassWorld.NAMES),
                                                  min_size=1, max_size=3)),
    st.tuples(st.just("accumulate"), st.sampled_from(SubclassWorld.NAMES),
              st.sampled_from(SubclassWorld.NAMES), st.sampled_from([1.0, 0.5, -2.0]),
              st.booleans()),
    st.tuples(st.just("tensor_shape"), hostile_arrays(dtypes=["i8", "u1"]),
              st.sampled_from(["f4", "i2", "?"])),
    st.tuples(st.just("tensor_dtype"), st.sampled_from([(2, 3), 4, ()]), hostile_arrays()),
    st.tuples(st.just("mutator"), st.booleans()),
)


def check_snapshot(snapshot, source):
    real = real_view(source)
    assert type(snapshot) is np.ndarray, f"a snapshot of a subclass is a {type(snapshot)}"
    assert same_contents(snapshot, real)
    assert snapshot.flags.writeable and not np.shares_memory(snapshot, real)


def do_subclass_action(world, action):
    kind, *args = action
    if kind == "feed":
        name, array = args
        world.remember(array)
        world.fed[name] = array       # feeding cannot fail: the checks expect it done
        core_call(world, world.root.__setitem__, name, array)
    elif kind == "set":
        world.remember(args[0])
        core_call(world, world.blob.set, args[0])
        assert world.blob.get() is args[0] and world.blob.dtype == real_view(args[0]).dtype
    elif kind == "snapshot":
        names = [n for n in args[0] if n in world.fed]
        child = so.Workspace.from_bindings(world.root, {n: n for n in names})
        sources = {n: world.fed[n] for n in names}
        core_call(world, child.copy_forwarded_tensors, names, documented=(so.ScopeError,))
        for name in names:
            check_snapshot(child[name], sources[name])
            world.remember(child[name])
    elif kind == "stack_snapshot":
        names = [n for n in args[0] if n in world.fed]
        for _ in range(2):       # the second push reuses the workspace and its buffers
            ws = world.stack.push_forward_workspace(world.root, {n: n for n in names})
            core_call(world, ws.copy_forwarded_tensors, names, documented=(so.ScopeError,))
            for name in names:
                check_snapshot(ws[name], world.fed[name])
            world.stack.pop_gradient_workspace(world.root)
    elif kind == "accumulate":
        dst_name, src_name, scale, through_blobs = args
        if dst_name not in world.fed or src_name not in world.fed:
            return
        dst, src = world.fed[dst_name], world.fed[src_name]
        before = real_view(dst).copy()
        expected = None
        real_dst, real_src = real_view(dst), real_view(src)
        # One element type, in either byte order: accumulate reads byte-swapped
        # operands too (numpy computes them), so '<f8' with '>f8' is valid.
        if real_dst.dtype.newbyteorder("=") == real_src.dtype.newbyteorder("=") \
                and real_dst.dtype.kind == "f" \
                and real_dst.shape == real_src.shape and real_dst.flags.writeable:
            wide = real_dst.astype(np.float64) + scale * real_src.astype(np.float64)
            expected = wide.astype(real_dst.dtype)
        args = (world.root.get_blob(dst_name), world.root.get_blob(src_name)) \
            if through_blobs else (dst, src)
        result = core_call(world, so.accumulate, *args, scale,
                           documented=(TypeError, ValueError), check=False)
        if expected is None:
            assert result is None and same_contents(real_view(dst), before)
        else:
            assert result is args[0]
            np.testing.assert_allclose(real_view(dst), expected, rtol=1e-3, atol=1e-3)
            # The model follows what the accumulation legitimately wrote.
            world.kept = [(a, real_view(a).copy() if a is dst else c) for a, c in world.kept]
        world.check()
    elif kind == "tensor_shape":
        shape_array, dtype = args
        blob = so.Blob()
        out = core_call(world, blob.tensor, shape_array, dtype, documented=(TypeError, ValueError))
        if out is not None:
            assert list(out.shape) == list(np.atleast_1d(real_view(shape_array)))
    elif kind == "tensor_dtype":
        # np.dtype(spec) reads a spec object's own .dtype: the caller's request, which may
        # run its code; whatever comes out, the tensor has the dtype it says.
        shape, spec = args
        out = core_call(world, so.Blob().tensor, shape, spec, documented=(TypeError, ValueError),
                        may_fire=True)
        if out is not None:
            assert type(out) is np.ndarray and out.dtype.kind in "biufc"
    elif kind == "mutator":
        SUBCLASS_HOOKS["mutate"] = world.mutate if args[0] else None
    else:  # pragma: no cover
        raise AssertionError(kind)


@settings(FUZZ, database=None)
@given(st.lists(hostile_arrays(), min_size=3, max_size=3),
       st.lists(subclass_actions, min_size=1, max_size=8))
def check_hostile_ndarray_subclasses(arrays, actions):
    """Run only in a subprocess (a failure may be a crash): see the test below."""
    SUBCLASS_HOOKS["mutate"] = None
    world = SubclassWorld(arrays)
    world.check()
    for action in actions:
        do_subclass_action(world, action)


def test_ndarray_subclasses_that_lie_raise_or_mutate_never_steer_the_core():
    # The subprocess imports this file (tests/ is on its path) and runs the property.
    proc = run_python("""
        import test_fuzz
        test_fuzz.check_hostile_ndarray_subclasses()
        print("all examples passed")
    """, timeout=900)
    assert proc.returncode == 0 and "all examples passed" in proc.stdout, \
        f"exit status {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"


# -- the operator layer ----------------------------------------------------------------------

OPDEF_KEYS = ["type", "inputs", "outputs", "name", "args", "is_gradient_op"]
json_junk = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 5), st.floats(allow_nan=True),
              st.text(max_size=5), st.sampled_from(NAME_POOL + ["Copy", "Add", "Do", "If"])),
    lambda children: st.one_of(st.lists(children, max_size=3),
                               st.dictionaries(st.text(max_size=4), children, max_size=3)),
    max_leaves=6)
field_values = st.one_of(json_junk, json_junk, junk,
                         st.lists(st.sampled_from(NAME_POOL), max_size=3),
                         st.sampled_from(so.ops.registered_operators()))
opdef_dicts = st.dictionaries(st.one_of(st.sampled_from(OPDEF_KEYS), st.text(max_size=4)),
                              field_values, max_size=6)


@FUZZ
@given(st.one_of(opdef_dicts, junk))
def test_operatordef_from_a_junk_dict_raises_only_documented_errors(d):
    try:
        op = so.OperatorDef.from_dict(d)
    except (*OPERATOR_DOCUMENTED, HostileError):
        return
    again = so.OperatorDef.from_dict(op.to_dict())
    assert again.type == op.type and again.inputs == op.inputs and again.outputs == op.outputs
    str(op), repr(op)


@FUZZ
@given(st.one_of(
    st.dictionaries(st.sampled_from(["name", "ops", "external_inputs", "external_outputs", "x"]),
                    st.one_of(field_values, st.lists(opdef_dicts, max_size=3)), max_size=4),
    junk))
def test_netdef_from_a_junk_dict_raises_only_documented_errors(d):
    try:
        net = so.NetDef.from_dict(d)
    except (*OPERATOR_DOCUMENTED, HostileError):
        return
    assert so.NetDef.from_dict(net.to_dict()) == net
    str(net)


def _sub_nets():
    copy = so.Net("copy_sub")
    copy.Copy(["a"], ["b"])
    broken = so.Net("broken_sub")
    broken.Copy(["x"], ["made_by_broken"])
    broken.Copy(["not_there"], ["never"])
    return [so.NetDef(name="empty_sub"), copy.netdef, broken.netdef]


SUB_NETS = _sub_nets()
WS_NAMES = ["x", "y", "m", "cond", "i", "scope", "s", "missing", "out", "x"]
arg_values = st.one_of(
    st.sampled_from([-1, 0, 1, 2, 2**63, 2**100, 0.5, float("nan"), True, False, "float32",
                     "int32", "bool", "garbage", "", [2, 3], [3], [], [-1], [2**63], (1, 3),
                     [0, 1], [1.0, 2.0, 3.0], ["a", "b"], None]),
    json_junk, hostile)
op_args = st.dictionaries(
    st.sampled_from(["shape", "value", "dtype", "values", "to", "exponent", "scale", "axis",
                     "average", "trans_a", "trans_b", "net", "inner_blobs", "outer_blobs_idx",
                     "reuse_workspace", "copy_external_blobs", "then_net", "else_net",
                     "loop_net", "cond_net", "bogus"]),
    arg_values, max_size=4)


def op_workspace():
    ws = so.Workspace()
    ws.feed_blob("x", np.array([1.0, 2.0, 3.0]))
    ws.feed_blob("y", np.array([0.5, -1.0, 2.0]))
    ws.feed_blob("m", np.arange(6.0).reshape(2, 3))
    ws.feed_blob("cond", np.array([True]))
    ws.feed_blob("i", np.array([1, 2, 3], dtype=np.int32))
    ws.feed_blob("scope", so.WorkspaceStack())
    ws.feed_blob("s", "a string")
    return ws


def ws_state(ws):
    return {name: (id(ws.get_blob(name)),
                   None if ws.get_blob(name).is_empty() else id(ws.fetch_blob(name)))
            for name in ws.local_blobs()}


EXISTING = ["x", "y", "m", "cond", "i", "s"]


@st.composite
def operator_defs(draw):
    """Wild definitions (any counts, names, arguments), or ones that follow the schema's
    counts and argument names with arbitrary values, so that building gets further."""
    op_type = draw(st.one_of(st.sampled_from(so.ops.registered_operators()),
                             st.sampled_from(["Do", "If", "While", "CreateScope", "HasScope"])))
    if draw(st.booleans()):
        inputs = draw(st.lists(st.sampled_from(WS_NAMES), max_size=4))
        outputs = draw(st.lists(st.sampled_from(WS_NAMES), max_size=3))
        args = draw(op_args)
    else:
        schema = so.ops.schema(op_type)
        n_in = draw(st.integers(schema.min_inputs, min(schema.max_inputs, schema.min_inputs + 2)))
        n_out = draw(st.integers(schema.min_outputs,
                                 min(schema.max_outputs, schema.min_outputs + 2)))
        inputs = draw(st.lists(st.sampled_from(EXISTING), min_size=n_in, max_size=n_in))
        outputs = draw(st.lists(st.sampled_from(["out", "out2", "x", "new"]),
                                min_size=n_out, max_size=n_out))
        names = sorted(schema.args)
        args = draw(st.dictionaries(st.sampled_from(names), arg_values, max_size=3)) \
            if names else {}
    if op_type == "If" and draw(st.booleans()):
        inputs = ["cond"] + inputs
    if op_type in ("Do", "If") and draw(st.integers(0, 3)):
        for key in ("net", "then_net", "else_net"):
            if key in so.ops.schema(op_type).args and draw(st.integers(0, 3)):
                args[key] = draw(st.sampled_from(SUB_NETS))
            elif key == "else_net":
                args.pop(key, None)
    if op_type == "Do" and draw(st.booleans()):
        inputs = inputs + ["scope"]
        outputs = outputs + ["scope"]
    return op_type, inputs, outputs, args, draw(st.booleans())


@FUZZ
@given(operator_defs())
def test_building_a_malformed_operator_raises_documented_errors_and_changes_nothing(spec):
    op_type, inputs, outputs, args, is_gradient = spec
    ws = op_workspace()
    try:
        op = so.create_operator(op_type, inputs, outputs, is_gradient_op=is_gradient, **args)
    except (*OPERATOR_DOCUMENTED, HostileError):
        return
    net = so.NetDef(name="fuzzed", ops=[op])
    before = ws_state(ws)
    try:
        executor = ws.create_net(net)
    except (*OPERATOR_DOCUMENTED, HostileError):
        assert ws_state(ws) == before, f"a failed build of {op} changed the workspace"
        assert ws.get_net("fuzzed") is None
        return
    assert ws.get_net("fuzzed") is executor
    if op_type == "While":
        return   # a While with a true condition and a net that never changes it never ends
    for _ in range(2):
        try:
            with np.errstate(all="ignore"):   # fuzzed values divide by zero, overflow...
                ws.run_net("fuzzed")
        except OPERATOR_DOCUMENTED:
            pass
    stack = ws.get_blob("scope").get() if not ws.get_blob("scope").is_empty() else None
    if isinstance(stack, so.WorkspaceStack):
        stack.check_stack()


@FUZZ_SMALL
@given(st.sampled_from(so.ops.registered_operators()), junk, junk, op_args)
def test_create_operator_with_junk_inputs_outputs_raises_only_documented_errors(
        op_type, inputs, outputs, args):
    try:
        so.create_operator(op_type, inputs, outputs, **args)
    except (*OPERATOR_DOCUMENTED, HostileError):
        pass
    try:
        so.create_operator(inputs if isinstance(inputs, str) else "NotAnOp", ["x"], ["y"])
    except (*OPERATOR_DOCUMENTED, HostileError):
        pass


def test_a_net_whose_second_operator_cannot_be_built_creates_no_outputs():
    ws = so.Workspace()
    ws.feed_blob("x", np.ones(2))
    net = so.Net("two")
    net.Copy(["x"], ["y"])
    net.Copy(["nope"], ["z"])
    with pytest.raises(so.OperatorError, match="non-existing input blob: nope"):
        ws.create_net(net)
    assert ws.local_blobs() == ["x"]


def test_an_if_whose_branch_cannot_be_built_creates_no_outputs():
    ws = so.Workspace()
    ws.feed_blob("c", np.array([True]))
    ws.feed_blob("x", np.ones(2))
    then = so.Net("then")
    then.Copy(["x"], ["t1"])
    then.Copy(["missing"], ["t2"])
    net = so.Net("outer")
    net.add_op("If", ["c"], ["out"], then_net=then)
    with pytest.raises(so.OperatorError, match="non-existing input blob: missing"):
        ws.create_net(net)
    assert sorted(ws.local_blobs()) == ["c", "x"]


def test_operator_with_unknown_argument_or_wrong_argument_type_is_refused_unchanged():
    for args in [{"bogus": 1}, {"scale": "big"}, {"scale": True}]:
        ws = op_workspace()
        before = ws_state(ws)
        with pytest.raises(so.OperatorError):
            ws.run_operator_once(so.create_operator("Scale", ["x"], ["scaled"], **args))
        assert ws_state(ws) == before


def test_operator_with_a_wrong_number_of_inputs_is_refused_unchanged():
    for inputs in [[], ["x", "y"], ["x", "y", "m"]]:
        ws = op_workspace()
        before = ws_state(ws)
        with pytest.raises(so.OperatorError):
            ws.run_operator_once(so.create_operator("Relu", inputs, ["r"]))
        assert ws_state(ws) == before
