"""Gradient makers of Do, If and While (Caffe2's ``control_ops_grad``).

Kept apart from the operators (:mod:`scopeops.ops.control`), as Caffe2 keeps
``control_ops_grad.py`` apart from its ops, and registered here with
:func:`scopeops.ops.gradient`. They are built on the version-tracking builder
(:mod:`scopeops.gradients.builder`): a gradient Do pops the workspace its forward Do
pushed, so the backward ops see the forward step's locals; a While's gradient runs
once per forward iteration, conditioned on ``HasScope``.
"""

from __future__ import annotations

from typing import Any

from scopeops.defs import NetDef, OperatorDef, external_reads_writes
from scopeops.errors import OperatorError
from scopeops.gradients.builder import backward_ops, grad_name
from scopeops.net import create_operator
from scopeops.ops.base import gradient

__all__ = ["do_gradient_op"]


def _make(type: str, inputs: list[str], outputs: list[str], **args: Any) -> OperatorDef:
    """An op of a generated gradient net; it records no device (the builder sets the
    device of the ops it returns from their forward op)."""
    return create_operator(type, inputs, outputs, device_option=None, **args)


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
        idx = list(op.args["outer_blobs_idx"]) if "outer_blobs_idx" in op.args \
            else list(range(len(inner)))   # left out: inner name i binds outer blob i
        if len(inner) != len(idx):
            raise OperatorError("Arguments inner_blobs and outer_blobs_idx of different "
                                "length in Do op")
        outer = op.inputs[:-1] + op.outputs[:-1]
        self.scope = op.inputs[-1]
        self.outer_of = {i: outer[k] for i, k in zip(inner, idx, strict=True)}
        self.inner_of = {o: i for i, o in self.outer_of.items()}
        self.subnet_name = net.name or f"{op.name or op.type}/subnet"


def do_gradient_op(op: Any, go: dict[str, str], gi_target: Any, fwd_ref: Any,
                   tag: str, options: dict[str, Any]) -> tuple[Any, dict[str, str]]:
    """The gradient Do of the forward Do ``op`` (and the saved-copy fix-up of its subnet).

    ``go``: outer output -> its gradient blob. ``gi_target(outer_input)`` names
    the outer blob that receives an input's gradient (called only for inputs
    that get one). ``fwd_ref(outer)`` names the outer blob holding a forward
    value the backward ops read. ``options``: the outer pass's hooks, used for the
    sub-net's pass too. Returns (gradient Do or None, {outer input: gradient blob
    written}).
    """

    b = _DoBindings(op)
    initial = {}
    for outer in go:
        inner = b.inner_of.get(outer)
        if inner is not None:
            initial[inner] = grad_name(inner)
    if not initial:
        return None, {}
    inner_pass = backward_ops(b.subnet.ops, initial, prefix=f"{tag}_", **options)
    if inner_pass.forward != b.subnet.ops:
        fixed = b.subnet.copy()
        fixed.ops = inner_pass.forward
        op.args["net"] = fixed
    bwd, inner_result = inner_pass.ops, inner_pass.initial_grad_map
    # A sub-net can pass gradients through without an op (Sum, or Add under Caffe2's
    # broadcasting rule): the gradient Do is then still needed, to bind them.
    if not bwd and not any(b.inner_of.get(outer) in inner_result for outer in op.inputs[:-1]):
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
            # One inner gradient given to several inputs (a pass-through) needs a copy
            # bound to each of their outer gradients.
            alias = f"{inner_grad}_out"
            while alias in bindings:
                alias += "_"
            extra.append(_make("Copy", [inner_grad], [alias]))
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
    grad_do = _make(
        "Do", inputs + [b.scope], outputs + [b.scope],
        name=f"{op.name}_grad" if op.name else "",
        net=grad_net, inner_blobs=inner_blobs, outer_blobs_idx=outer_idx,
        saved_fwd_blobs=saved_fwd, is_gradient_op=True)
    return grad_do, written


def _fwd_ref_for(g: Any) -> Any:
    op = g.op

    def ref(outer: str) -> str:
        name: str = g.O(op.outputs.index(outer)) if outer in op.outputs \
            else g.I(op.inputs.index(outer))
        return name

    return ref


@gradient("Do")
def _do_gradient(g: Any) -> list[Any]:
    op = g.op
    go = {name: g.GO(j) for j, name in enumerate(op.outputs[:-1]) if g.GO(j) is not None}
    grad_do, _ = do_gradient_op(
        op, go, lambda outer: g.GI(op.inputs.index(outer), inplace_ok=True),
        _fwd_ref_for(g), tag=f"do{g.index}", options=g.options)
    return [grad_do] if grad_do is not None else []


@gradient("If")
def _if_gradient(g: Any) -> list[Any]:

    op = g.op
    go = {name: g.GO(j) for j, name in enumerate(op.outputs) if g.GO(j) is not None}
    branches = [("then_net", op.args.get("then_net")), ("else_net", op.args.get("else_net"))]
    results: dict[str, tuple[list[Any], dict[str, str], set[str]]] = {}
    for key, branch in branches:
        if branch is None:
            results[key] = ([], {}, set())
            continue
        _, branch_writes = external_reads_writes(branch.ops)
        initial = {name: grad for name, grad in go.items() if name in branch_writes}
        branch_pass = backward_ops(
            branch.ops, initial, prefix=f"if{g.index}_{key}_",
            namer=_branch_namer(key, g.index), **g.options)
        if branch_pass.forward != branch.ops:
            fixed = branch.copy()
            fixed.ops = branch_pass.forward
            op.args[key] = fixed
        results[key] = (branch_pass.ops, branch_pass.initial_grad_map, set(branch_writes))
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
    for key, _ in branches:
        bwd, result, writes = results[key]
        tail = []
        for i, name in wanted:
            target = targets[name]
            if name in result:
                if result[name] != target:
                    tail.append(_make("Copy", [result[name]], [target]))
            elif name in go and name not in writes:
                if go[name] != target:
                    tail.append(_make("Copy", [go[name]], [target]))
            else:
                tail.append(_make("ConstantFill", [g.I(i)], [target], value=0.0))
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
        r, w = external_reads_writes(nets[key])
        reads += [n for n in r if n not in reads]
        writes_all += [n for n in w if n not in writes_all]
    cond = g.I(0)
    then_net = NetDef(name=f"{op.name or 'if'}{g.index}_then_grad", ops=nets["then_net"])
    args = {"then_net": then_net}
    if nets["else_net"] or op.args.get("else_net") is not None:
        args["else_net"] = NetDef(name=f"{op.name or 'if'}{g.index}_else_grad",
                                  ops=nets["else_net"])
    return [_make("If", [cond] + [n for n in reads if n != cond], writes_all,
                                  **args)]


def _branch_namer(key: str, index: int) -> Any:
    """Gradient names private to one branch of one If (it runs in the outer workspace)."""
    return lambda blob: f"{blob}_grad_{key[:4]}{index}"


@gradient("While")
def _while_gradient(g: Any) -> list[Any]:
    op = g.op
    loop = op.args.get("loop_net")
    if not isinstance(loop, NetDef) or len(loop.ops) != 1 or loop.ops[0].type != "Do":
        raise OperatorError("Gradient While op requires single Do op as a loop body")
    body = loop.ops[0]
    if body.args.get("reuse_workspace"):
        raise OperatorError("Gradient While op requires Do loop body op without "
                            "reuse_workspace set")

    b = _DoBindings(body)
    go = {name: g.GO(j) for j, name in enumerate(op.outputs) if g.GO(j) is not None}
    body_outputs = set(body.outputs[:-1])
    fwd_ref = _fwd_ref_for(g)
    pre: list[Any] = []
    # Loop-carried blobs (read and written by the body) chain their gradient through
    # the iterations in <blob>_grad; a carried blob with no incoming gradient starts
    # from zeros when the body gives it one.
    carried_go = {n: grad_name(n) for n in body_outputs if n in go}
    for _ in range(len(body_outputs) + 1):
        grad_do, written = do_gradient_op(body.copy(), carried_go, grad_name,
                                          lambda outer: outer, tag=f"while{g.index}",
                                          options=g.options)
        missing = [n for n in written if n in body_outputs and n not in carried_go]
        if not missing:
            break
        for n in missing:
            carried_go[n] = grad_name(n)
    if grad_do is None:
        return []
    for n in carried_go:
        if n not in go:
            pre.append(_make("ConstantFill", [fwd_ref(n)], [grad_name(n)],
                                             value=0.0))
        elif go[n] != grad_name(n):
            pre.append(_make("Copy", [go[n]], [grad_name(n)]))
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
                                lambda outer: outer, tag=f"while{g.index}",
                                options=g.options)
    for n, acc in accumulate.items():
        pre.append(_make("ConstantFill", [fwd_ref(n)], [acc], value=0.0))
    loop_ops = [grad_do] + [_make("Sum", [acc, iter_names[n]], [acc])
                            for n, acc in accumulate.items()]
    cond = f"{b.scope}_has_scope_grad{g.index}"
    has_scope = _make("HasScope", [b.scope], [cond])
    loop_reads, loop_writes = external_reads_writes(loop_ops)
    grad_while = _make(
        "While", [cond] + [n for n in loop_reads if n != cond], loop_writes + [cond],
        loop_net=NetDef(name=f"{op.name or 'while'}{g.index}_loop_grad", ops=loop_ops),
        cond_net=NetDef(name=f"{op.name or 'while'}{g.index}_cond_grad", ops=[has_scope]))
    post = []
    for n in carried_go:
        if n in op.inputs:
            target = g.GI(op.inputs.index(n), inplace_ok=True)
            if target != grad_name(n):
                post.append(_make("Copy", [grad_name(n)], [target]))
    return pre + [has_scope, grad_while] + post
