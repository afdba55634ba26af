"""Model-based stateful test of Workspace and WorkspaceStack.

A hypothesis ``RuleBasedStateMachine`` drives the real ``so.Workspace`` and
``so.WorkspaceStack`` with random sequences of calls and compares them, after every
step, with a small pure-Python model written below (plain dicts and lists):

* a model workspace has ``locals`` {name: model blob}, ``shared`` (a model workspace or
  None) and ``forwarded`` {inner: (model parent, outer)};
* a model stack has a list of model workspaces and a ``top`` index.

Lookup (``find``) is: local, then forwarded (resolved in the parent, recursively; a
dangling forward is not found and does not fall through), then shared (recursively).

Every real call the model predicts to fail must raise exactly the predicted exception
class and change nothing (the invariants compare the whole state after each step).
Real and model objects are kept in a bijection: workspaces by identity, blobs by
identity while they live in a workspace.

Decisions the model encodes (docs/caffe2.md's deliberate differences win over Caffe2):

* ``add_blob_mapping`` is atomic: every pair is validated against the state before the
  call, then all are applied. ``reuse_last_forward_workspace`` and the gradient pop use
  it (skip_defined_blobs False and True).
* ``push_forward_workspace`` validates every outer name in the parent, like
  ``Workspace.from_bindings``, whether it builds a workspace or reuses a dormant one.
  On reuse the local copies of bound names are removed; with the same parent and
  bindings as the workspace holds the bound forwardings are re-established and other
  forwardings stay (Caffe2), otherwise the forwardings become exactly the requested
  ones (difference 1). Unbound locals stay.
* ``copy_forwarded_tensors`` turns each requested forward into a local deep copy; a
  local blob that hid the forward receives the copy (Caffe2's CreateBlob returns it).
  A dangling forward raises BlobNotFoundError, a non-tensor BlobTypeError, and then
  nothing is copied.

Names come from a four-letter alphabet so that collisions are frequent; some rules aim
their names and workspaces at interesting spots (``Pick``, ``WsPick``) so that rare
states (dangling or hidden forwards, parents losing bound blobs) are reached within a
150-example run.
"""

import os
import signal
import time

import numpy as np
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

import scopeops as so

NAMES = ("a", "b", "c", "d")
MAX_WORKSPACES = 12
HANG_TIMEOUT = 30.0  # generous: a loaded CI machine must not turn slowness into a "hang"

# ----------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------

EMPTY = object()  # the value of an empty model blob


class Predicted(Exception):
    """Raised by a model operation, before it changes anything, to predict a failure."""

    def __init__(self, cls):
        super().__init__(cls.__name__)
        self.cls = cls


class MBlob:
    __slots__ = ("value", "real_id")

    def __init__(self, value=EMPTY):
        self.value = value
        self.real_id = None  # id() of the real Blob, bound on first sight


class MWorkspace:
    def __init__(self, label, shared=None):
        self.label = label
        self.locals = {}  # name -> MBlob
        self.shared = shared  # MWorkspace | None
        self.forwarded = {}  # inner -> (MWorkspace, outer)
        # What a stack workspace "holds": the parent and bindings it was created with or
        # last re-bound with by a push (docs/caffe2.md difference 1).
        self.bound_parent = None
        self.bound = {}

    def __repr__(self):
        return f"<model {self.label}>"


class MStack:
    def __init__(self):
        self.ws = []  # list[MWorkspace], bottom first
        self.top = -1


def find(ws, name):
    """The model blob ``name`` resolves to from ``ws``, or None."""
    seen = set()
    while ws is not None:
        if name in ws.locals:
            return ws.locals[name]
        if name in ws.forwarded:
            key = (id(ws), name)
            if key in seen:  # a forwarding cycle: nothing at its end
                return None
            seen.add(key)
            ws, name = ws.forwarded[name]
            continue  # no fall-through to shared
        ws = ws.shared
    return None


def visible(ws):
    return {name for name in NAMES if find(ws, name) is not None}


def check_name(name):
    if not isinstance(name, str):
        raise Predicted(TypeError)
    if name == "":
        raise Predicted(ValueError)


def is_tensor(value):
    return isinstance(value, np.ndarray)


def model_copy(value):
    return np.array(value, copy=True) if is_tensor(value) else value


def plan_add_mapping(ws, parent, bindings, skip):
    """Validate AddBlobMapping against the current state; return the commit."""
    if parent is None:
        raise Predicted(so.BindingError)
    to_add = []
    for inner, outer in bindings.items():
        if find(parent, outer) is None:
            raise Predicted(so.BindingError)  # Invalid parent workspace blob
        current = ws.forwarded.get(inner)
        if current is not None:
            if current[0] is not parent or current[1] != outer:
                raise Predicted(so.BindingError)  # Redefinition
            continue  # identical re-mapping: no-op
        if find(ws, inner) is not None:
            if skip:
                continue
            raise Predicted(so.BindingError)  # Redefinition
        to_add.append((inner, outer))

    def commit():
        for inner, outer in to_add:
            ws.forwarded[inner] = (parent, outer)

    return commit


def plan_create_blob(ws, name):
    """Workspace.create_blob: the visible blob, else a new local; dangling forward raises."""
    found = find(ws, name)
    if found is not None:
        return lambda: found
    if name in ws.forwarded:
        raise Predicted(so.BlobNotFoundError)

    def commit():
        blob = MBlob()
        ws.locals[name] = blob
        return blob

    return commit


def plan_copy_forwarded(ws, names):
    plan = []
    for name in dict.fromkeys(names):
        if name not in ws.forwarded:
            continue
        parent, outer = ws.forwarded[name]
        source = find(parent, outer)
        if source is None:
            raise Predicted(so.BlobNotFoundError)
        if not is_tensor(source.value):
            raise Predicted(so.BlobTypeError)
        plan.append((name, source.value))

    def commit():
        for name, value in plan:
            del ws.forwarded[name]
            if name in ws.locals:
                # A local blob hid the forward: Caffe2's CreateBlob returns it and the
                # tensor is copied into it (the blob lives on, so keeps its identity).
                ws.locals[name].value = np.array(value, copy=True)
            else:
                ws.locals[name] = MBlob(np.array(value, copy=True))

    return commit


# ----------------------------------------------------------------------------------------
# Values and helpers
# ----------------------------------------------------------------------------------------


def make_array(kind, n, start, layout):
    base = np.arange(start, start + 2 * n)
    if kind == "bool":
        base = base % 3 == 0
    arr = base.astype(kind)
    if layout == "strided":
        return arr[::2]  # a non-contiguous view of a fresh buffer
    if layout == "2d":
        return arr.reshape(2, n)
    return arr[:n].copy()


tensors = st.builds(
    make_array,
    st.sampled_from(["int64", "float32", "bool", "complex64"]),
    st.integers(0, 3),
    st.integers(-20, 20),
    st.sampled_from(["flat", "strided", "2d"]),
)
values = st.one_of(  # half tensors: only tensors can be copied from a parent
    tensors,
    st.one_of(st.integers(-1000, 1000), st.text(alphabet="xyz", min_size=1, max_size=3)),
)
names = st.sampled_from(NAMES)


class Pick:
    """A name chosen at run time, so that rules hit the interesting names more often than
    a blind draw would: one of the workspace's local names, forwarded names, dangling
    forwards, forwards hidden by a local blob, names visible but not local, or names that
    another workspace forwards to (removing or renaming those leaves dangling forwards).
    Falls back to any forwarded name, then to any name."""

    def __init__(self, kind, index):
        self.kind = kind
        self.index = index

    def __repr__(self):
        return f"Pick({self.kind!r}, {self.index})"

    def resolve(self, mws, all_models):
        if self.kind == "local":
            pool = sorted(mws.locals)
        elif self.kind == "dangling":
            pool = sorted(n for n in mws.forwarded if find(mws, n) is None)
        elif self.kind == "hidden":
            pool = sorted(n for n in mws.forwarded if n in mws.locals)
        elif self.kind == "inherited":  # visible through a forward or shared, not local
            pool = [n for n in NAMES if n not in mws.locals and find(mws, n) is not None]
        elif self.kind == "outer":
            pool = sorted({
                outer
                for other in all_models
                for parent, outer in other.forwarded.values()
                if parent is mws
            })
        else:
            pool = []
        pool = pool or sorted(mws.forwarded) or NAMES
        return pool[self.index % len(pool)]


class WsPick:
    """A workspace chosen at run time: one that forwards some name (those with a hidden
    or dangling forward first), one that other workspaces forward into, or one with a
    shared parent."""

    def __init__(self, kind, index):
        self.kind = kind
        self.index = index

    def __repr__(self):
        return f"WsPick({self.kind!r}, {self.index})"


picked_names = st.one_of(
    names,
    st.builds(
        Pick,
        st.sampled_from(["forwarded", "local", "dangling", "hidden", "inherited", "outer"]),
        st.integers(0, 1),
    ),
)
binding_dicts = st.dictionaries(names, names, max_size=2)
# Stack bindings: a few recurring "Do op" binding sets (so that a reused workspace often
# gets the same bindings again), None (no bindings argument) and random ones.
stack_bindings = st.tuples(
    st.sampled_from([{"a": "a"}] * 4 + [{"a": "a", "c": "b"}, {}, None] + ["random"] * 2),
    binding_dicts,
).map(lambda pair: pair[1] if pair[0] == "random" else pair[0])
binding_forms = st.sampled_from(["dict", "pairs"])
stack_parents = st.sampled_from(["P"] * 7 + ["Q"])


def as_form(bindings, form):
    return dict(bindings) if form == "dict" else list(bindings.items())


def same_value(real, model):
    if is_tensor(model):
        return (
            isinstance(real, np.ndarray)
            and real.dtype == model.dtype
            and real.shape == model.shape
            and np.array_equal(real, model)
        )
    return type(real) is type(model) and real == model


def returns_in_time(fn, timeout=HANG_TIMEOUT):
    """Run ``fn`` in a forked copy of this process; False if it did not return in time.

    Guards calls that could loop forever inside compiled code (no signal can interrupt
    them), so that a hang becomes an ordinary, shrinkable failure.
    """
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            fn()
        except BaseException:
            pass
        os._exit(0)
    deadline = time.monotonic() + timeout
    while True:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            return True
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return False
        time.sleep(0.0005)


# ----------------------------------------------------------------------------------------
# The machine
# ----------------------------------------------------------------------------------------


class WorkspaceModelMachine(RuleBasedStateMachine):
    roots = Bundle("roots")  # P and Q: plain workspaces, the parents of stack pushes
    others = Bundle("others")  # every other workspace (stack workspaces included)
    stacks = Bundle("stacks")
    any_ws = st.one_of(
        roots,
        others,
        st.builds(
            WsPick,
            st.sampled_from(["forwarding", "forwarding", "parent", "shared"]),
            st.integers(0, 1),
        ),
    )

    def __init__(self):
        super().__init__()
        self.model_of = {}  # id(real workspace) -> MWorkspace
        self.real_of = {}  # id(MWorkspace) -> real workspace
        self.pairs = []  # [(real, model)] of every tracked workspace
        self.stack_model = {}  # id(real stack) -> MStack
        self.stack_pairs = []
        self.root = {}  # "P"/"Q" -> real workspace

    # -- bookkeeping --------------------------------------------------------------------

    def track(self, real, model):
        assert id(real) not in self.model_of, f"{real!r} is already tracked"
        self.model_of[id(real)] = model
        self.real_of[id(model)] = real
        self.pairs.append((real, model))

    def m(self, real):
        return None if real is None else self.model_of[id(real)]

    def pick(self, ws):
        if not isinstance(ws, WsPick):
            return ws
        if ws.kind == "parent":
            parents = {id(p) for _, model in self.pairs for p, _ in model.forwarded.values()}
            pool = [(real, model) for real, model in self.pairs if id(model) in parents]
        elif ws.kind == "shared":
            pool = [(real, model) for real, model in self.pairs if model.shared is not None]
        else:
            pool = [(real, model) for real, model in self.pairs if model.forwarded]
            # Workspaces with a hidden or dangling forward first: the interesting ones.
            pool.sort(key=lambda pair: not any(
                name in pair[1].locals or find(pair[1], name) is None
                for name in pair[1].forwarded
            ))
        pool = [real for real, _ in pool] or [real for real, _ in self.pairs]
        return pool[ws.index % len(pool)]

    def resolve(self, name, mws):
        if isinstance(name, Pick):
            return name.resolve(mws, [model for _, model in self.pairs])
        return name

    def r(self, model):
        return None if model is None else self.real_of[id(model)]

    def expect(self, expected, what, fn, *args, **kwargs):
        """Call the real ``fn``; it must raise exactly ``expected`` (a class) or, when
        ``expected`` is None, return normally. Returns (raised, result)."""
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            if expected is None:
                raise AssertionError(
                    f"{what}: the model predicts success, the real call raised "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            assert type(exc) is expected, (
                f"{what}: the model predicts {expected.__name__}, the real call raised "
                f"{type(exc).__name__}: {exc}"
            )
            return True, None
        assert expected is None, (
            f"{what}: the model predicts {expected.__name__}, the real call returned {result!r}"
        )
        return False, result

    @staticmethod
    def bind_blob(mblob, real_blob, what):
        assert isinstance(real_blob, so.Blob), f"{what}: returned {real_blob!r}, not a Blob"
        if mblob.real_id is None:
            mblob.real_id = id(real_blob)
        else:
            assert mblob.real_id == id(real_blob), (
                f"{what}: returned another Blob object than the one that lives there"
            )

    # -- setup --------------------------------------------------------------------------

    @initialize(
        target=roots,
        p_values=st.dictionaries(names, st.one_of(tensors, values), min_size=3),
        q_values=st.dictionaries(names, values, min_size=2),
    )
    def init_roots(self, p_values, q_values):
        out = []
        for label, content in (("P", p_values), ("Q", q_values)):
            real = so.Workspace()
            model = MWorkspace(label)
            for name, value in content.items():
                blob = real.feed_blob(name, value)
                model.locals[name] = MBlob(model_copy(value))
                self.bind_blob(model.locals[name], blob, "feed_blob")
            self.track(real, model)
            self.root[label] = real
            out.append(real)
        return multiple(*out)

    @initialize(target=stacks)
    def init_stack(self):
        real = so.WorkspaceStack()
        model = MStack()
        self.stack_model[id(real)] = model
        self.stack_pairs.append((real, model))
        return real

    # -- creating workspaces ------------------------------------------------------------

    @precondition(lambda self: len(self.pairs) < MAX_WORKSPACES)
    @rule(target=others, shared=st.one_of(st.none(), roots, others))
    def new_workspace(self, shared):
        real = so.Workspace(shared=shared) if shared is not None else so.Workspace()
        assert type(real) is so.Workspace
        self.track(real, MWorkspace(f"ws{len(self.pairs)}", shared=self.m(shared)))
        return real

    @precondition(lambda self: len(self.pairs) < MAX_WORKSPACES)
    @rule(
        target=others,
        parent=any_ws,
        bindings=binding_dicts,
        form=binding_forms,
    )
    def from_bindings(self, parent, bindings, form):
        parent = self.pick(parent)
        mparent = self.m(parent)
        try:
            for outer in bindings.values():
                if find(mparent, outer) is None:
                    raise Predicted(so.BindingError)  # Invalid parent workspace blob
            expected = None
        except Predicted as p:
            expected = p.cls
        raised, real = self.expect(
            expected, "Workspace.from_bindings", so.Workspace.from_bindings,
            parent, as_form(bindings, form),
        )
        if raised:
            return multiple()
        assert type(real) is so.Workspace
        model = MWorkspace(f"ws{len(self.pairs)}")
        for inner, outer in bindings.items():
            model.forwarded[inner] = (mparent, outer)
        self.track(real, model)
        return real

    # -- blobs --------------------------------------------------------------------------

    @rule(
        ws=any_ws,
        name=picked_names,
        how=st.sampled_from(
            ["feed_blob", "setitem", "create_blob", "create_local_blob", "create_local_blob"]
        ),
        value=values,
    )
    def write_blob(self, ws, name, how, value):
        ws = self.pick(ws)
        mws = self.m(ws)
        name = self.resolve(name, mws)
        if how == "create_local_blob":
            _, blob = self.expect(None, how, ws.create_local_blob, name)
            if name not in mws.locals:
                mws.locals[name] = MBlob()
            self.bind_blob(mws.locals[name], blob, how)
            return
        try:
            commit = plan_create_blob(mws, name)
            expected = None
        except Predicted as p:
            expected = p.cls
        if how == "setitem":
            raised, _ = self.expect(expected, "ws[name] = value", ws.__setitem__, name, value)
            blob = None if raised else ws.get_blob(name)
        elif how == "feed_blob":
            raised, blob = self.expect(expected, how, ws.feed_blob, name, value)
        else:
            raised, blob = self.expect(expected, how, ws.create_blob, name)
        if raised:
            return
        mblob = commit()
        if how != "create_blob":
            mblob.value = model_copy(value)
        self.bind_blob(mblob, blob, how)

    @rule(
        ws=any_ws,
        name=picked_names,
        how=st.sampled_from(["fetch_blob", "getitem", "has_and_get", "reset"]),
    )
    def read_blob(self, ws, name, how):
        ws = self.pick(ws)
        name = self.resolve(name, self.m(ws))
        mblob = find(self.m(ws), name)
        if how in ("has_and_get", "reset"):
            assert ws.has_blob(name) is (mblob is not None)
            assert (name in ws) is (mblob is not None)
            blob = ws.get_blob(name)
            assert (blob is None) is (mblob is None), "get_blob disagrees with the model"
            if blob is not None:
                self.bind_blob(mblob, blob, "get_blob")
                if how == "reset":
                    blob.reset()
                    mblob.value = EMPTY
            return
        if mblob is None:
            expected = so.BlobNotFoundError
        elif mblob.value is EMPTY:
            expected = so.BlobTypeError
        else:
            expected = None
        fn = ws.__getitem__ if how == "getitem" else ws.fetch_blob
        raised, value = self.expect(expected, how, fn, name)
        if not raised:
            assert same_value(value, mblob.value), (
                f"{how}({name!r}) gave {value!r}, the model has {mblob.value!r}"
            )

    @rule(ws=any_ws, name=picked_names, sugar=st.booleans())
    def remove_blob(self, ws, name, sugar):
        ws = self.pick(ws)
        mws = self.m(ws)
        name = self.resolve(name, mws)
        present = name in mws.locals
        if sugar:
            expected = None if present else so.BlobNotFoundError
            self.expect(expected, "del ws[name]", ws.__delitem__, name)
        else:
            _, removed = self.expect(None, "remove_blob", ws.remove_blob, name)
            assert removed is present, f"remove_blob({name!r}) returned {removed!r}"
        mws.locals.pop(name, None)

    @rule(ws=any_ws, old=picked_names, new=picked_names)
    def rename_blob(self, ws, old, new):
        ws = self.pick(ws)
        mws = self.m(ws)
        old, new = self.resolve(old, mws), self.resolve(new, mws)
        if old not in mws.locals:
            expected = so.BlobNotFoundError  # Blob <old> is not in the local blob list
        elif find(mws, new) is not None:
            expected = so.BindingError  # Blob <new> is already in the workspace
        else:
            expected = None
        raised, blob = self.expect(expected, "rename_blob", ws.rename_blob, old, new)
        if raised:
            return
        mblob = mws.locals.pop(old)
        mws.locals[new] = mblob
        self.bind_blob(mblob, blob, "rename_blob")

    # -- forwardings --------------------------------------------------------------------

    @rule(
        ws=others,
        parent=any_ws,
        bindings=binding_dicts,
        form=binding_forms,
        skip=st.booleans(),
    )
    def add_blob_mapping(self, ws, parent, bindings, form, skip):
        parent = self.pick(parent)
        try:
            commit = plan_add_mapping(self.m(ws), self.m(parent), bindings, skip)
            expected = None
        except Predicted as p:
            expected = p.cls
        raised, _ = self.expect(
            expected, "add_blob_mapping", ws.add_blob_mapping,
            parent, as_form(bindings, form), skip_defined_blobs=skip,
        )
        if not raised:
            commit()

    @rule(
        ws=any_ws,
        requested=st.one_of(
            st.lists(picked_names, max_size=4), st.sampled_from(["all forwarded", "hidden"])
        ),
    )
    def copy_forwarded_tensors(self, ws, requested):
        ws = self.pick(ws)
        if requested == "all forwarded":
            requested = sorted(self.m(ws).forwarded)
        elif requested == "hidden":
            requested = [Pick("hidden", 0)]
        self._copy_forwarded_tensors(ws, [self.resolve(name, self.m(ws)) for name in requested])

    def _copy_forwarded_tensors(self, ws, requested):
        try:
            commit = plan_copy_forwarded(self.m(ws), requested)
            expected = None
        except Predicted as p:
            expected = p.cls
        if any(name in self.m(ws).forwarded for name in requested):
            # Work to do: make sure it terminates before running it here.
            assert returns_in_time(lambda: ws.copy_forwarded_tensors(list(requested))), (
                f"copy_forwarded_tensors({requested!r}) did not return within {HANG_TIMEOUT} s"
            )
        raised, _ = self.expect(
            expected, "copy_forwarded_tensors", ws.copy_forwarded_tensors, list(requested)
        )
        if not raised:
            commit()

    # -- the stack ----------------------------------------------------------------------

    @rule(
        target=others,
        stack=stacks,
        parent=stack_parents,
        bindings=stack_bindings,
        form=binding_forms,
        copy_external_blobs=st.booleans(),
    )
    def push_forward_workspace(self, stack, parent, bindings, form, copy_external_blobs):
        """A push, then (as a forward Do op with copy_external_blobs does) optionally a
        snapshot of the bound names."""
        real, new = self._push(stack, parent, bindings, form)
        if real is not None and copy_external_blobs:
            self._copy_forwarded_tensors(real, sorted(bindings or {}))
        return real if new else multiple()

    def _push(self, stack, parent, bindings, form):
        """Push on the real stack and the model; returns (workspace or None, is_new)."""
        ms = self.stack_model[id(stack)]
        real_parent = self.root[parent]
        mparent = self.m(real_parent)
        b = dict(bindings or {})
        try:
            for outer in b.values():
                if find(mparent, outer) is None:
                    raise Predicted(so.BindingError)  # Invalid parent workspace blob
            expected = None
        except Predicted as p:
            expected = p.cls
        arg = None if bindings is None else as_form(bindings, form)
        raised, real = self.expect(
            expected, "push_forward_workspace", stack.push_forward_workspace, real_parent, arg
        )
        if raised:
            return None, False
        nxt = ms.top + 1
        if nxt < len(ms.ws):
            w = ms.ws[nxt]
            assert real is self.r(w), "push did not reuse the dormant workspace above the top"
            same = w.bound_parent is mparent and w.bound == b
            for inner in b:
                w.locals.pop(inner, None)  # local copies of bound names are removed
            if same:  # as in Caffe2: re-established, other forwardings stay
                for inner, outer in b.items():
                    w.forwarded[inner] = (mparent, outer)
            else:  # docs/caffe2.md difference 1: exactly the requested forwardings
                w.forwarded = {inner: (mparent, outer) for inner, outer in b.items()}
            w.bound_parent, w.bound = mparent, b
            ms.top = nxt
            return real, False
        assert id(real) not in self.model_of, "push returned an already known workspace"
        assert type(real) is so.Workspace, f"push built a {type(real).__name__}"
        w = MWorkspace(f"ws{len(self.pairs)}")
        w.forwarded = {inner: (mparent, outer) for inner, outer in b.items()}
        w.bound_parent, w.bound = mparent, b
        ms.ws.append(w)
        ms.top = nxt
        self.track(real, w)
        return real, True

    @rule(
        stack=stacks,
        parent=stack_parents,
        bindings=stack_bindings,
        form=binding_forms,
    )
    def pop_gradient_workspace(self, stack, parent, bindings, form):
        ms = self.stack_model[id(stack)]
        real_parent = self.root[parent]
        commit = None
        expected = None
        if ms.top >= 0:
            try:
                commit = plan_add_mapping(
                    ms.ws[ms.top], self.m(real_parent), dict(bindings or {}), True
                )
            except Predicted as p:
                expected = p.cls
        arg = None if bindings is None else as_form(bindings, form)
        raised, real = self.expect(
            expected, "pop_gradient_workspace", stack.pop_gradient_workspace, real_parent, arg
        )
        if raised:
            return
        if ms.top < 0:
            assert real is None, f"pop on an empty stack returned {real!r}"
            return
        assert real is self.r(ms.ws[ms.top]), "pop did not return the top workspace"
        commit()
        ms.top -= 1

    @rule(
        stack=stacks,
        parent=stack_parents,
        bindings=stack_bindings,
        form=binding_forms,
        copy_external_blobs=st.booleans(),
    )
    def reuse_last_forward_workspace(self, stack, parent, bindings, form, copy_external_blobs):
        ms = self.stack_model[id(stack)]
        real_parent = self.root[parent]
        commit = None
        expected = None
        if ms.top >= 0:
            try:
                commit = plan_add_mapping(
                    ms.ws[ms.top], self.m(real_parent), dict(bindings or {}), False
                )
            except Predicted as p:
                expected = p.cls
        arg = None if bindings is None else as_form(bindings, form)
        raised, real = self.expect(
            expected, "reuse_last_forward_workspace",
            stack.reuse_last_forward_workspace, real_parent, arg,
        )
        if raised:
            return
        if ms.top < 0:
            assert real is None, f"reuse on an empty stack returned {real!r}"
            return
        assert real is self.r(ms.ws[ms.top]), "reuse did not return the top workspace"
        commit()
        if copy_external_blobs:
            self._copy_forwarded_tensors(real, sorted(bindings or {}))

    @precondition(lambda self: any(
        outer in model.bound_parent.locals
        for _, stack_model in self.stack_pairs
        for model in stack_model.ws
        for outer in model.bound.values()
    ))
    @rule(index=st.integers(0, 3), rename=st.booleans())
    def parent_loses_bound_blob(self, index, rename):
        """A stack parent removes (or renames away) a blob that a stack workspace is
        bound to: an ordinary remove_blob/rename_blob, aimed where it matters."""
        targets = sorted({
            (model.bound_parent.label, outer)
            for _, stack_model in self.stack_pairs
            for model in stack_model.ws
            for outer in model.bound.values()
            if outer in model.bound_parent.locals
        })
        label, outer = targets[index % len(targets)]
        real = self.root[label]
        mws = self.m(real)
        free = [name for name in NAMES if find(mws, name) is None]
        if rename and free:
            _, blob = self.expect(None, "rename_blob", real.rename_blob, outer, free[0])
            mws.locals[free[0]] = mws.locals.pop(outer)
            self.bind_blob(mws.locals[free[0]], blob, "rename_blob")
        else:
            _, removed = self.expect(None, "remove_blob", real.remove_blob, outer)
            assert removed is True, f"remove_blob({outer!r}) returned {removed!r}"
            del mws.locals[outer]

    @rule(stack=stacks, op=st.sampled_from(["clear"] * 4 + ["release"]))
    def clear_or_release(self, stack, op):
        ms = self.stack_model[id(stack)]
        if op == "clear":
            stack.clear()
            ms.top = -1
            return
        freed = stack.release()
        assert freed == len(ms.ws) - (ms.top + 1), f"release() returned {freed}"
        del ms.ws[ms.top + 1:]  # the freed workspaces stay tracked as free workspaces

    # -- refused input ------------------------------------------------------------------

    @rule(
        ws=others,
        stack=stacks,
        method=st.sampled_from([
            "has_blob", "get_blob", "fetch_blob", "create_blob", "create_local_blob",
            "feed_blob", "remove_blob", "rename_old", "rename_new", "copy_forwarded_tensors",
            "add_blob_mapping_inner", "add_blob_mapping_outer", "from_bindings",
            "push_forward_workspace", "pop_gradient_workspace",
            "reuse_last_forward_workspace", "bad_bindings", "bad_shared",
            "from_bindings_no_parent", "add_blob_mapping_no_parent", "push_no_parent",
        ]),
        bad=st.sampled_from([1, None, b"a", 2.5, ""]),
        good=names,
    )
    def refused_input(self, ws, stack, method, bad, good):
        P = self.root["P"]
        calls = {
            "has_blob": lambda: ws.has_blob(bad),
            "get_blob": lambda: ws.get_blob(bad),
            "fetch_blob": lambda: ws.fetch_blob(bad),
            "create_blob": lambda: ws.create_blob(bad),
            "create_local_blob": lambda: ws.create_local_blob(bad),
            "feed_blob": lambda: ws.feed_blob(bad, 1),
            "remove_blob": lambda: ws.remove_blob(bad),
            "rename_old": lambda: ws.rename_blob(bad, good),
            "rename_new": lambda: ws.rename_blob(good, bad),
            "copy_forwarded_tensors": lambda: ws.copy_forwarded_tensors([good, bad]),
            "add_blob_mapping_inner": lambda: ws.add_blob_mapping(P, {bad: good}),
            "add_blob_mapping_outer": lambda: ws.add_blob_mapping(P, {good: bad}),
            "from_bindings": lambda: so.Workspace.from_bindings(P, {good: bad}),
            "push_forward_workspace": lambda: stack.push_forward_workspace(P, {bad: good}),
            "pop_gradient_workspace": lambda: stack.pop_gradient_workspace(P, {good: bad}),
            "reuse_last_forward_workspace":
                lambda: stack.reuse_last_forward_workspace(P, [(bad, good)]),
            "bad_bindings": lambda: ws.add_blob_mapping(P, 5),
            "bad_shared": lambda: so.Workspace(shared=5),
            # Parent workspace must be specified:
            "from_bindings_no_parent": lambda: so.Workspace.from_bindings(None, {good: good}),
            "add_blob_mapping_no_parent": lambda: ws.add_blob_mapping(None, {good: good}),
            "push_no_parent": lambda: stack.push_forward_workspace(None, {good: good}),
        }
        if method in ("bad_bindings", "bad_shared"):
            expected = TypeError
        elif method.endswith("_no_parent"):
            expected = so.BindingError
        else:
            try:
                check_name(bad)
            except Predicted as p:
                expected = p.cls
        self.expect(expected, f"{method} with {bad!r}", calls[method])

    # -- invariants ---------------------------------------------------------------------

    @invariant()
    def workspaces_agree_with_model(self):
        living = {}  # id(real Blob) -> MBlob, over this check
        arrays = []  # (MBlob, fetched ndarray)
        for real, model in self.pairs:
            label = model.label
            vis = visible(model)
            listed = real.blobs()
            assert len(listed) == len(set(listed)), f"{label}.blobs() has duplicates: {listed}"
            assert set(listed) == vis, f"{label}.blobs() = {sorted(listed)}, model {sorted(vis)}"
            assert len(real) == len(vis), f"len({label}) = {len(real)}, model {len(vis)}"
            assert sorted(real) == sorted(vis), f"iter({label}) disagrees"
            local = real.local_blobs()
            assert len(local) == len(set(local)), f"{label}.local_blobs() has duplicates"
            assert set(local) == set(model.locals), (
                f"{label}.local_blobs() = {sorted(local)}, model {sorted(model.locals)}"
            )
            fwd = real.forwarded_blobs()
            assert set(fwd) == set(model.forwarded), (
                f"{label}.forwarded_blobs() keys {sorted(fwd)}, model {sorted(model.forwarded)}"
            )
            for inner, (p, outer) in fwd.items():
                mp, mouter = model.forwarded[inner]
                assert p is self.r(mp) and outer == mouter, (
                    f"{label}.forwarded_blobs()[{inner!r}] = ({self.m(p)!r}, {outer!r}), "
                    f"model ({mp!r}, {mouter!r})"
                )
            assert real.shared is self.r(model.shared), f"{label}.shared disagrees"
            for name in NAMES:
                mblob = find(model, name)
                exists = mblob is not None
                assert real.has_blob(name) is exists, f"{label}.has_blob({name!r}) != {exists}"
                assert (name in real) is exists, f"{name!r} in {label} != {exists}"
                blob = real.get_blob(name)
                if not exists:
                    assert blob is None, f"{label}.get_blob({name!r}) is not None"
                    self.expect(
                        so.BlobNotFoundError, f"{label}.fetch_blob({name!r})",
                        real.fetch_blob, name,
                    )
                    continue
                assert blob is not None, f"{label}.get_blob({name!r}) is None"
                seen = living.setdefault(id(blob), mblob)
                assert seen is mblob, (
                    f"{label}.get_blob({name!r}) is the same Blob as another, distinct blob"
                )
                self.bind_blob(mblob, blob, f"{label}.get_blob({name!r})")
                assert blob.is_empty() is (mblob.value is EMPTY), (
                    f"{label}.get_blob({name!r}).is_empty() disagrees"
                )
                if mblob.value is EMPTY:
                    self.expect(
                        so.BlobTypeError, f"{label}.fetch_blob({name!r}) of an empty blob",
                        real.fetch_blob, name,
                    )
                    continue
                value = real.fetch_blob(name)
                assert same_value(value, mblob.value), (
                    f"{label}.fetch_blob({name!r}) = {value!r}, model {mblob.value!r}"
                )
                if isinstance(value, np.ndarray):
                    arrays.append((mblob, value))
        # Distinct blobs never share tensor memory (copies are deep, buffers recycled
        # only when nobody can see them).
        for i, (m1, a1) in enumerate(arrays):
            for m2, a2 in arrays[i + 1:]:
                if m1 is not m2:
                    assert not np.shares_memory(a1, a2), "two distinct blobs share memory"

    @invariant()
    def stacks_agree_with_model(self):
        for real, model in self.stack_pairs:
            real.check_stack()
            assert len(real) == model.top + 1, f"len(stack) = {len(real)}, model {model.top + 1}"
            assert real.capacity == len(model.ws), (
                f"stack.capacity = {real.capacity}, model {len(model.ws)}"
            )
            assert real.empty() is (model.top < 0)
            want_top = None if model.top < 0 else self.r(model.ws[model.top])
            assert real.top is want_top, "stack.top is not the model's top workspace"


WorkspaceModelMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    database=None,  # leave no .hypothesis directory behind; failures print a reproducer
    phases=[Phase.explicit, Phase.generate, Phase.shrink],  # no explain phase
    suppress_health_check=[HealthCheck.too_slow],
)
TestWorkspaceModel = WorkspaceModelMachine.TestCase
