"""The public Workspace: the compiled blob dictionary plus nets and operators.

The compiled core knows nothing of operators; this subclass adds Caffe2's net
map and the run methods. A :class:`~scopeops.WorkspaceStack` builds children of
their parent's class, so workspaces pushed from a ``Workspace`` can run nets too.

Nets travel with a pickled workspace as their :class:`~scopeops.NetDef`; the receiving
side builds each one the first time it is used (``get_net``, ``run_net``), so unpickling
constructs no operator, and operators keep no state across the trip.
"""

from __future__ import annotations

from typing import Any

from scopeops import _workspace
from scopeops.defs import NetDef, OperatorDef, as_netdef
from scopeops.errors import OperatorError, PickleStateError
from scopeops.ops.executor import NetExecutor

__all__ = ["Workspace"]


class Workspace(_workspace.Workspace):
    __doc__ = _workspace.Workspace.__doc__
    __slots__ = ()
    # The compiled workspace's ``_nets`` field (None until the first net) maps names to
    # NetExecutors; a NetDef entry came with a pickle and is built on first use
    # (_built_net).

    def _net_map(self) -> dict[str, NetExecutor | NetDef]:
        nets = self._nets
        if nets is None:
            nets = self._nets = {}
        return nets

    def _built_net(self, name: str) -> NetExecutor | None:
        nets = self._net_map()
        entry = nets.get(name)
        if isinstance(entry, NetDef):
            entry = NetExecutor(entry, self)   # OperatorError if it cannot be built here
            nets[name] = entry
        return entry

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle support: the compiled workspace's state and the NetDefs of the nets
        built here (rebuilt on first use after the trip)."""
        rebuild, args, core_state = super().__reduce__()
        nets = {name: entry if isinstance(entry, NetDef) else entry.netdef
                for name, entry in self._net_map().items()}
        return rebuild, args, (core_state, nets)

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict)):
            raise PickleStateError("a pickled scopeops.Workspace's state is a pair of the "
                                   "compiled workspace's state and a dict of nets")
        core_state, nets = state
        for name, netdef in nets.items():
            if not isinstance(name, str) or not isinstance(netdef, NetDef):
                raise PickleStateError(f"a pickled scopeops.Workspace's nets map names to "
                                       f"NetDefs, not {type(name).__name__} to "
                                       f"{type(netdef).__name__}")
        super().__setstate__(core_state)
        self._nets = dict(nets)

    def run_operator_once(self, op: Any) -> None:
        """Build the operator ``op`` (an OperatorDef) here and run it once."""
        if not isinstance(op, OperatorDef):
            raise TypeError(f"run_operator_once takes an OperatorDef, not {type(op).__name__}")
        executor = NetExecutor(NetDef(name=f"<{op.type} run once>", ops=[op]), self)
        executor.run()

    def create_net(self, net: Any, overwrite: bool = False) -> NetExecutor:
        """Build ``net`` (a NetDef or Net) here and keep it by name (Caffe2 ``CreateNet``)."""
        netdef = as_netdef(net)
        if not netdef.name:
            raise OperatorError("Net definition should have a name.")
        nets = self._net_map()
        if netdef.name in nets and not overwrite:
            raise OperatorError(
                f'I respectfully refuse to overwrite an existing net of the same name '
                f'"{netdef.name}", unless you explicitly specify overwrite=True.')
        executor = NetExecutor(netdef.copy(), self)   # builds fully before replacing
        nets[netdef.name] = executor
        return executor

    def get_net(self, name: str) -> NetExecutor | None:
        """The net built here under ``name``, or None."""
        if not isinstance(name, str):
            raise TypeError(f"a net name must be a str, not {type(name).__name__}")
        nets = self._nets
        if nets is None:
            return None
        entry = nets.get(name)
        if isinstance(entry, NetDef):
            return self._built_net(name)
        return entry

    def nets(self) -> list[str]:
        """Names of the nets built here."""
        return list(self._net_map())

    def remove_net(self, name: str) -> bool:
        """Forget the net ``name``; True if there was one."""
        return self._net_map().pop(name, None) is not None

    def run_net(self, name: Any) -> None:
        """Run the net built here under ``name`` (a name, NetDef or Net)."""
        if not isinstance(name, str):
            name = as_netdef(name).name
        executor = self._built_net(name)
        if executor is None:
            raise OperatorError(f"Net {name} does not exist in this workspace; "
                                f"create_net() it first")
        executor.run()

    def run_net_once(self, net: Any) -> None:
        """Build ``net`` here without keeping it, and run it once."""
        NetExecutor(as_netdef(net), self).run()


# The lookups called every step take CPython's direct call path on instances of this
# class (see _workspace.give_subclass_lookups). Subclasses of it inherit these
# descriptors, so patching a lookup here reaches their instances, as Python's rules
# say; a subclass may opt in to descriptors of its own.
_workspace.give_subclass_lookups(Workspace)
