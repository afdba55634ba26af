"""Do, If and While: running sub-nets in pushed workspaces, and control flow.

``Do`` runs its sub-net inside a workspace pushed on the stack held by its
scope blob (the last input and last output), seeing only the outer blobs it
binds, under inner names. A forward Do pushes (or, with ``reuse_workspace``,
reuses the top); a gradient Do pops the workspace its forward Do pushed, so the
backward ops see the forward step's local blobs. ``If`` and ``While`` run their
nets in the same workspace.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from scopeops.errors import OperatorError
from scopeops.net import NetDef, NetExecutor
from scopeops.ops.base import Arg, Operator, register
from scopeops.ops.scope import scope_stack

__all__ = ["DoOp", "IfOp", "WhileOp"]


def _net_arg(op: Operator, name: str, message: str) -> NetDef:
    value = op.args.get(name)
    if not isinstance(value, NetDef):
        raise OperatorError(message)
    return value


@register("Do", inputs=(1, None), outputs=(1, None), allow_inplace=True,
          args={"net": Arg(NetDef, None, doc="the sub-net"),
                "inner_blobs": Arg(list, [], doc="inner names to bind"),
                "outer_blobs_idx": Arg(list, [], doc="indices into inputs + outputs "
                                       "(both without the scope blob)"),
                "saved_fwd_blobs": Arg(list, [], doc="informational: forward blobs the "
                                       "backward pass reads"),
                "reuse_workspace": Arg(bool, False),
                "copy_external_blobs": Arg(bool, False)},
          doc="Runs a sub-net in a child workspace pushed on the scope blob's stack "
              "(the last input and output), with inner names bound to outer blobs.")
class DoOp(Operator):
    __slots__ = ("subnet", "bindings", "is_gradient", "reuse_workspace",
                 "copy_external_blobs", "forwarded_inner")

    def validate(self) -> None:
        d = self.definition
        self.subnet = _net_arg(self, "net", "net must be specified in Do operator")
        self.is_gradient = d.is_gradient_op
        self.copy_external_blobs = bool(self.args.get("copy_external_blobs") or False)
        self.reuse_workspace = bool(self.args.get("reuse_workspace") or False)
        if self.is_gradient and self.reuse_workspace:
            raise OperatorError("Gradient Do op requires use of stacked workspaces")
        if self.copy_external_blobs and self.reuse_workspace:
            raise OperatorError("Reuse workspace and copy external blobs simultaneously in Do op")
        inner_blobs = list(self.args.get("inner_blobs") or [])
        outer_idx = list(self.args.get("outer_blobs_idx") or [])
        if not all(isinstance(n, str) and n for n in inner_blobs):
            raise OperatorError("Invalid blob bindings: inner_blobs must be non-empty names")
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in outer_idx):
            raise OperatorError("Invalid blob bindings: outer_blobs_idx must be ints")
        if len(inner_blobs) != len(outer_idx):
            raise OperatorError("Invalid blob bindings: different inner/outer blobs lengths")
        inputs, outputs = d.inputs, d.outputs
        if not inputs:
            raise OperatorError("Expected at least one input blob")
        outer_inputs = inputs[:-1]
        if len(set(outer_inputs)) != len(outer_inputs):
            raise OperatorError("Duplicate input blobs")
        if not outputs:
            raise OperatorError("Expected at least one output blob")
        if inputs[-1] != outputs[-1]:
            raise OperatorError("Expected same input/output workspace blob")
        outer_outputs = outputs[:-1]
        if len(set(outer_outputs)) != len(outer_outputs):
            raise OperatorError("Duplicate output blobs")
        outer = outer_inputs + outer_outputs
        bindings: dict[str, str] = {}
        used: set[str] = set()
        for inner, idx in zip(inner_blobs, outer_idx):
            if inner in bindings:
                raise OperatorError(f"Invalid blob bindings: redefinition of inner blob {inner}")
            if not 0 <= idx < len(outer):
                raise OperatorError(
                    f"Invalid blob bindings: outer blob index ({idx}, inner name: {inner}) "
                    f"is out of bounds [0, {len(outer) - 1}]")
            name = outer[idx]
            if name in used:
                raise OperatorError(f"Reusage of outer name: {name}")
            bindings[inner] = name
            used.add(name)
        if len(used) != len(set(outer)):
            raise OperatorError("Not all outer names are used in blob bindings")
        self.bindings = bindings
        self.forwarded_inner = list(bindings)

    def run(self) -> None:
        stack = scope_stack(self.output_blob(-1))
        parent = self.workspace
        depth = len(stack)
        if self.is_gradient:
            child = stack.pop_gradient_workspace(parent, self.bindings)
        elif self.reuse_workspace and not stack.empty():
            child = stack.reuse_last_forward_workspace(parent, self.bindings)
        else:
            child = stack.push_forward_workspace(parent, self.bindings)
        if child is None:
            raise OperatorError("Failed to initialize Do op workspace: the scope stack is empty"
                                if self.is_gradient else "Failed to initialize Do op workspace")
        try:
            executor = child.get_net(self.subnet.name) if self.subnet.name else None
            if executor is None:
                executor = child.create_net(self.subnet if self.subnet.name else
                                            _named(self.subnet, self), overwrite=True)
            executor.run()
        except Exception:
            # Leave the scope stack exactly as we found it (Caffe2 left the push on it).
            _restore_depth(stack, parent, depth, self.is_gradient)
            raise
        if not self.is_gradient and self.copy_external_blobs:
            child.copy_forwarded_tensors(self.forwarded_inner)


def _named(netdef: NetDef, op: Operator) -> NetDef:
    named = netdef.copy()
    named.name = f"{op.definition.name or op.definition.type}/subnet"
    return named


def _restore_depth(stack: Any, parent: Any, depth: int, was_pop: bool) -> None:
    if was_pop:
        while len(stack) < depth:
            stack._undo_pop()
    else:
        while len(stack) > depth:
            stack.pop_gradient_workspace(parent)


def _condition(op: Operator, blob: Any, what: str) -> bool:
    value = blob.get() if not blob.is_empty() else None
    if not isinstance(value, np.ndarray):
        raise OperatorError(f"Invalid condition in {what} operator: tensor expected")
    if value.size != 1:
        raise OperatorError(f"Invalid condition tensor in {what} operator: single value expected")
    if value.dtype != np.bool_:
        raise OperatorError(f"Invalid condition tensor in {what} operator: bool expected, "
                            f"got {value.dtype}")
    return bool(value.reshape(-1)[0])


@register("If", inputs=(1, None), outputs=(0, None),
          args={"then_net": Arg(NetDef, None), "else_net": Arg(NetDef, None)},
          doc="Runs then_net or else_net in the same workspace, by a one-element bool "
              "tensor (input 0).")
class IfOp(Operator):
    __slots__ = ("then_net", "else_net")

    def validate(self) -> None:
        _net_arg(self, "then_net", "then_net must be specified in If operator")
        if self.args.get("else_net") is not None and not isinstance(self.args["else_net"], NetDef):
            raise OperatorError("else_net must be a net in If operator")

    def setup(self) -> None:
        self.then_net = NetExecutor(self.args["then_net"], self.workspace)
        else_net = self.args.get("else_net")
        self.else_net = NetExecutor(else_net, self.workspace) if else_net is not None else None

    def run(self) -> None:
        if _condition(self, self.input_blob(0), "If"):
            self.then_net.run()
        elif self.else_net is not None:
            self.else_net.run()


@register("While", inputs=(1, None), outputs=(0, None),
          args={"loop_net": Arg(NetDef, None), "cond_net": Arg(NetDef, None)},
          doc="Runs loop_net while the one-element bool tensor in input 0 is true, "
              "running cond_net (if any) before each check.")
class WhileOp(Operator):
    __slots__ = ("loop_net", "cond_net")

    def validate(self) -> None:
        _net_arg(self, "loop_net", "loop_net must be specified in While operator")
        if self.args.get("cond_net") is not None and not isinstance(self.args["cond_net"], NetDef):
            raise OperatorError("cond_net must be a net in While operator")

    def setup(self) -> None:
        self.loop_net = NetExecutor(self.args["loop_net"], self.workspace)
        cond = self.args.get("cond_net")
        self.cond_net = NetExecutor(cond, self.workspace) if cond is not None else None

    def run(self) -> None:
        cond_blob_name = self.definition.inputs[0]
        while True:
            if self.cond_net is not None:
                self.cond_net.run()
            blob = self.workspace.get_blob(cond_blob_name)
            if blob is None:
                raise OperatorError(f"Invalid condition in While operator: blob "
                                    f"{cond_blob_name} is gone")
            if not _condition(self, blob, "While"):
                break
            self.loop_net.run()


# -- gradients (Caffe2's control_ops_grad, rebuilt on the version-tracking builder) ----

def _external(ops: list[Any]) -> tuple[list[str], list[str]]:
    """Names ``ops`` read before writing them, and every name they write, in order."""
    written: list[str] = []
    reads: list[str] = []
    seen_written: set[str] = set()
    for op in ops:
        for name in op.inputs:
            if name not in seen_written and name not in reads:
                reads.append(name)
        for name in op.outputs:
            if name not in seen_written:
                seen_written.add(name)
                written.append(name)
    return reads, written


def _rename_inputs(ops: list[Any], renames: dict[str, str]) -> list[Any]:
    if not renames:
        return ops
    out = []
    for op in ops:
        op = op.copy()
        op.inputs = [renames.get(n, n) for n in op.inputs]
        out.append(op)
    return out


class _DoBindings:
    """A forward Do's bindings, parsed."""

    def __init__(self, op: Any) -> None:
        net = op.args.get("net")
        if not isinstance(net, NetDef):
            raise OperatorError("No net argument found in Do op")
        self.subnet = net
        inner = list(op.args.get("inner_blobs") or [])
        idx = list(op.args.get("outer_blobs_idx") or [])
        if len(inner) != len(idx):
            raise OperatorError("Arguments inner_blobs and outer_blobs_idx of different "
                                "length in Do op")
        outer = op.inputs[:-1] + op.outputs[:-1]
        self.scope = op.inputs[-1]
        self.outer_of = {i: outer[k] for i, k in zip(inner, idx)}
        self.inner_of = {o: i for i, o in self.outer_of.items()}
        self.subnet_name = net.name or f"{op.name or op.type}/subnet"


def do_gradient_op(op: Any, go: dict[str, str], gi_target: Any, fwd_ref: Any,
                   tag: str) -> tuple[Any, dict[str, str]]:
    """The gradient Do of the forward Do ``op`` (and the saved-copy fix-up of its subnet).

    ``go``: outer output -> its gradient blob. ``gi_target(outer_input)`` names
    the outer blob that receives an input's gradient (called only for inputs
    that get one). ``fwd_ref(outer)`` names the outer blob holding a forward
    value the backward ops read. Returns (gradient Do or None, {outer input:
    gradient blob written}).
    """
    from scopeops.gradients import backward_ops, grad_name, insert_saves

    b = _DoBindings(op)
    initial = {}
    for outer, outer_grad in go.items():
        inner = b.inner_of.get(outer)
        if inner is not None:
            initial[inner] = grad_name(inner)
    if not initial:
        return None, {}
    bwd, inner_result, saves = backward_ops(b.subnet.ops, initial, prefix=f"{tag}_",
                                            external_only=True)
    if saves:
        fixed = b.subnet.copy()
        fixed.ops = insert_saves(fixed.ops, saves)
        op.args["net"] = fixed
    if not bwd:
        return None, {}
    bindings: dict[str, str] = {}
    grad_inputs: list[str] = []
    grad_outputs: list[str] = []
    for outer, outer_grad in go.items():
        inner = b.inner_of.get(outer)
        if inner is not None:
            bindings[grad_name(inner)] = outer_grad
            grad_inputs.append(outer_grad)
    extra = []
    written: dict[str, str] = {}
    for outer in op.inputs[:-1]:
        inner = b.inner_of.get(outer)
        if inner is None or inner not in inner_result:
            continue
        target = gi_target(outer)
        inner_grad = inner_result[inner]
        if inner_grad in bindings and bindings[inner_grad] != target:
            alias = f"{inner_grad}_out"
            extra.append(create_operator_plain("Copy", [inner_grad], [alias]))
            inner_grad = alias
        bindings[inner_grad] = target
        grad_outputs.append(target)
        written[outer] = target
    ops = bwd + extra
    # Forward values the backward ops read: bound outer blobs (possibly saved copies)
    # or locals of the forward workspace.
    produced: set[str] = set()
    renames: dict[str, str] = {}
    saved_fwd: list[str] = []
    for bop in ops:
        for name in bop.inputs:
            if name in produced or name in bindings or name in renames or name in saved_fwd:
                continue
            bound_outer = b.outer_of.get(name)
            if bound_outer is None:
                saved_fwd.append(name)
                continue
            ref = fwd_ref(bound_outer)
            if ref == bound_outer:
                bindings[name] = bound_outer
            else:
                alias = f"{name}__saved_fwd"
                renames[name] = alias
                bindings[alias] = ref
            grad_inputs.append(ref)
        produced.update(bop.outputs)
    ops = _rename_inputs(ops, renames)
    inputs = list(dict.fromkeys(grad_inputs))
    outputs = list(dict.fromkeys(grad_outputs))
    outer_list = inputs + outputs
    inner_blobs = list(bindings)
    outer_idx = [outer_list.index(bindings[i]) for i in inner_blobs]
    grad_net = NetDef(name=f"{b.subnet_name}_grad", ops=ops)
    grad_do = create_operator_plain(
        "Do", inputs + [b.scope], outputs + [b.scope],
        name=f"{op.name}_grad" if op.name else "",
        net=grad_net, inner_blobs=inner_blobs, outer_blobs_idx=outer_idx,
        saved_fwd_blobs=saved_fwd, is_gradient_op=True)
    return grad_do, written


def create_operator_plain(type: str, inputs: list[str], outputs: list[str], **args: Any) -> Any:
    from scopeops.net import OperatorDef
    is_gradient_op = bool(args.pop("is_gradient_op", False))
    name = args.pop("name", "")
    return OperatorDef(type=type, inputs=list(inputs), outputs=list(outputs), name=name,
                       args=args, is_gradient_op=is_gradient_op)


def _fwd_ref_for(g: Any) -> Any:
    op = g.op

    def ref(outer: str) -> str:
        name: str = g.O(op.outputs.index(outer)) if outer in op.outputs \
            else g.I(op.inputs.index(outer))
        return name

    return ref


def _do_gradient(g: Any) -> list[Any]:
    op = g.op
    go = {name: g.GO(j) for j, name in enumerate(op.outputs[:-1]) if g.GO(j) is not None}
    grad_do, _ = do_gradient_op(
        op, go, lambda outer: g.GI(op.inputs.index(outer), inplace_ok=True),
        _fwd_ref_for(g), tag=f"do{g.index}")
    return [grad_do] if grad_do is not None else []


def _if_gradient(g: Any) -> list[Any]:
    from scopeops.gradients import backward_ops, insert_saves

    op = g.op
    go = {name: g.GO(j) for j, name in enumerate(op.outputs) if g.GO(j) is not None}
    branches = [("then_net", op.args.get("then_net")), ("else_net", op.args.get("else_net"))]
    results: dict[str, tuple[list[Any], dict[str, str], set[str]]] = {}
    for key, branch in branches:
        if branch is None:
            results[key] = ([], {}, set())
            continue
        _, branch_writes = _external(branch.ops)
        initial = {name: grad for name, grad in go.items() if name in branch_writes}
        bwd, result, saves = backward_ops(
            branch.ops, initial, prefix=f"if{g.index}_{key}_",
            namer=_branch_namer(key, g.index), external_only=True)
        if saves:
            fixed = branch.copy()
            fixed.ops = insert_saves(fixed.ops, saves)
            op.args[key] = fixed
        results[key] = (bwd, result, set(branch_writes))
    # Inputs (not the condition) that receive a gradient in either branch.
    # Inputs (not the condition) that get a gradient: from a branch's backward pass,
    # or passed through unchanged by a branch that does not write them.
    wanted = []
    for i, name in enumerate(op.inputs[1:], start=1):
        if any(name in result or (name in go and name not in writes)
               for _, result, writes in results.values()):
            wanted.append((i, name))
    if not wanted and not any(results[k][0] for k, _ in branches):
        return []
    targets = {name: g.GI(i, inplace_ok=True) for i, name in wanted}
    fwd_ref = _fwd_ref_for(g)
    nets = {}
    for key, branch in branches:
        bwd, result, writes = results[key]
        tail = []
        for i, name in wanted:
            target = targets[name]
            if name in result:
                if result[name] != target:
                    tail.append(create_operator_plain("Copy", [result[name]], [target]))
            elif name in go and name not in writes:
                if go[name] != target:
                    tail.append(create_operator_plain("Copy", [go[name]], [target]))
            else:
                tail.append(create_operator_plain("ConstantFill", [g.I(i)], [target], value=0.0))
        ops = bwd + tail
        # forward values read by the branch's backward ops, at the versions the If saw
        produced: set[str] = set()
        renames = {}
        for bop in ops:
            for name in bop.inputs:
                if name in produced or name in renames:
                    continue
                if name in op.outputs or name in op.inputs[1:]:
                    ref = fwd_ref(name)
                    if ref != name:
                        renames[name] = ref
            produced.update(bop.outputs)
        nets[key] = _rename_inputs(ops, renames)
    reads: list[str] = []
    writes_all: list[str] = []
    for key, _ in branches:
        r, w = _external(nets[key])
        reads += [n for n in r if n not in reads]
        writes_all += [n for n in w if n not in writes_all]
    cond = g.I(0)
    then_net = NetDef(name=f"{op.name or 'if'}{g.index}_then_grad", ops=nets["then_net"])
    args = {"then_net": then_net}
    if nets["else_net"] or op.args.get("else_net") is not None:
        args["else_net"] = NetDef(name=f"{op.name or 'if'}{g.index}_else_grad",
                                  ops=nets["else_net"])
    return [create_operator_plain("If", [cond] + [n for n in reads if n != cond], writes_all,
                                  **args)]


def _branch_namer(key: str, index: int) -> Any:
    """Gradient names private to one branch of one If (it runs in the outer workspace)."""
    return lambda blob: f"{blob}_grad_{key[:4]}{index}"


def _while_gradient(g: Any) -> list[Any]:
    op = g.op
    loop = op.args.get("loop_net")
    if not isinstance(loop, NetDef) or len(loop.ops) != 1 or loop.ops[0].type != "Do":
        raise OperatorError("Gradient While op requires single Do op as a loop body")
    body = loop.ops[0]
    if body.args.get("reuse_workspace"):
        raise OperatorError("Gradient While op requires Do loop body op without "
                            "reuse_workspace set")
    from scopeops.gradients import grad_name

    b = _DoBindings(body)
    go = {name: g.GO(j) for j, name in enumerate(op.outputs) if g.GO(j) is not None}
    body_outputs = set(body.outputs[:-1])
    body_inputs = body.inputs[:-1]
    fwd_ref = _fwd_ref_for(g)
    pre: list[Any] = []
    # Loop-carried blobs (read and written by the body) chain their gradient through
    # the iterations in <blob>_grad; a carried blob with no incoming gradient starts
    # from zeros when the body gives it one.
    carried_go = {n: grad_name(n) for n in body_outputs if n in go}
    for _ in range(len(body_outputs) + 1):
        probe_targets: dict[str, str] = {}
        grad_do, written = do_gradient_op(
            body.copy(), carried_go,
            lambda outer: probe_targets.setdefault(outer, grad_name(outer)),
            lambda outer: outer, tag=f"while{g.index}")
        missing = [n for n in written if n in body_outputs and n not in carried_go]
        if not missing:
            break
        for n in missing:
            carried_go[n] = grad_name(n)
    if grad_do is None:
        return []
    for n in carried_go:
        if n not in go:
            pre.append(create_operator_plain("ConstantFill", [fwd_ref(n)], [grad_name(n)],
                                             value=0.0))
        elif go[n] != grad_name(n):
            pre.append(create_operator_plain("Copy", [go[n]], [grad_name(n)]))
    # Loop-invariant inputs accumulate one gradient per iteration.
    accumulate: dict[str, str] = {}
    iter_names: dict[str, str] = {}
    for n in written:
        if n in body_outputs:
            continue
        i = op.inputs.index(n)
        accumulate[n] = g.GI(i)
        iter_names[n] = f"{grad_name(n)}_while{g.index}_iter"
    targets = {n: (iter_names[n] if n in iter_names else grad_name(n)) for n in written}
    grad_do, _ = do_gradient_op(body, carried_go, lambda outer: targets[outer],
                                lambda outer: outer, tag=f"while{g.index}")
    for n, acc in accumulate.items():
        pre.append(create_operator_plain("ConstantFill", [fwd_ref(n)], [acc], value=0.0))
    loop_ops = [grad_do] + [create_operator_plain("Sum", [acc, iter_names[n]], [acc])
                            for n, acc in accumulate.items()]
    cond = f"{b.scope}_has_scope_grad{g.index}"
    has_scope = create_operator_plain("HasScope", [b.scope], [cond])
    loop_reads, loop_writes = _external(loop_ops)
    grad_while = create_operator_plain(
        "While", [cond] + [n for n in loop_reads if n != cond], loop_writes + [cond],
        loop_net=NetDef(name=f"{op.name or 'while'}{g.index}_loop_grad", ops=loop_ops),
        cond_net=NetDef(name=f"{op.name or 'while'}{g.index}_cond_grad", ops=[has_scope]))
    post = []
    for n in carried_go:
        if n in op.inputs:
            target = g.GI(op.inputs.index(n), inplace_ok=True)
            if target != grad_name(n):
                post.append(create_operator_plain("Copy", [grad_name(n)], [target]))
    return pre + [has_scope, grad_while] + post


def _register_control_gradients() -> None:
    from scopeops.ops.base import lookup
    lookup("Do").gradient = _do_gradient
    lookup("If").gradient = _if_gradient
    lookup("While").gradient = _while_gradient


_register_control_gradients()
