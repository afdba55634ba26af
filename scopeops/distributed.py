"""Data-parallel training on a Dask cluster (``pip install "scopeops[distributed]"``).

:class:`DataParallel` trains a net by full-batch gradient descent over data split into
shards, each shard's gradients computed on a Dask worker. The design keeps every piece of
state that correctness needs where a worker's death cannot take it:

* **Parameters live with the client.** Each step sends them inside the gradient tasks;
  the update ``p -= lr * grad`` runs on the client, after every shard has answered.
* **Shard data is recoverable.** Each shard is handed to Dask inside a task (not
  scattered), so the scheduler keeps what it needs to make it again: when the worker
  holding a shard dies, Dask rebuilds the shard on another worker and recomputes its
  gradients there, and the step completes.
* **Replicas are caches.** A worker builds one replica workspace per thread (the
  gradient net created in it once) the first time it computes gradients for this
  trainer, and reuses it, with its buffers, step after step. A new or restarted worker
  builds its own; nothing is lost with one.

Gradients are combined on the client in shard order with :func:`scopeops.accumulate`,
weighted by rows, so a step equals single-process full-batch gradient descent on the
concatenated shards (to float rounding), and a run that lost a worker ends with exactly
the parameters of a run that did not.

Everything travels by pickle between the client, the scheduler and the workers: the
scheduler and the workers need scopeops (and any module registering custom operators
the net uses) installed. Pickle is for your own processes, never for data from elsewhere
(see docs/distributed.md).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import sys
import threading
import uuid
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

import scopeops as so
from scopeops.defs import NetDef, as_netdef, external_reads_writes
from scopeops.errors import BlobNotFoundError, GradientError
from scopeops.progress import is_terminal

try:
    import distributed
except ImportError as exc:  # pragma: no cover - exercised by a subprocess test
    raise ImportError(
        f'scopeops.distributed needs Dask ({exc}); install it with '
        f'pip install "scopeops[distributed]"') from exc

__all__ = ["DataParallel"]

_FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))

# A shard handed to the cluster: its future, and the placement of its gradient tasks.
_Held = tuple[Any, dict[str, Any]]


@dataclass(frozen=True)
class _ReplicaSpec:
    """What a worker needs to build a replica: sent with every gradient task (a few KB)."""

    token: str
    gradient_net: NetDef
    params: tuple[str, ...]
    data: tuple[str, ...]
    loss: str
    grads: tuple[str, ...]         # the gradient blob of each parameter, in order


class _Replica:
    """One worker thread's workspace for a trainer: the gradient net built once, run per
    shard with the parameters and the shard's data fed by reference."""

    def __init__(self, spec: _ReplicaSpec) -> None:
        self.spec = spec
        self.workspace = so.Workspace()
        self.executor: Any = None

    def gradients(self, params: Mapping[str, np.ndarray],
                  shard: Mapping[str, np.ndarray]) -> tuple[float, dict[str, np.ndarray]]:
        spec, ws = self.spec, self.workspace
        for name in spec.params:
            ws.feed_blob(name, params[name])
        for name in spec.data:
            ws.feed_blob(name, shard[name])
        try:
            if self.executor is None:
                # Built on the first shard: operators check their inputs when built.
                self.executor = ws.create_net(spec.gradient_net)
            self.executor.run()
            loss = np.asarray(ws.fetch_blob(spec.loss))
            if loss.size != 1:
                raise ValueError(f"loss {spec.loss} has shape {loss.shape}: DataParallel "
                                 f"needs one value, the mean over the shard's rows")
            # Copies: the next shard on this thread writes into the same buffers.
            grads = {name: np.array(ws.fetch_blob(grad), copy=True)
                     for name, grad in zip(spec.params, spec.grads, strict=True)}
            return float(loss.reshape(())), grads
        finally:
            for name in spec.data:
                ws.create_blob(name).reset()   # the replica must not keep a shard alive


# Per worker process: (trainer token, thread id) -> replica, and replicas built per token.
_REPLICAS: dict[tuple[str, int], _Replica] = {}
_REPLICA_BUILDS: dict[str, int] = {}
_REPLICAS_LOCK = threading.Lock()


def _replica(spec: _ReplicaSpec) -> _Replica:
    key = (spec.token, threading.get_ident())
    replica = _REPLICAS.get(key)
    if replica is None:
        replica = _Replica(spec)
        with _REPLICAS_LOCK:
            _REPLICAS[key] = replica
            _REPLICA_BUILDS[spec.token] = _REPLICA_BUILDS.get(spec.token, 0) + 1
    return replica


def _shard_gradients(spec: _ReplicaSpec, params: Mapping[str, np.ndarray],
                     shard: Mapping[str, np.ndarray]) -> tuple[float, dict[str, np.ndarray]]:
    """The task: one shard's mean loss and the gradients of its mean, on a worker."""
    return _replica(spec).gradients(params, shard)


def _hold_shard(shard: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The task that puts a shard on a worker. Being a task, not scattered data, it can be
    run again on another worker when the one holding its result dies."""
    return shard


def _replica_builds(token: str) -> int:
    return _REPLICA_BUILDS.get(token, 0)


def _drop_replicas(token: str) -> int:
    with _REPLICAS_LOCK:
        doomed = [key for key in _REPLICAS if key[0] == token]
        for key in doomed:
            del _REPLICAS[key]
        _REPLICA_BUILDS.pop(token, None)
    return len(doomed)


def _net_inputs(netdef: NetDef) -> list[str]:
    """What the net needs from outside: its declared external inputs and every name an
    op reads before any op writes it, in first-use order."""
    reads, _ = external_reads_writes(netdef.ops)
    return list(dict.fromkeys(list(netdef.external_inputs) + reads))


class DataParallel:
    """Full-batch gradient descent over shards, each shard's gradients on a Dask worker.

    Parameters
    ----------
    client : distributed.Client
        The cluster to run on (a ``LocalCluster`` or a real one: the same code).
    net : Net or NetDef
        The forward net. Its inputs (declared external inputs, and whatever its ops read
        before writing) are the parameters plus the data blobs every shard provides.
        The gradient net is made from it once, here, with
        :func:`scopeops.add_gradient_ops`.
    params : mapping of str to numpy.ndarray
        Initial parameters (float16, float32 or float64); the trainer keeps copies.
    loss : str
        A blob the net writes: one value, the mean over the shard's rows.
    lr : float
        The learning rate of ``p -= lr * grad``.

    Raises
    ------
    BlobNotFoundError
        The net writes no ``loss``, or reads no parameter of that name.
    GradientError
        No gradient reaches a parameter from the loss (or the backward pass cannot be
        built).
    ValueError, TypeError
        Anything else malformed: no parameters, a non-float parameter, a net that writes a
        parameter or reads no data, a learning rate that is not a finite number.
    """

    def __init__(self, client: Any, net: Any, params: Mapping[str, Any], loss: str,
                 lr: float = 0.01) -> None:
        if not isinstance(client, distributed.Client):
            raise TypeError(f"client must be a distributed.Client, not {type(client).__name__}")
        netdef = as_netdef(net).copy()
        where = f"net '{netdef.name or '<unnamed>'}'"
        if not isinstance(params, Mapping) or not params:
            raise ValueError("params must be a non-empty mapping of parameter names to arrays")
        if not isinstance(loss, str) or not loss:
            raise TypeError(f"loss must be a blob name, not {loss!r}")
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr):
            raise TypeError(f"lr must be a finite number, not {lr!r}")
        written = {name for op in netdef.ops for name in op.outputs}
        if loss not in written:
            raise BlobNotFoundError(f"{where} writes no blob {loss} (the loss)")
        inputs = _net_inputs(netdef)
        copies: dict[str, np.ndarray] = {}
        for name, value in params.items():
            if not isinstance(name, str) or name not in inputs:
                raise BlobNotFoundError(f"{where} reads no parameter {name!r}; its inputs are "
                                        f"{inputs}")
            if name in written:
                raise ValueError(f"{where} writes parameter {name}: parameters change only "
                                 f"by the update")
            if not isinstance(value, np.ndarray) or value.dtype not in _FLOAT_DTYPES:
                raise TypeError(f"parameter {name} must be a float16, float32 or float64 "
                                f"array, not {_describe(value)}")
            copies[name] = np.array(value, copy=True, order="C")
        data = [name for name in inputs if name not in copies]
        if not data:
            raise ValueError(f"{where} reads no data blob: every input is a parameter")
        gradient_net = netdef.copy()
        gradient_net.name = netdef.name or "data_parallel"
        grad_of = so.add_gradient_ops(gradient_net, [loss])
        missing = [name for name in copies if name not in grad_of]
        if missing:
            raise GradientError(f"no gradient reaches parameter(s) {', '.join(missing)} from "
                                f"loss {loss} in {where}")
        self._client = client
        self._params = copies
        self._lr = float(lr)
        self._spec = _ReplicaSpec(token=uuid.uuid4().hex, gradient_net=gradient_net,
                                  params=tuple(copies), data=tuple(data), loss=loss,
                                  grads=tuple(grad_of[name] for name in copies))
        self._keys = itertools.count()

    # -- what the trainer holds ------------------------------------------------------

    @property
    def params(self) -> dict[str, np.ndarray]:
        """Copies of the current parameters."""
        return {name: value.copy() for name, value in self._params.items()}

    @property
    def data_names(self) -> list[str]:
        """The data blobs every shard provides."""
        return list(self._spec.data)

    @property
    def gradient_net(self) -> NetDef:
        """A copy of the gradient net the workers run (forward and backward ops)."""
        return self._spec.gradient_net.copy()

    @property
    def lr(self) -> float:
        return self._lr

    # -- training --------------------------------------------------------------------

    def step(self, shards: Sequence[Mapping[str, np.ndarray]]) -> float:
        """One step on ``shards``: returns the mean loss over all their rows before the
        update, then applies ``p -= lr * grad`` (``grad``: the full-batch gradient).

        ``shards`` is a list of dicts of data blobs (arrays whose first axis is rows;
        sizes may differ between shards). They are checked before anything runs: an
        empty list, a shard missing a data blob the net reads (BlobNotFoundError) or
        holding one it does not, or shapes that disagree (rows within a shard, dtype and
        trailing shape between shards) raise and leave the parameters as they were, as
        does any error while the shards are computed.
        """
        rows = self._check_shards(shards)
        # The shards' futures are released (and their data dropped) when the step ends.
        return self._step(self._hold(shards), rows)

    def fit(self, shards: Sequence[Mapping[str, np.ndarray]], steps: int, *,
            progress: bool = True) -> list[float]:
        """``steps`` steps on the same ``shards`` (sent to the cluster once); returns the
        loss of each step. A progress bar shows on a terminal (stderr), nothing otherwise
        or with ``progress=False``. Checks as :meth:`step`, before anything runs."""
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be an int >= 0, not {steps!r}")
        rows = self._check_shards(shards)
        held = self._hold(shards)
        losses: list[float] = []
        with tqdm(total=steps, desc="training", unit="step", file=sys.stderr,
                  disable=not (progress and is_terminal(sys.stderr))) as bar:
            for _ in range(steps):
                losses.append(self._step(held, rows))
                bar.set_postfix(loss=f"{losses[-1]:.5g}", refresh=False)
                bar.update()
        return losses

    def replica_builds(self) -> dict[str, int]:
        """How many replica workspaces each worker has built for this trainer (one per
        worker thread that computed gradients, however many steps ran)."""
        return dict(self._client.run(_replica_builds, self._spec.token))

    def close(self) -> None:
        """Drop this trainer's replicas on every worker (they are caches: training can
        go on after, rebuilding them)."""
        self._client.run(_drop_replicas, self._spec.token)

    def __enter__(self) -> DataParallel:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<DataParallel {self._spec.gradient_net.name!r}: params "
                f"{list(self._params)}, data {list(self._spec.data)}, lr {self._lr}>")

    # -- the steps -------------------------------------------------------------------

    def _check_shards(self, shards: Any) -> list[int]:
        """Rows of each shard; raises before anything runs when a shard is malformed."""
        if isinstance(shards, Mapping) or not isinstance(shards, Sequence):
            raise TypeError(f"shards must be a list of dicts of data blobs, "
                            f"not {type(shards).__name__}")
        if not shards:
            raise ValueError("shards is empty: a step needs at least one shard of data")
        data = self._spec.data
        rows: list[int] = []
        first: dict[str, tuple[np.dtype[Any], tuple[int, ...]]] = {}
        for k, shard in enumerate(shards):
            if not isinstance(shard, Mapping):
                raise TypeError(f"shard {k} must be a dict of data blobs, "
                                f"not {type(shard).__name__}")
            missing = [name for name in data if name not in shard]
            if missing:
                raise BlobNotFoundError(f"shard {k} lacks data blob(s) {', '.join(missing)} "
                                        f"that the net reads")
            extra = [name for name in shard if name not in data]
            if extra:
                raise ValueError(f"shard {k} holds {', '.join(map(str, extra))}, which the net "
                                 f"does not read as data (its data blobs: {list(data)})")
            shard_rows = None
            for name in data:
                value = shard[name]
                if not isinstance(value, np.ndarray):
                    raise TypeError(f"data blob {name} of shard {k} must be a numpy array, "
                                    f"not {type(value).__name__}")
                if value.ndim == 0 or value.shape[0] == 0:
                    raise ValueError(f"data blob {name} of shard {k} has no rows "
                                     f"(shape {value.shape})")
                if shard_rows is None:
                    shard_rows = value.shape[0]
                elif value.shape[0] != shard_rows:
                    raise ValueError(f"shard {k} disagrees on its rows: {name} has "
                                     f"{value.shape[0]}, {data[0]} has {shard_rows}")
                layout = (value.dtype, value.shape[1:])
                if first.setdefault(name, layout) != layout:
                    raise ValueError(f"data blob {name} has {value.dtype} rows of shape "
                                     f"{value.shape[1:]} in shard {k} but {first[name][0]} "
                                     f"rows of shape {first[name][1]} in shard 0")
            assert shard_rows is not None
            rows.append(shard_rows)
        return rows

    def _hold(self, shards: Sequence[Mapping[str, np.ndarray]]) -> list[_Held]:
        """Each shard in a task of its own, spread over the workers in turn: (its future,
        where its gradients are to be computed)."""
        workers = sorted(self._client.scheduler_info().get("workers", {}))
        held = []
        with _data_in_tasks():
            for k, shard in enumerate(shards):
                # Loose: when that worker is gone, anywhere will do.
                placement = {"workers": [workers[k % len(workers)]],
                             "allow_other_workers": True} if workers else {}
                future = self._client.submit(
                    _hold_shard, {name: shard[name] for name in self._spec.data},
                    key=f"scopeops-shard-{self._spec.token}-{next(self._keys)}", **placement)
                held.append((future, placement))
        return held

    def _step(self, held: list[_Held], rows: list[int]) -> float:
        client = self._client
        with _data_in_tasks():
            # Each shard's gradients where the shard is: the scheduler would otherwise
            # sometimes move a shard to the other worker, at a copy per step.
            tasks = [client.submit(_shard_gradients, self._spec, self._params, shard,
                                   key=f"scopeops-gradients-{self._spec.token}-"
                                       f"{next(self._keys)}", **placement)
                     for shard, placement in held]
        # Released when this returns or raises (Dask then stops what is still queued); an
        # explicit cancel would cost a round trip to the scheduler on every step.
        results = client.gather(tasks)
        # Every answer is checked before the parameters change.
        for k, (_, grads) in enumerate(results):
            for name, param in self._params.items():
                grad = grads[name]
                if grad.dtype != param.dtype or grad.shape != param.shape:
                    raise ValueError(f"the gradient of {name} from shard {k} is "
                                     f"{grad.dtype}{list(grad.shape)}, the parameter "
                                     f"{param.dtype}{list(param.shape)}")
        total = sum(rows)
        mean_loss = 0.0
        accumulated = {name: np.zeros_like(param) for name, param in self._params.items()}
        for (loss, grads), shard_rows in zip(results, rows, strict=True):   # in shard order
            weight = shard_rows / total
            mean_loss += weight * loss
            for name, accumulator in accumulated.items():
                so.accumulate(accumulator, grads[name], weight)
        for name, param in self._params.items():
            so.accumulate(param, accumulated[name], -self._lr)
        return mean_loss


@contextlib.contextmanager
def _data_in_tasks() -> Iterator[None]:
    """Shards and parameters go inside their tasks on purpose, so that Dask can run a task
    again elsewhere; its advice for a large graph (scatter the data, pass futures) would
    leave nothing to rebuild a lost shard from, so that warning is not shown."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Sending large graph", UserWarning)
        yield


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} array"
    return f"a {type(value).__name__}"

