"""Caffe2's ``net_builder``: ``NetBuilder`` and the ``ops`` helpers, with control ops.

``with NetBuilder(_use_control_ops=True) as nb:`` collects the nets built inside (``ops.X``
adds op ``X`` to the current net) and merges them into one on exit. ``ops.IfNet(cond)``,
``ops.Else()``, ``ops.WhileNet()`` and ``ops.Condition()`` open nested builders whose nets
become If and While ops (through :mod:`control_ops_util`, on scopeops' control ops). The
*lexical scope* of a builder, the blobs its branches may read and write in the outer
workspace, is its initial scope plus every blob of the nets built before it.

Builders without control ops build Caffe2 execution steps (stop blobs, loops, task
setup), which scopeops does not have: those parts raise NotImplementedError.
"""

from __future__ import annotations

from typing import Any, Iterable

from scopeops.caffe2.python import context, core
from scopeops.caffe2.python.control_ops_util import add_if_op, add_while_op

__all__ = ["NetBuilder", "Operations", "ops"]

_KIND = "NetBuilder"
_STEPS = ("Caffe2 execution steps (stop blobs, loops, task setup) are not supported by "
          "scopeops.caffe2; use NetBuilder(_use_control_ops=True) with ops.IfNet/ops.WhileNet")


class NetBuilder:
    """Collects nets (and nested control-op builders) built inside its ``with`` block."""

    def __init__(self, name: str | None = None, initial_scope: Iterable[Any] | None = None,
                 _stop_blob_required: bool = False, _stop_blob: Any = None,
                 _fullname: str | None = None, _use_control_ops: bool = False) -> None:
        parent = NetBuilder.current(required=False)
        assert not (_fullname and name), "Cannot set both _fullname and name"
        if _stop_blob_required or _stop_blob is not None:
            assert not _use_control_ops, "Stop blobs are not used with control operators"
            raise NotImplementedError(_STEPS)
        self.name = _fullname or "/".join(
            n for n in (parent.name if parent else None, name) if n)
        self._frozen = False
        self._current_net: core.Net | None = None
        self._children: list[Any] = []
        self._use_control_ops = _use_control_ops
        if parent is not None:
            parent._update_lexical_scope()
        self._init_lexical_scope = set(parent._lexical_scope) if parent else set()
        self._init_lexical_scope |= {str(b) for b in (initial_scope or [])}
        self._lexical_scope = set(self._init_lexical_scope)

    @classmethod
    def current(cls, value: Any = None, required: bool = True) -> Any:
        """The innermost active builder (``value`` if given); AssertionError when none
        is active and one is ``required``."""
        if value is not None:
            assert isinstance(value, cls), f"Wrong context type. Expected: {cls}, got {value}."
            return value
        builder = context.innermost(_KIND)
        assert builder is not None or not required, \
            f"Context {cls} is required but none is active."
        return builder

    def _update_lexical_scope(self) -> None:
        scope = set(self._init_lexical_scope)
        for child in self._children:
            if isinstance(child, core.Net):
                scope |= child.UsedBlobNames()
            elif isinstance(child, NetBuilder) and child._use_control_ops:
                scope |= child._lexical_scope
        self._lexical_scope = scope

    def _reset_children(self) -> None:
        self._current_net = None
        self._children = []
        self._lexical_scope = set(self._init_lexical_scope)

    def add(self, child: Any) -> Any:
        assert not self._frozen, f"This NetBuilder ({self.name}) has been built already."
        if self._use_control_ops:
            assert isinstance(child, core.Net) or (
                isinstance(child, NetBuilder) and child._use_control_ops), \
                "Expected Net or NetBuilder with control ops"
        self._current_net = None
        if isinstance(child, core.Net):
            self._current_net = child
        self._children.append(child)
        self._update_lexical_scope()
        return child

    def current_net(self, name: str | None = None) -> core.Net:
        """The net ops go into (a new one when there is none, or when ``name`` is given)."""
        if self._current_net is None or name is not None:
            self.add(core.Net(name))
        assert self._current_net is not None
        return self._current_net

    def freeze(self) -> None:
        for child in self._children:
            if hasattr(child, "freeze"):
                child.freeze()
        self._current_net = None
        self._frozen = True

    def get(self) -> list[Any]:
        """Freeze the builder; the nets (and builders) it holds."""
        self.freeze()
        return self._children

    def __enter__(self) -> "NetBuilder":
        context.push(_KIND, self)
        return self

    def __exit__(self, etype: Any, *args: Any) -> None:
        context.pop(_KIND, self)
        if self._use_control_ops and self._children:
            children = self._children
            self._reset_children()
            merged = NetBuilder.merge_nets(children, self._lexical_scope)
            assert merged is not None, "Expected a non-empty merge of children"
            self._children = [merged]
        self.freeze()

    @staticmethod
    def merge_nets(nets_or_builders: list[Any], outer_blob_names: set[str]) -> Any:
        """The first net with the others appended, its external outputs restricted to
        ``outer_blob_names``; None for no nets."""
        net = None
        for item in nets_or_builders:
            if isinstance(item, core.Net):
                current = item
            else:
                assert isinstance(item, NetBuilder) and item._use_control_ops, \
                    "Merging of NetBuilder supported only for control ops"
                nets = item.get()
                assert len(nets) == 1 and isinstance(nets[0], core.Net), \
                    "Invalid control op net builder"
                current = nets[0]
            if net is None:
                net = current
            else:
                net.AppendNet(current)
        if net is not None:
            proto = net.Proto()
            kept = [o for o in proto.external_output if o in outer_blob_names]
            del proto.external_output[:]
            proto.external_output.extend(kept)
        return net

    def __str__(self) -> str:
        return self.name or "Un-named NetBuilder"


class Operations:
    """``ops``: operators added to the current builder's net, and the control builders."""

    def net(self, net: Any = None, name: str | None = None) -> core.Net:
        assert not (net and name), "Cannot provide both `net` and `name`."
        if net is not None:
            NetBuilder.current().add(net)
            result: core.Net = net
            return result
        result = NetBuilder.current().current_net(name=name)
        return result

    def __getattr__(self, op_type: str) -> Any:
        if op_type.startswith("__"):
            raise AttributeError(op_type)
        if NetBuilder.current(required=False) is None:
            raise AttributeError("No active NetBuilder.")
        return getattr(self.net(), op_type)

    def IfNet(self, cond: Any, name: str | None = None) -> "_RunIfNet":
        """``with ops.IfNet(cond):`` builds the then branch of an If op on ``cond``."""
        result: _RunIfNet = NetBuilder.current().add(_RunIfNet(cond, name=name))
        return result

    def Else(self, name: str | None = None) -> "_RunElseNet":
        """``with ops.Else():`` right after an IfNet builds its else branch."""
        return _RunElseNet(name=name)

    def WhileNet(self, name: str | None = None) -> "_RunWhileNet":
        """``with ops.WhileNet():`` builds a While op: a Condition, then the body."""
        result: _RunWhileNet = NetBuilder.current().add(_RunWhileNet(name=name))
        return result

    def Condition(self, name: str | None = None) -> "_RunWhileCondition":
        """``with ops.Condition():`` inside a WhileNet: the ops computing the condition
        (the last op's single output)."""
        assert isinstance(NetBuilder.current(), _RunWhileNet), \
            "Use of Condition outside of WhileNet"
        return _RunWhileCondition(name=name)

    def _steps(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(_STEPS)

    stop = stop_if = loop = stop_guard = If = task_group = _steps
    task_init = task_exit = task_instance_init = task_instance_exit = _steps
    local_init = local_exit = task_reporter = local_reporter = _steps


ops = Operations()


class _RunIfNet(NetBuilder):
    def __init__(self, cond_blob: Any = None, name: str | None = None) -> None:
        NetBuilder.__init__(self, name=name, _use_control_ops=True)
        assert cond_blob, "Conditional blob is not specified for an If net"
        self._cond_blob = cond_blob
        self._then_net: core.Net | None = None
        self._else_net: core.Net | None = None

    def __exit__(self, etype: Any, *args: Any) -> None:
        if etype is None:
            then_nets = self._children
            self._reset_children()
            self._then_net = NetBuilder.merge_nets(then_nets, self._lexical_scope)
            if self._then_net is None:
                self._then_net = core.Net("empty_then_net")
            if_net = core.Net(self.name + "/if_net")
            add_if_op(if_net, self._cond_blob, self._lexical_scope, self._then_net,
                      self._else_net)
            self._current_net = if_net
            self._children = [if_net]
        NetBuilder.__exit__(self, etype, *args)


class _RunElseNet(NetBuilder):
    def __init__(self, name: str | None = None) -> None:
        NetBuilder.__init__(self, name=name, _use_control_ops=True)
        parent = NetBuilder.current(required=False)
        assert parent is not None and parent._children and isinstance(
            parent._children[-1], _RunIfNet), "Invalid use of Else builder"
        self._if_builder: _RunIfNet = parent._children[-1]

    def __exit__(self, etype: Any, *args: Any) -> None:
        if etype is None:
            else_nets = self._children
            self._reset_children()
            else_net = NetBuilder.merge_nets(else_nets, self._lexical_scope)
            if else_net is not None:
                if_else_net = core.Net(self.name + "/if_else_net")
                add_if_op(if_else_net, self._if_builder._cond_blob, self._lexical_scope,
                          self._if_builder._then_net, else_net)
                self._if_builder._current_net = if_else_net
                self._if_builder._children = [if_else_net]
        NetBuilder.__exit__(self, etype, *args)


class _RunWhileNet(NetBuilder):
    def __init__(self, name: str | None = None) -> None:
        NetBuilder.__init__(self, name=name, _use_control_ops=True)
        self._cond_builder: _RunWhileCondition | None = None

    def __exit__(self, etype: Any, *args: Any) -> None:
        if etype is None:
            assert self._cond_builder is not None, \
                "Condition builder must be specified in While op"
            body = self._children
            self._reset_children()
            body_net = NetBuilder.merge_nets(body, self._lexical_scope)
            if body_net is None:
                body_net = core.Net("empty_loop_body_net")
            while_net = core.Net(self.name + "/while_net")
            add_while_op(while_net, self._cond_builder._cond_blob, self._lexical_scope,
                         body_net, self._cond_builder._cond_net)
            self._current_net = while_net
            self._children = [while_net]
        NetBuilder.__exit__(self, etype, *args)


class _RunWhileCondition(NetBuilder):
    def __init__(self, name: str | None = None) -> None:
        NetBuilder.__init__(self, name=name, _use_control_ops=True)
        parent = NetBuilder.current(required=False)
        assert isinstance(parent, _RunWhileNet), "Invalid use of loop condition builder"
        assert parent._cond_builder is None, "Multiple loop condition builders specified"
        assert not parent._children, "Condition definition must be specified before the " \
            "loop's body"
        parent._cond_builder = self
        self._cond_blob: Any = None
        self._cond_net: core.Net | None = None

    def __exit__(self, etype: Any, *args: Any) -> None:
        if etype is None:
            body = self._children
            self._reset_children()
            self._cond_net = NetBuilder.merge_nets(body, self._lexical_scope)
            assert self._cond_net is not None, "Invalid loop condition specified"
            proto = self._cond_net.Proto()
            assert len(proto.op) > 0, "Invalid condition net"
            assert len(proto.op[-1].output) == 1, "Invalid condition net"
            self._cond_blob = core.BlobReference(proto.op[-1].output[0])
            self._reset_children()
        NetBuilder.__exit__(self, etype, *args)
