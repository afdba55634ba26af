"""``add_do``, ``add_if`` and ``add_while``: sub-nets that run in their own workspaces.

``add_do`` adds a Do from a ``{inner: outer}`` mapping: which bound names the
sub-net reads and which it writes decide the Do's inputs and outputs, so the
four parallel lists of Caffe2's form (inputs, outputs, ``inner_blobs``,
``outer_blobs_idx``) and the scope blob at the end of both are written for you.

``add_if`` and ``add_while`` wrap each branch in a Do with its own scope blob (a
``CreateScope`` for it is placed before the If/While op, so every run of the outer
net clears it). Names a branch reads before writing are its external inputs and
must be in the lexical scope; names it writes that are in the lexical scope are
its external outputs; both are bound under identical names. Every other name stays
local to the branch's workspace and never appears in the outer one.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from scopeops.defs import NetDef, OperatorDef, as_netdef, external_reads_writes
from scopeops.errors import BindingError, OperatorError, did_you_mean
from scopeops.names import BlobReference, scoped_name
from scopeops.net import Net

__all__ = ["add_do", "add_if", "add_while", "external_blobs"]


def external_blobs(net: Any, lexical_scope: Iterable[str]) -> tuple[list[str], list[str]]:
    """``(inputs, outputs)`` of a branch: names read before written (each must be
    in ``lexical_scope``: ``Input blob <x> is undefined``), and written names that
    are in the lexical scope. Both in first-use order."""
    netdef = as_netdef(net)
    scope = set(lexical_scope)
    reads, writes = external_reads_writes(netdef.ops)
    for name in reads:
        if name not in scope:
            raise OperatorError(f"Input blob {name} is undefined (net '{netdef.name}' reads "
                                f"it before writing it, and it is not in the lexical scope)")
    return reads, [name for name in writes if name in scope]


def _lexical_scope(net: Net, lexical_scope: Iterable[str] | None) -> list[str]:
    if lexical_scope is not None:
        return list(lexical_scope)
    netdef = as_netdef(net)
    names = list(netdef.external_inputs)
    for op in netdef.ops:
        names.extend(op.outputs)
    return names


def _refs(names: Iterable[str]) -> list[str]:
    """Names taken from built definitions are already scoped: never scope them again."""
    return [BlobReference(n) for n in names]


def _unique_blob(net: Net, base: str) -> str:
    """A fresh scope-blob name (under the current name scope), as a BlobReference."""
    base = scoped_name(base)
    netdef = as_netdef(net)
    used = set(netdef.external_inputs) | set(netdef.external_outputs)
    for op in netdef.ops:
        used.update(op.inputs)
        used.update(op.outputs)
    name: str = base
    k = 0
    while name in used:
        k += 1
        name = f"{base}_{k}"
    return BlobReference(name)


def _do_net(name: str, body: Any, inputs: list[str], outputs: list[str], scope_blob: str,
            **do_args: Any) -> NetDef:
    """A one-op net holding a Do that runs ``body`` with identity bindings."""
    ordered = inputs + outputs
    inner = list(dict.fromkeys(ordered))
    wrapper = Net(name)
    wrapper.add_op("Do", _refs(inputs + [scope_blob]), _refs(outputs + [scope_blob]),
                   net=as_netdef(body), inner_blobs=inner,
                   outer_blobs_idx=[ordered.index(n) for n in inner], **do_args)
    wrapper.add_external_outputs(*_refs(outputs + [scope_blob]))
    return wrapper.netdef


def add_do(net: Net, subnet: Any, bindings: Mapping[str, str], scope: str | None = None, *,
           create_scope: bool = True, reuse_workspace: bool = False,
           copy_external_blobs: bool = False, name: str = "") -> OperatorDef:
    """Add a Do to ``net`` that runs ``subnet`` in a pushed workspace, bound by a mapping.

    ``bindings`` maps each name the sub-net uses to the outer blob it stands for,
    ``{inner: outer}``. A bound name the sub-net reads before writing makes its
    outer blob a Do input; one it writes makes it an output (both when it does
    both). Names the sub-net does not bind stay local to its workspace.

    ``scope`` is the scope blob holding the workspace stack; by default a fresh
    name (``<net>/do_scope``, made unique in the net). With ``create_scope`` (the
    default) a ``CreateScope`` for it is placed before the Do, unless an earlier op
    of ``net`` already writes the scope blob (an earlier Do on the same scope, or its
    CreateScope), so every run of the net starts from an empty stack. Pass
    ``create_scope=False`` for a scope blob you manage yourself. ``reuse_workspace``,
    ``copy_external_blobs`` and ``name`` are the Do's own.

    Returns the Do OperatorDef (Caffe2's form: the four lists, and the scope blob
    last among the inputs and the outputs). Raises :class:`BindingError` for a
    bound name the sub-net neither reads nor writes, an outer blob bound twice or
    bound as the scope blob, and (unless ``reuse_workspace``) a name the sub-net
    reads before writing that is not bound; TypeError for a bad argument type.
    Nothing is added to ``net`` when it raises.
    """
    if not isinstance(net, Net):
        raise TypeError(f"add_do builds into a Net, not {type(net).__name__}")
    body = as_netdef(subnet)
    if not isinstance(bindings, Mapping):
        raise TypeError(f"bindings must be a mapping {{inner: outer}}, not "
                        f"{type(bindings).__name__}")
    pairs = {}
    for inner, outer in bindings.items():
        if not isinstance(inner, str) or not inner or not isinstance(outer, str) or not outer:
            raise TypeError(f"bindings map non-empty names to names, got {inner!r}: {outer!r}")
        pairs[str(inner)] = scoped_name(outer)
    if reuse_workspace and copy_external_blobs:
        raise OperatorError("Reuse workspace and copy external blobs simultaneously in Do op")
    label = body.name or "<unnamed>"
    reads, writes = external_reads_writes(body.ops)
    used = set(reads) | set(writes)
    for inner in pairs:
        if inner not in used:
            raise BindingError(f"add_do: sub-net '{label}' neither reads nor writes {inner}, "
                               f"which bindings bind{did_you_mean(inner, used - set(pairs))}")
    if not reuse_workspace:
        for inner in reads:
            if inner not in pairs:
                raise BindingError(
                    f"add_do: sub-net '{label}' reads {inner} before writing it, and bindings "
                    f"give no outer blob for it: bind it, {{'{inner}': <outer blob>}}")
    outers = list(pairs.values())
    twice = [o for o in dict.fromkeys(outers) if outers.count(o) > 1]
    if twice:
        raise BindingError(f"add_do: outer blob {twice[0]} is bound to several inner names "
                           f"({', '.join(i for i, o in pairs.items() if o == twice[0])}); a "
                           f"Do binds each outer blob once")
    scope_blob = scoped_name(scope) if scope is not None \
        else _unique_blob(net, f"{net.name}/do_scope")
    if scope_blob in outers:
        raise BindingError(f"add_do: the scope blob {scope_blob} is also bound as an outer "
                           f"blob; it must hold only the workspace stack")
    inputs = [outer for inner, outer in pairs.items() if inner in reads]
    outputs = [outer for inner, outer in pairs.items() if inner in writes]
    outer_list = inputs + outputs
    # Left out, outer_blobs_idx is 0..n-1: give it only when the order differs.
    index = [outer_list.index(outer) for outer in pairs.values()]
    do_args: dict[str, Any] = {"net": body, "inner_blobs": list(pairs)}
    if index != list(range(len(index))):
        do_args["outer_blobs_idx"] = index
    if reuse_workspace:
        do_args["reuse_workspace"] = True
    if copy_external_blobs:
        do_args["copy_external_blobs"] = True
    written = {n for op in as_netdef(net).ops for n in op.outputs}
    if create_scope and scope_blob not in written:
        net.add_op("CreateScope", [], _refs([scope_blob]))
    net.add_op("Do", _refs(inputs + [scope_blob]), _refs(outputs + [scope_blob]), name=name,
               **do_args)
    do: OperatorDef = net.ops[-1]
    return do


def _union(*lists: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(n for names in lists for n in names))


def add_if(net: Net, cond: str, then_net: Any, else_net: Any = None,
           lexical_scope: Iterable[str] | None = None) -> Any:
    """Add an If op to ``net`` whose branches run in their own Do workspaces.

    ``cond`` is a one-element bool tensor. ``lexical_scope`` defaults to the
    outer net's external inputs and every blob its earlier ops write. The If
    op's inputs are the condition and the union of the branches' external
    inputs; its outputs are the union of their external outputs (a name written
    by only one branch is also an input, since the other branch passes it
    through). Returns the If OperatorDef.
    """
    if not isinstance(net, Net):
        raise TypeError(f"add_if builds into a Net, not {type(net).__name__}")
    cond = scoped_name(cond)
    scope = _lexical_scope(net, lexical_scope)
    then_in, then_out = external_blobs(then_net, scope)
    else_in, else_out = external_blobs(else_net, scope) if else_net is not None else ([], [])
    outputs = _union(then_out, else_out)
    both = set(then_out) & set(else_out) if else_net is not None else set()
    passed_through = [n for n in outputs if n not in both]
    inputs = _union(then_in, else_in, passed_through)
    then_scope = _unique_blob(net, f"{net.name}/workspace_if_then")
    if_args: dict[str, Any] = {"then_net": _do_net(f"{net.name}/do_then_net", then_net,
                                                   then_in, then_out, then_scope)}
    scopes = [then_scope]
    if else_net is not None:
        net.add_op("CreateScope", [], [then_scope])
        else_scope = _unique_blob(net, f"{net.name}/workspace_if_else")
        if_args["else_net"] = _do_net(f"{net.name}/do_else_net", else_net, else_in,
                                      else_out, else_scope)
        net.add_op("CreateScope", [], [else_scope])
        scopes.append(else_scope)
    else:
        net.add_op("CreateScope", [], [then_scope])
    net.add_op("If", _refs([cond] + [n for n in inputs if n != cond] + scopes),
               _refs(outputs + scopes), **if_args)
    return net.ops[-1]


def add_while(net: Net, cond: str, body_net: Any, cond_net: Any = None,
              lexical_scope: Iterable[str] | None = None) -> Any:
    """Add a While op to ``net`` whose body (and condition net) run in Do workspaces.

    The body Do copies its bound blobs after each iteration
    (``copy_external_blobs``) so the gradient pass sees every iteration's
    values. Loop outputs are loop inputs too (the loop may not run). A
    ``cond_net`` must write ``cond`` (``Condition net does not write into
    condition blob``); when ``cond`` is not in the lexical scope a
    ``ConstantFill(value=False)`` creates it first. Returns the While OperatorDef.
    """
    if not isinstance(net, Net):
        raise TypeError(f"add_while builds into a Net, not {type(net).__name__}")
    cond = scoped_name(cond)
    scope = _lexical_scope(net, lexical_scope)
    body_in, body_out = external_blobs(body_net, scope)
    body_in = _union(body_in, body_out)
    body_scope = _unique_blob(net, f"{net.name}/workspace_loop_body")
    loop_net = _do_net(f"{net.name}/do_loop_body_net", body_net, body_in, body_out, body_scope,
                       copy_external_blobs=True)
    while_args: dict[str, Any] = {"loop_net": loop_net}
    inputs = [cond] + [n for n in body_in if n != cond]
    outputs = list(body_out)
    scopes = [body_scope]
    net.add_op("CreateScope", [], [body_scope])
    if cond_net is not None:
        if not any(cond in op.outputs for op in as_netdef(cond_net).ops):
            raise OperatorError("Condition net does not write into condition blob")
        cond_in, cond_out = external_blobs(cond_net, list(scope) + [cond])
        cond_out = _union(cond_out, [cond])
        cond_scope = _unique_blob(net, f"{net.name}/workspace_loop_cond")
        while_args["cond_net"] = _do_net(f"{net.name}/do_loop_condition_net", cond_net,
                                         cond_in, cond_out, cond_scope)
        if cond not in scope:
            net.add_op("ConstantFill", [], _refs([cond]), shape=[1], dtype="bool", value=False)
        net.add_op("CreateScope", [], [cond_scope])
        inputs = _union(inputs, cond_in)
        outputs = _union(outputs, cond_out)
        scopes.append(cond_scope)
    net.add_op("While", _refs(inputs + scopes), _refs(outputs + scopes), **while_args)
    return net.ops[-1]
