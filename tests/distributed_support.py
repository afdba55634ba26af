"""What the Dask tests load on their workers: an operator that kills its own worker the
first time it sees a given shard, and the plugin that registers it on every worker
(restarted ones included). Importing this module registers the operator."""

import os

import numpy as np
from distributed.diagnostics.plugin import WorkerPlugin

import scopeops as so

KILL_ONCE = "KillWorkerOnce"

if KILL_ONCE not in so.ops.registered_operators():
    @so.ops.register(KILL_ONCE, inputs=1, outputs=1, gradient=so.ops.NO_GRADIENT,
                     args={"flag": so.ops.Arg(str, required=True),
                           "rows": so.ops.Arg(int, required=True)},
                     doc="Ends its worker process the first time it sees `rows` rows "
                         "(the file `flag` records that it did); passes otherwise.")
    class KillWorkerOnceOp(so.ops.Operator):
        def run(self):
            x = self.input(0)
            if x.shape[0] == self.arg("rows") and not os.path.exists(self.arg("flag")):
                with open(self.arg("flag"), "w") as marker:
                    marker.write(str(os.getpid()))
                os._exit(1)     # the worker dies mid-task, as a crashed machine would
            self.output(0, (1,), np.float64)[...] = 0.0


class RegisterTestOperators(WorkerPlugin):
    """Unpickling this plugin on a worker imports this module, which registers the op."""

    name = "scopeops-test-operators"

    def setup(self, worker):
        assert KILL_ONCE in so.ops.registered_operators()


def mlp(name="mlp", kill_flag=None, kill_rows=0):
    """x -> FC -> Tanh -> FC -> squared distance to target -> mean; with a kill flag, a
    KillWorkerOnce op on x (off the loss path)."""
    net = so.Net(name)
    if kill_flag is not None:
        net.add_op(KILL_ONCE, ["x"], ["x_seen"], flag=str(kill_flag), rows=kill_rows)
    net.FC(["x", "W1", "b1"], ["h"])
    net.Tanh(["h"], ["a"])
    net.FC(["a", "W2", "b2"], ["y"])
    net.SquaredL2Distance(["y", "target"], ["d"])
    net.AveragedLoss(["d"], ["loss"])
    return net


def mlp_params(features=3, hidden=8, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return {"W1": (rng.standard_normal((hidden, features)) * 0.5).astype(dtype),
            "b1": np.zeros(hidden, dtype),
            "W2": (rng.standard_normal((1, hidden)) * 0.5).astype(dtype),
            "b2": np.zeros(1, dtype)}


def mlp_shards(rows, features=3, seed=1, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((n, features)).astype(dtype),
             "target": rng.standard_normal((n, 1)).astype(dtype)} for n in rows]
