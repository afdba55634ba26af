"""Thread hardening: every Python-level method of Blob, Workspace and WorkspaceStack is
atomic with respect to other Python threads (docs/threads.md).

The hammering runs in a subprocess, so that a crash of the interpreter is a test failure
with its exit status, not a lost test run. The subprocess forces a thread switch every
microsecond and reports what it saw as JSON on its last line of output.
"""

import json
import sys
import threading
import time

import numpy as np
import pytest
from support import do_fc_training_net, run_python

import scopeops as so
import scopeops.ops.math  # noqa: F401  - registers the numeric operators
import scopeops.ops.nn  # noqa: F401


def run_script(script, timeout):
    """Run ``script`` in a fresh interpreter that imports this scopeops; return the JSON
    report it prints last. A crash, a hang or a traceback fails the test."""
    proc = run_python(script, timeout=timeout)
    assert proc.returncode == 0, (
        f"the subprocess died with exit status {proc.returncode}\n"
        f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


HAMMER = r"""
import json, random, sys, threading, traceback
import numpy as np
import scopeops as so

sys.setswitchinterval(1e-6)
THREADS, OPS, SIZED = 8, %(ops)d, %(sized)s
NAMES = ["a", "b", "c", "d", "e", "f"]
ALLOWED = (so.ScopeError, TypeError, ValueError, KeyError)

# One tree shared by every thread: a root, read-through children, and whatever the
# one stack pushes (children of any of them, bound to random names).
root = so.Workspace()
child = so.Workspace(shared=root)
grandchild = so.Workspace(shared=child)
stack = so.WorkspaceStack()
fixed = [root, child, grandchild]
extra = []                     # workspaces made by from_bindings during the run

fed_objects = set()            # ids of every sentinel object fed (kept alive in `keep`)
fed_tags = set()               # tags of every array fed
keep = []
tag_counter = iter(range(1, 10**9))
errors = []                    # (operation, exception type, message) of undocumented escapes
bad_fetches = []
counts = {"ok": 0, "documented": 0}


class Sentinel:
    __slots__ = ("tag", "__weakref__")

    def __init__(self, tag):
        self.tag = tag


class SizedSentinel(Sentinel):
    # nbytes runs Python code: a thread switch can happen while a workspace adds up bytes.
    __slots__ = ()

    @property
    def nbytes(self):
        total = 0
        for i in range(8):
            total += i
        return total


def new_value(rng):
    tag = next(tag_counter)
    if rng.random() < 0.5:
        value = (SizedSentinel if SIZED and rng.random() < 0.3 else Sentinel)(tag)
        fed_objects.add(id(value))
    else:
        kind = rng.random()
        if kind < 0.1:      # large: copy_forwarded_tensors copies it with the GIL released
            value = np.full(100_000, float(tag))
        elif kind < 0.2:    # not contiguous: copied by numpy instead
            value = np.full((4, 6), float(tag))[:, ::2]
        else:
            value = np.full(rng.choice([(1,), (3,), (2, 2)]), float(tag))
        fed_tags.add(float(tag))
    if isinstance(value, Sentinel):
        keep.append(value)     # ids stay unique: no fed sentinel is ever freed
    return value


def check_value(value, what):
    if isinstance(value, Sentinel):
        if id(value) not in fed_objects:
            bad_fetches.append(f"{what}: a sentinel that was never fed")
    elif isinstance(value, np.ndarray):
        flat = value.reshape(-1)
        if flat.size == 0 or float(flat[0]) not in fed_tags or not (flat == flat[0]).all():
            bad_fetches.append(f"{what}: an array that was never fed: {value!r}")
    else:
        bad_fetches.append(f"{what}: {type(value).__name__} {value!r:.80} was never fed")


def pick_workspace(rng):
    choices = fixed + extra[-8:]
    top = stack.top
    if top is not None:
        choices.append(top)
    if rng.random() < 0.2:
        choices += stack.workspaces()[:8]
    return rng.choice(choices)


def pick_bindings(rng):
    inner = rng.sample(NAMES, rng.randint(0, 3))
    bindings = {n: rng.choice(NAMES) for n in inner}
    return bindings if rng.random() < 0.7 else list(bindings.items())


def op_push(rng):
    parent = rng.choice(fixed + ([stack.top] if stack.top is not None else []))
    stack.push_forward_workspace(parent, pick_bindings(rng) if rng.random() < 0.6 else None)

def op_pop(rng):
    parent = rng.choice(fixed)
    stack.pop_gradient_workspace(parent, pick_bindings(rng) if rng.random() < 0.3 else None)

def op_reuse(rng):
    stack.reuse_last_forward_workspace(rng.choice(fixed), pick_bindings(rng))

def op_clear(rng):
    stack.clear()

def op_release(rng):
    stack.release()

def op_feed(rng):
    ws = pick_workspace(rng)
    name = rng.choice(NAMES)
    if rng.random() < 0.5:
        ws.feed_blob(name, new_value(rng))
    else:
        ws[name] = new_value(rng)

def op_fetch(rng):
    ws = pick_workspace(rng)
    name = rng.choice(NAMES)
    value = ws.fetch_blob(name) if rng.random() < 0.5 else ws[name]
    check_value(value, f"fetch {name}")

def op_get_blob(rng):
    blob = pick_workspace(rng).get_blob(rng.choice(NAMES))
    if blob is not None and not blob.is_empty():
        check_value(blob.get(), "get_blob().get()")

def op_create(rng):
    ws = pick_workspace(rng)
    name = rng.choice(NAMES)
    blob = ws.create_local_blob(name) if rng.random() < 0.5 else ws.create_blob(name)
    if rng.random() < 0.5:
        blob.set(new_value(rng))

def op_remove(rng):
    ws = pick_workspace(rng)
    name = rng.choice(NAMES)
    if rng.random() < 0.5:
        ws.remove_blob(name)
    else:
        del ws[name]

def op_rename(rng):
    pick_workspace(rng).rename_blob(rng.choice(NAMES), rng.choice(NAMES))

def op_mapping(rng):
    ws = pick_workspace(rng)
    parent = rng.choice(fixed + extra[-4:])
    ws.add_blob_mapping(parent, pick_bindings(rng), skip_defined_blobs=rng.random() < 0.5)

def op_copy(rng):
    pick_workspace(rng).copy_forwarded_tensors(rng.sample(NAMES, rng.randint(1, 3)))

def op_from_bindings(rng):
    ws = so.Workspace.from_bindings(rng.choice(fixed), pick_bindings(rng))
    extra.append(ws)
    del extra[:-16]

def op_list(rng):
    ws = pick_workspace(rng)
    names = ws.blobs()
    assert len(names) == len(set(names)), f"blobs() has duplicates: {names}"
    ws.local_blobs(); ws.forwarded_blobs(); len(ws); list(ws); ws.nbytes
    for name in names[:3]:
        name in ws

def op_stack_info(rng):
    len(stack); stack.capacity; stack.empty(); stack.nbytes; stack.top
    stack.check_stack()

OPERATIONS = [op_push, op_push, op_pop, op_pop, op_reuse, op_clear, op_release,
              op_feed, op_feed, op_fetch, op_fetch, op_get_blob, op_create, op_remove,
              op_rename, op_mapping, op_copy, op_from_bindings, op_list, op_stack_info]


def worker(seed):
    rng = random.Random(seed)
    for _ in range(OPS):
        operation = rng.choice(OPERATIONS)
        try:
            operation(rng)
            counts["ok"] += 1
        except ALLOWED:
            counts["documented"] += 1
        except BaseException as exc:
            errors.append((operation.__name__, type(exc).__name__, str(exc)[:200],
                           traceback.format_exc()[-800:]))


threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(THREADS)]
for t in threads:
    t.start()
for t in threads:
    t.join()

from support import reference_find

final = []
try:
    stack.check_stack()
except BaseException as exc:
    final.append(f"check_stack: {type(exc).__name__}: {exc}")
if len(stack) > stack.capacity:
    final.append(f"depth {len(stack)} > capacity {stack.capacity}")
for ws in fixed + extra + stack.workspaces():
    try:
        names = ws.blobs()
        if len(names) != len(set(names)):
            final.append(f"blobs() has duplicates: {names}")
        for name in names:
            blob = ws.get_blob(name)
            if blob is None:
                final.append(f"{name} listed by blobs() but get_blob() is None")
            elif not blob.is_empty():
                check_value(blob.get(), f"final {name}")
        for name in NAMES:
            if ws.get_blob(name) is not reference_find(ws, name):
                final.append(f"{name} resolves against the rules (stale memo?)")
            if ws.has_blob(name) != (name in names):
                final.append(f"has_blob({name}) disagrees with blobs()")
    except BaseException as exc:
        final.append(f"final listing: {type(exc).__name__}: {exc}")
while stack.pop_gradient_workspace(root) is not None:
    pass
stack.clear()
stack.release()
stack.check_stack()
print(json.dumps({"errors": errors[:10], "n_errors": len(errors), "bad": bad_fetches[:10],
                  "n_bad": len(bad_fetches), "final": final[:10], "counts": counts,
                  "capacity": stack.capacity}))
"""


def hammer(ops, sized=False):
    report = run_script(HAMMER % {"ops": ops, "sized": sized}, timeout=120)
    assert report["n_errors"] == 0, "undocumented exceptions escaped:\n" + "\n".join(
        f"{op}: {kind}: {msg}\n{tb}" for op, kind, msg, tb in report["errors"])
    assert report["n_bad"] == 0, report["bad"]
    assert report["final"] == []
    return report


def test_eight_threads_hammering_one_stack_and_one_workspace_tree_stay_consistent():
    ops = 12_000
    report = hammer(ops)
    # The operations did something: many succeeded, some were refused as documented.
    assert report["counts"]["ok"] + report["counts"]["documented"] == 8 * ops
    assert report["counts"]["ok"] > 8 * ops // 3
    assert report["counts"]["documented"] > 0


def test_nbytes_while_other_threads_feed_and_remove_never_raises():
    """Workspace.nbytes and WorkspaceStack.nbytes add up values whose nbytes may run
    Python code (a thread switch); other threads changing the blobs meanwhile must not
    make them raise."""
    hammer(4000, sized=True)


BLOB_RACE = r"""
import json, sys, threading, traceback
import numpy as np
import scopeops as so

sys.setswitchinterval(1e-6)
blob = so.Blob()
ws = so.Workspace()
ws.feed_blob("t", np.zeros(4))
problems = []
READERS = READERS_EXPR

def writer(k):
    for i in range(3000):
        shape = (1 + (i + k) % 7, 2)
        try:
            out = blob.tensor(shape, np.float64 if i % 2 else np.float32)
            if out.shape != shape:
                problems.append(f"tensor({shape}) gave {out.shape}")
            if i % 5 == 0:
                blob.set(np.ones(3))
            if i % 11 == 0:
                blob.reset()
            target = ws.create_blob("t")
            arr = target.tensor((i % 9 + 1,), np.float64)
            arr[...] = k
            READERS(blob)
        except (so.ScopeError, TypeError, ValueError, KeyError):
            pass
        except BaseException as exc:
            problems.append(traceback.format_exc()[-600:])

threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps({"problems": problems[:3], "n": len(problems)}))
"""


def test_eight_threads_resizing_and_resetting_one_blob_never_crash():
    report = run_script(BLOB_RACE.replace(
        "READERS_EXPR", "lambda b: (b.nbytes, b.shape, b.dtype, b.meta, b.is_empty())"),
        timeout=60)
    assert report["n"] == 0, report["problems"]


def test_repr_of_a_blob_that_another_thread_resets_never_raises():
    """repr() is a Python-level method of Blob too: it must not see a half-changed blob."""
    report = run_script(BLOB_RACE.replace("READERS_EXPR", "repr"), timeout=60)
    assert report["n"] == 0, report["problems"]


# -- operator nets in threads ------------------------------------------------------------


def reference_results(parent_values, x):
    ws = so.Workspace()
    for name, value in parent_values.items():
        ws.feed_blob(name, value.copy())
    ws.feed_blob("x", x.copy())
    ws.run_net_once(do_fc_training_net("step"))
    return {name: np.array(ws.fetch_blob(name), copy=True)
            for name in ("loss", "y", "x_grad", "W_grad")}


def test_nets_run_concurrently_on_separate_workspaces_sharing_a_read_only_parent():
    rng = np.random.default_rng(0)
    parent_values = {"w": rng.normal(size=(2, 3)), "W": rng.normal(size=(4, 3)),
                     "bias": rng.normal(size=4)}
    parent = so.Workspace()
    for name, value in parent_values.items():
        parent.feed_blob(name, value.copy())
    inputs = [rng.normal(size=(2, 3)) for _ in range(8)]
    expected = [reference_results(parent_values, x) for x in inputs]
    parent_arrays = {name: parent.fetch_blob(name) for name in parent_values}
    parent_names = sorted(parent.blobs())
    failures = []
    switch = sys.getswitchinterval()

    def run(k):
        try:
            ws = so.Workspace(shared=parent)
            ws.feed_blob("x", inputs[k].copy())
            ws.create_net(do_fc_training_net("step"))
            for _ in range(150):
                ws.run_net("step")
                for name, value in expected[k].items():
                    np.testing.assert_allclose(ws.fetch_blob(name), value, rtol=1e-12,
                                               err_msg=f"thread {k}: {name}")
        except BaseException as exc:   # reported below with the thread's index
            failures.append((k, repr(exc)))

    sys.setswitchinterval(1e-5)
    try:
        threads = [threading.Thread(target=run, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(switch)
    assert failures == []
    # The parent was only read: same names, same arrays, same values.
    assert sorted(parent.blobs()) == parent_names
    for name, value in parent_values.items():
        assert parent.fetch_blob(name) is parent_arrays[name]
        np.testing.assert_array_equal(parent.fetch_blob(name), value)


def test_do_nets_pushing_on_one_shared_scope_stack_from_threads_never_corrupt_it():
    """Several threads run Do ops whose scope blob is the same stack (a misuse the spec
    does not make correct, but which must not corrupt the stack or crash)."""
    sub = so.Net("sub")
    sub.Copy(["a"], ["b"])
    parent = so.Workspace()
    parent.run_operator_once(so.create_operator("CreateScope", [], ["scope"]))
    parent.feed_blob("x", np.ones(3))
    stack = parent.fetch_blob("scope")
    failures = []

    def run(k):
        ws = so.Workspace(shared=parent)
        net = so.Net("n")
        net.add_op("Do", ["x", "scope"], [f"y{k}", "scope"], net=sub,
                   inner_blobs=["a", "b"], outer_blobs_idx=[0, 1])
        try:
            ws.create_net(net)
        except BaseException as exc:
            failures.append(repr(exc))
            return
        for _ in range(300):
            try:
                ws.run_net("n")
            except so.ScopeError:
                pass
            except BaseException as exc:
                failures.append(repr(exc))

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        threads = [threading.Thread(target=run, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(switch)
    assert failures == []
    stack.check_stack()
    assert len(stack) <= stack.capacity


def test_thread_harness_reports_a_crashed_subprocess_as_a_failure():
    """The subprocess harness itself: a hard crash is a failed assertion, not a lost run."""
    with pytest.raises(AssertionError, match="exit status"):
        run_script("import os; os.abort()", timeout=30)


def test_threads_storing_a_new_class_for_the_first_time_agree_on_its_meta():
    """The known-type registry is the single place that maps a class to its meta: two
    threads registering a class at once must get the same TypeMeta (a class whose
    metaclass computes __module__ in Python lets the thread switch mid-registration)."""

    class SlowModule(type):
        @property
        def __module__(cls):
            time.sleep(0.0005)      # a thread switch in the middle of registration
            return "slow_module"

    classes = [SlowModule(f"Fresh{i}", (), {}) for i in range(20)]
    blobs = {i: [] for i in range(len(classes))}
    barrier = threading.Barrier(4)

    def worker():
        barrier.wait()
        for i, cls in enumerate(classes):
            blobs[i].append(so.Workspace().feed_blob("v", cls()))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, cls in enumerate(classes):
        meta = so.type_meta(cls)
        assert so.register_known_type(cls) is meta
        assert [b.meta for b in blobs[i]] == [meta] * 4, f"{cls.__name__}: several metas"
        assert all(b.is_type(cls) for b in blobs[i])
        assert sum(m.pytype is cls for m in so.known_types()) == 1
