"""``scopeops demo``: a real pipeline, end to end, on data it makes itself.

A small recurrent network learns to imitate a random "teacher" RNN: each input
is a sequence of feature vectors and the target is a readout of the teacher's
final hidden state. Every time step runs as a ``Do`` sub-net in a workspace
pushed on a stack; ``add_gradient_ops`` builds the backward pass, whose gradient
``Do`` steps pop those workspaces again. Parameters live in variable scopes.
Each training step splits its batch into micro-batches, runs each in a workspace
pushed from the parameter workspace (parameters bound, activations local and
reused), and accumulates the gradients into the parent with ``so.accumulate``.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Mapping, TextIO

import numpy as np

import scopeops as so
from scopeops.progress import Progress

__all__ = ["DemoConfig", "DemoResult", "run_demo", "run_demo_distributed"]


@dataclass
class DemoConfig:
    steps: int = 2000
    seed: int = 0
    out: str = "scopeops-demo"
    batch: int = 128
    micro_batches: int = 4
    seq_len: int = 8
    features: int = 4
    hidden: int = 24
    learning_rate: float = 0.1
    momentum: float = 0.9
    quiet: bool = False          # no progress bar (the results are still printed)


@dataclass
class DemoResult:
    losses: list[float]
    r2_before: float
    r2_after: float
    plot: str | None
    tree: str
    picture: str | None          # workspace.svg
    seconds: float
    picture_png: str | None = None


def _teacher(cfg: DemoConfig, rng: np.random.Generator) -> tuple[Any, Any, Any]:
    wx = rng.standard_normal((cfg.hidden, cfg.features)) / np.sqrt(cfg.features)
    wh = rng.standard_normal((cfg.hidden, cfg.hidden)) * (0.9 / np.sqrt(cfg.hidden))
    wo = rng.standard_normal((1, cfg.hidden)) / np.sqrt(cfg.hidden)
    return wx, wh, wo


def _make_data(cfg: DemoConfig, n: int, teacher: Any, rng: np.random.Generator
               ) -> tuple[np.ndarray, np.ndarray]:
    wx, wh, wo = teacher
    x = rng.standard_normal((cfg.seq_len, n, cfg.features))
    h = np.zeros((n, cfg.hidden))
    for t in range(cfg.seq_len):
        h = np.tanh(x[t] @ wx.T + h @ wh.T)
    y = h @ wo.T
    return x.astype(np.float32), y.astype(np.float32)


def _create_parameters(cfg: DemoConfig, root: Any) -> dict[str, Any]:
    """The model's variables in ``root`` (``rnn/Wx`` ... ``rnn/readout/bo``), by role."""
    zeros = so.initializers.zeros()
    with so.variable_scope("rnn", workspace=root,
                           initializer=so.initializers.glorot_uniform(seed=cfg.seed)):
        params = {
            "Wx": so.get_variable("Wx", (cfg.hidden, cfg.features)),
            "Wh": so.get_variable("Wh", (cfg.hidden, cfg.hidden)),
            "bx": so.get_variable("bx", (cfg.hidden,), initializer=zeros),
            "bh": so.get_variable("bh", (cfg.hidden,), initializer=zeros),
        }
        with so.variable_scope("readout"):
            params["Wo"] = so.get_variable("Wo", (1, cfg.hidden))
            params["bo"] = so.get_variable("bo", (1,), initializer=zeros)
    return params


def _build_training_net(cfg: DemoConfig, params: Mapping[str, str]) -> so.Net:
    """Forward over seq_len Do steps, the loss, and the backward pass."""
    net = _build_forward_net(cfg, params)
    so.add_gradient_ops(net, ["loss"])
    return net


def _build_forward_net(cfg: DemoConfig, params: Mapping[str, str]) -> so.Net:
    """Forward over seq_len Do steps, and the loss."""
    step = so.Net("rnn_step")
    step.FC(["x", "Wx", "bx"], ["input_part"])
    step.FC(["h", "Wh", "bh"], ["recurrent_part"])
    step.Add(["input_part", "recurrent_part"], ["pre"])
    step.Tanh(["pre"], ["h_next"])
    net = so.Net("train")
    net.CreateScope([], ["time_scope"])
    inner = ["x", "h", "Wx", "bx", "Wh", "bh", "h_next"]
    for t in range(cfg.seq_len):
        net.Do([f"x{t}", f"h{t}", params["Wx"], params["bx"], params["Wh"], params["bh"],
                "time_scope"], [f"h{t + 1}", "time_scope"],
               net=step, inner_blobs=inner, outer_blobs_idx=list(range(7)))
    net.FC([f"h{cfg.seq_len}", params["Wo"], params["bo"]], ["prediction"])
    net.SquaredL2Distance(["prediction", "target"], ["per_example"])
    net.AveragedLoss(["per_example"], ["loss"])
    return net


def _r2(prediction: np.ndarray, target: np.ndarray) -> float:
    residual = float(((prediction - target) ** 2).sum())
    total = float(((target - target.mean()) ** 2).sum())
    return 1.0 - residual / total


def run_demo(cfg: DemoConfig, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> DemoResult:
    """Train the model, write the loss plot and the workspace picture; returns the figures."""
    if cfg.steps < 1 or cfg.batch % cfg.micro_batches:
        raise ValueError("steps must be >= 1 and batch divisible by micro_batches")
    started = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    teacher = _teacher(cfg, rng)
    x_test, y_test = _make_data(cfg, 512, teacher, rng)
    os.makedirs(cfg.out, exist_ok=True)

    root = so.Workspace()
    params = _create_parameters(cfg, root)
    names = list(params.values())
    for name in names:
        root.feed_blob(f"{name}_grad_sum", np.zeros_like(root.fetch_blob(name)))
        root.feed_blob(f"{name}/velocity", np.zeros_like(root.fetch_blob(name)))

    net = _build_training_net(cfg, params)
    bindings: dict[str, str] = {str(name): str(name) for name in names}
    micro = cfg.batch // cfg.micro_batches
    stack = so.WorkspaceStack()
    root.feed_blob("microbatch_scope", stack)   # the scope blob: pictured with the workspace

    def predict(x: np.ndarray) -> np.ndarray:
        h = np.zeros((x.shape[1], cfg.hidden), np.float32)
        p = {k: root.fetch_blob(v) for k, v in params.items()}
        for t in range(cfg.seq_len):
            h = np.tanh(x[t] @ p["Wx"].T + p["bx"] + h @ p["Wh"].T + p["bh"])
        prediction: np.ndarray = h @ p["Wo"].T + p["bo"]
        return prediction

    r2_before = _r2(predict(x_test), y_test)
    out.write(f"scopeops demo: a {cfg.seq_len}-step recurrent net, each step a Do sub-net on "
              f"a workspace stack; {cfg.micro_batches} micro-batches of {micro} per step\n")
    out.write(f"  held-out R^2 before training: {r2_before:.3f}\n")
    losses: list[float] = []
    h0 = np.zeros((micro, cfg.hidden), np.float32)
    def train_step() -> float:
        """One step: the batch in micro-batches, their gradients averaged, a momentum update."""
        x, y = _make_data(cfg, cfg.batch, teacher, rng)
        for name in names:
            root.fetch_blob(f"{name}_grad_sum")[...] = 0.0
        loss = 0.0
        for m in range(cfg.micro_batches):
            # One micro-batch in a workspace pushed from the parameters: the
            # parameters are bound, everything else (data, activations, the Do
            # steps' own stack) is local and reused by the next push.
            child = stack.push_forward_workspace(root, bindings)
            rows = slice(m * micro, (m + 1) * micro)
            for t in range(cfg.seq_len):
                child.feed_blob(f"x{t}", x[t, rows])
            child.feed_blob("h0", h0)
            child.feed_blob("target", y[rows])
            if child.get_net("train") is None:
                child.create_net(net)
            child.run_net("train")
            loss += float(child.fetch_blob("loss")) / cfg.micro_batches
            for name in names:
                so.accumulate(root.fetch_blob(f"{name}_grad_sum"),
                              child.fetch_blob(f"{name}_grad"), 1.0 / cfg.micro_batches)
            stack.pop_gradient_workspace(root)
        for name in names:
            velocity = root.fetch_blob(f"{name}/velocity")
            np.multiply(velocity, cfg.momentum, out=velocity)
            so.accumulate(velocity, root.fetch_blob(f"{name}_grad_sum"), -cfg.learning_rate)
            so.accumulate(root.fetch_blob(name), velocity)
        return loss

    # A live bar in a terminal, a line per quarter through a pipe, nothing with --quiet.
    with Progress(total=cfg.steps, desc="  training", unit="step", file=err,
                  enabled=not cfg.quiet) as bar:
        for _ in range(cfg.steps):
            losses.append(train_step())
            bar.set_postfix(loss=f"{losses[-1]:.5f}", refresh=False)
            bar.update()
    shown = sorted({0, len(losses) // 4, len(losses) // 2, 3 * len(losses) // 4, len(losses) - 1})
    for i in shown:
        out.write(f"  step {i + 1:5d}  loss {losses[i]:.5f}\n")
    r2_after = _r2(predict(x_test), y_test)
    out.write(f"  held-out R^2 after training: {r2_after:.3f}\n")

    plot = _plot(losses, os.path.join(cfg.out, "loss.png"), out)
    tree = so.viz.tree(root)
    with open(os.path.join(cfg.out, "workspace_tree.txt"), "w") as handle:
        handle.write(tree)
    pictures = _pictures(root, cfg.out, out)
    seconds = time.perf_counter() - started
    out.write(f"  done in {seconds:.1f} s; outputs in {cfg.out}/\n")
    return DemoResult(losses, r2_before, r2_after, plot, tree, pictures[0], seconds, pictures[1])


def _plot(losses: list[float], path: str, out: TextIO) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        out.write('  loss plot skipped: matplotlib is not installed '
                  '(pip install "scopeops[demo]")\n')
        return None
    figure, axes = plt.subplots(figsize=(6, 3.5), dpi=100)
    axes.plot(np.arange(1, len(losses) + 1), losses, color="tab:blue")
    axes.set_yscale("log")
    axes.set_xlabel("training step")
    axes.set_ylabel("loss (mean of ½ squared error)")
    axes.set_title("scopeops demo: training loss")
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    out.write(f"  wrote {path}\n")
    return path


def _pictures(root: Any, directory: str, out: TextIO) -> tuple[str | None, str | None]:
    """The workspace tree as workspace.svg and workspace.png: drawn by Graphviz's dot when
    it is installed, by matplotlib otherwise; gradient blobs left out, alike steps folded."""
    written = []
    for name in ("workspace.svg", "workspace.png"):
        path = os.path.join(directory, name)
        try:
            so.viz.render(root, path, hide_gradients=True)
        except so.viz.RendererNotFoundError:
            out.write('  workspace picture skipped: neither matplotlib (pip install '
                      '"scopeops[demo]") nor Graphviz\'s dot is installed; the text tree '
                      'is in workspace_tree.txt\n')
            return None, None
        written.append(path)
    out.write(f"  wrote {' and '.join(written)}\n")
    return written[0], written[1]


def run_demo_distributed(cfg: DemoConfig, workers: int, out: TextIO = sys.stdout,
                         lr: float = 0.5) -> DemoResult:
    """The demo's model trained data-parallel on a local Dask cluster of ``workers``
    processes (``scopeops demo --workers N``).

    A fixed training set of 8 batches is split into one shard per worker;
    :class:`scopeops.distributed.DataParallel` computes each shard's gradients on its
    worker, in a replica workspace built once, and every step is full-batch gradient
    descent on the whole set, plain (``p -= lr * grad``: no momentum, so a larger ``lr``
    than the in-process demo's). Writes the loss plot; the progress bar goes to stderr.
    Raises ImportError, naming the extra to install, without Dask.
    """
    import logging

    # Before Dask itself: without it, this ImportError says which extra to install.
    from scopeops.distributed import DataParallel

    if workers < 1 or cfg.steps < 1:
        raise ValueError("workers and steps must be >= 1")
    from distributed import Client, LocalCluster
    started = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    teacher = _teacher(cfg, rng)
    x_test, y_test = _make_data(cfg, 512, teacher, rng)
    x_train, y_train = _make_data(cfg, 8 * cfg.batch, teacher, rng)
    os.makedirs(cfg.out, exist_ok=True)
    root = so.Workspace()
    names = _create_parameters(cfg, root)
    net = _build_forward_net(cfg, names)
    shards = []
    for rows in np.array_split(np.arange(x_train.shape[1]), workers):
        shard = {f"x{t}": x_train[t, rows] for t in range(cfg.seq_len)}
        shard["h0"] = np.zeros((len(rows), cfg.hidden), np.float32)
        shard["target"] = y_train[rows]
        shards.append(shard)

    def r2(params: Mapping[str, np.ndarray]) -> float:
        p = {k: params[str(v)] for k, v in names.items()}
        h = np.zeros((x_test.shape[1], cfg.hidden), np.float32)
        for t in range(cfg.seq_len):
            h = np.tanh(x_test[t] @ p["Wx"].T + p["bx"] + h @ p["Wh"].T + p["bh"])
        return _r2(h @ p["Wo"].T + p["bo"], y_test)

    params = {str(name): root.fetch_blob(name) for name in names.values()}
    out.write(f"scopeops demo: a {cfg.seq_len}-step recurrent net, data-parallel on a local "
              f"Dask cluster of {workers} worker process(es); {x_train.shape[1]} rows in "
              f"{workers} shard(s), full-batch gradient descent\n")
    out.write(f"  held-out R^2 before training: {r2(params):.3f}\n")
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=":0", silence_logs=logging.ERROR) as cluster, \
            Client(cluster) as client:
        trainer = DataParallel(client, net, params, "loss", lr=lr)
        losses = trainer.fit(shards, cfg.steps, progress=not cfg.quiet)
        trained = trainer.params
    shown = sorted({0, len(losses) // 4, len(losses) // 2, 3 * len(losses) // 4, len(losses) - 1})
    for i in shown:
        out.write(f"  step {i + 1:5d}  loss {losses[i]:.5f}\n")
    r2_after = r2(trained)
    out.write(f"  held-out R^2 after training: {r2_after:.3f}\n")
    plot = _plot(losses, os.path.join(cfg.out, "loss.png"), out)
    seconds = time.perf_counter() - started
    out.write(f"  done in {seconds:.1f} s; outputs in {cfg.out}/\n")
    return DemoResult(losses, r2(params), r2_after, plot, "", None, seconds)
