"""Caffe2's ``control_ops_util``: ``add_if_op`` and ``add_while_op``, on
:mod:`scopeops.control`.

The If/While op, the Do wrappers of its branches and their scope blobs are built by
scopeops' :func:`~scopeops.control.add_if` / :func:`~scopeops.control.add_while`
(their names and bindings are scopeops'); this module converts the ``core.Net``\\ s in and
the new ops out, and declares the op's outputs as external outputs of the outer net, as
Caffe2 does.
"""

from __future__ import annotations

from typing import Any, Iterable

from scopeops.caffe2.python import core
from scopeops.caffe2.translate import netdef_to_native, operator_to_caffe2
from scopeops.control import add_if, add_while
from scopeops.names import BlobReference as NativeBlobReference
from scopeops.net import Net as NativeNet

__all__ = ["add_if_op", "add_while_op"]


def _native_builder(net: core.Net) -> NativeNet:
    """A scopeops Net holding ``net``'s definition, to build control ops into."""
    native = NativeNet(net.Name() or "net")
    converted = netdef_to_native(net.Proto())
    native.netdef.name = net.Name()
    native.netdef.ops[:] = converted.ops
    native.netdef.external_inputs[:] = converted.external_inputs
    native.netdef.external_outputs[:] = converted.external_outputs
    return native


def _native_blob(blob: Any) -> str:
    # A BlobReference is fully scoped already; a plain name gets the current name scope.
    return NativeBlobReference(str(blob)) if isinstance(blob, core.BlobReference) else str(blob)


def _native_net(net: Any) -> Any:
    if net is None:
        return None
    if isinstance(net, core.Net):
        return netdef_to_native(net.Proto())
    return netdef_to_native(net)


def _append(net: core.Net, native: NativeNet, before: int) -> None:
    new_ops = [operator_to_caffe2(op) for op in native.netdef.ops[before:]]
    net._ExtendOps(new_ops)
    control_op = new_ops[-1]
    declared = set(net.Proto().external_output)
    net.AddExternalOutput(*[core.BlobReference(name, net) for name in control_op.output
                            if name not in declared])


def add_if_op(if_net: core.Net, cond_blob: Any, lexical_scope: Iterable[Any],
              then_net: Any, else_net: Any = None) -> None:
    """Add to ``if_net`` an If op on ``cond_blob`` running ``then_net`` or ``else_net``
    (``core.Net``\\ s or NetDefs) in their own workspaces. ``lexical_scope``: the names
    visible to the branches."""
    native = _native_builder(if_net)
    before = len(native.netdef.ops)
    add_if(native, _native_blob(cond_blob), _native_net(then_net), _native_net(else_net),
           lexical_scope=[str(b) for b in lexical_scope])
    _append(if_net, native, before)


def add_while_op(while_net: core.Net, cond_blob: Any, lexical_scope: Iterable[Any],
                 loop_body_net: Any, condition_body_net: Any = None) -> None:
    """Add to ``while_net`` a While op running ``loop_body_net`` while ``cond_blob`` is
    true, ``condition_body_net`` (which writes it) before each check."""
    native = _native_builder(while_net)
    before = len(native.netdef.ops)
    add_while(native, _native_blob(cond_blob), _native_net(loop_body_net),
              _native_net(condition_body_net), lexical_scope=[str(b) for b in lexical_scope])
    _append(while_net, native, before)
