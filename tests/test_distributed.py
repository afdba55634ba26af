"""scopeops.distributed on a LocalCluster of 2 worker processes, shared by the module.

DataParallel equals single-process full-batch gradient descent; replicas are built once
per worker; bad input is refused before anything runs; a worker killed mid-step loses
nothing; workspaces travel to workers and back.
"""

import io
import logging
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from distributed import Client, LocalCluster
from distributed_support import RegisterTestOperators, mlp, mlp_params, mlp_shards
from support import PACKAGE_PARENT, run_python

import scopeops as so
from scopeops.distributed import DataParallel


@pytest.fixture(scope="module")
def client():
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           dashboard_address=":0", silence_logs=logging.ERROR)
    dask_client = Client(cluster)
    dask_client.register_plugin(RegisterTestOperators())
    yield dask_client
    dask_client.close()
    cluster.close()


def full_batch_descent(net, params, shards, lr, steps):
    """The reference: the same gradient net, one process, the concatenated shards."""
    gradient = net.netdef.copy()
    so.add_gradient_ops(gradient, ["loss"])
    ws = so.Workspace()
    for name in shards[0]:
        ws[name] = np.concatenate([shard[name] for shard in shards])
    current = {name: value.copy() for name, value in params.items()}
    losses = []
    for _ in range(steps):
        for name, value in current.items():
            ws[name] = value
        if not ws.nets():
            ws.create_net(gradient)
        ws.run_net(gradient.name)
        losses.append(float(ws["loss"]))
        for name in current:
            current[name] = current[name] - lr * ws[f"{name}_grad"]
    return current, losses


def test_training_equals_single_process_full_batch_gradient_descent(client):
    params = mlp_params()
    shards = mlp_shards([5, 9, 2])                 # sizes differ; three shards, two workers
    trainer = DataParallel(client, mlp(), params, "loss", lr=0.1)
    losses = trainer.fit(shards, 4)
    expected, expected_losses = full_batch_descent(mlp(), params, shards, 0.1, 4)
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-12)
    for name, value in expected.items():
        np.testing.assert_allclose(trainer.params[name], value, rtol=1e-12, atol=1e-15)
    assert losses[-1] < losses[0]


def test_step_returns_the_loss_before_the_update_and_then_updates(client):
    params = mlp_params(dtype=np.float32)
    shards = mlp_shards([4, 6], dtype=np.float32)
    trainer = DataParallel(client, mlp(), params, "loss", lr=0.05)
    loss = trainer.step(shards)
    expected, (expected_loss,) = full_batch_descent(mlp(), params, shards, 0.05, 1)
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    for name, value in expected.items():
        np.testing.assert_allclose(trainer.params[name], value, rtol=1e-5, atol=1e-6)
        assert trainer.params[name].dtype == np.float32


def test_params_are_copies_and_the_callers_arrays_are_left_alone(client):
    params = mlp_params()
    before = {name: value.copy() for name, value in params.items()}
    trainer = DataParallel(client, mlp(), params, "loss")
    trainer.step(mlp_shards([3, 3]))
    for name, value in params.items():
        np.testing.assert_array_equal(value, before[name])
    copy = trainer.params
    copy["W1"][...] = 0
    assert np.any(trainer.params["W1"] != 0)


def test_replicas_are_built_once_per_worker_and_the_gradient_net_once(client, monkeypatch):
    made = []
    add_gradient_ops = so.add_gradient_ops
    monkeypatch.setattr(so, "add_gradient_ops",
                        lambda *a, **k: made.append(1) or add_gradient_ops(*a, **k))
    trainer = DataParallel(client, mlp(), mlp_params(), "loss")
    trainer.fit(mlp_shards([4, 4, 4, 4]), 3)
    trainer.step(mlp_shards([5, 5]))
    assert made == [1]
    builds = trainer.replica_builds()
    assert set(builds) == set(client.scheduler_info()["workers"])
    assert all(count <= 1 for count in builds.values()) and sum(builds.values()) >= 1
    trainer.close()
    assert set(trainer.replica_builds().values()) == {0}


# -- bad input: refused before anything runs, parameters untouched -----------------


def refused(client, error, match, shards=None, **changes):
    arguments = dict(net=mlp(), params=mlp_params(), loss="loss")
    arguments.update(changes)
    if shards is None:
        with pytest.raises(error, match=match):
            DataParallel(client, **arguments)
        return
    trainer = DataParallel(client, **arguments)
    before = trainer.params
    with pytest.raises(error, match=match):
        trainer.step(shards)
    with pytest.raises(error, match=match):
        trainer.fit(shards, 2)
    for name, value in trainer.params.items():
        np.testing.assert_array_equal(value, before[name])
    assert set(trainer.replica_builds().values()) == {0}     # no gradient task ran


def test_an_empty_shard_list_is_refused(client):
    refused(client, ValueError, "at least one shard", shards=[])


def test_a_shard_lacking_a_data_blob_is_refused(client):
    shards = mlp_shards([3, 3])
    del shards[1]["target"]
    refused(client, so.BlobNotFoundError, "shard 1 lacks data blob.* target", shards=shards)


def test_a_shard_holding_a_blob_the_net_does_not_read_is_refused(client):
    shards = mlp_shards([3, 3])
    shards[0]["targte"] = shards[0]["target"]
    refused(client, ValueError, "shard 0 holds targte", shards=shards)


def test_rows_that_disagree_within_a_shard_are_refused(client):
    shards = mlp_shards([3, 3])
    shards[1]["target"] = shards[1]["target"][:2]
    refused(client, ValueError, "shard 1 disagrees on its rows", shards=shards)


def test_shards_whose_rows_differ_in_shape_or_dtype_are_refused(client):
    shards = mlp_shards([3, 3])
    shards[1]["x"] = np.zeros((3, 4))
    refused(client, ValueError, "data blob x has .* in shard 1", shards=shards)
    shards[1]["x"] = np.zeros((3, 3), np.float32)
    refused(client, ValueError, "data blob x has float32", shards=shards)


def test_a_loss_the_net_does_not_write_is_refused(client):
    refused(client, so.BlobNotFoundError, "writes no blob los", loss="los")


def test_a_parameter_the_net_does_not_read_is_refused(client):
    params = dict(mlp_params(), W3=np.zeros(2))
    refused(client, so.BlobNotFoundError, "reads no parameter 'W3'", params=params)


def test_a_parameter_no_gradient_reaches_is_refused(client):
    net = mlp()
    net.add_external_inputs("unused")
    refused(client, so.GradientError, "no gradient reaches parameter.* unused",
            net=net, params=dict(mlp_params(), unused=np.zeros(2)))


def test_integer_parameters_and_a_bad_learning_rate_are_refused(client):
    refused(client, TypeError, "float16, float32 or float64",
            params=dict(mlp_params(), b2=np.zeros(1, np.int64)))
    refused(client, TypeError, "finite number", lr=float("nan"))


def test_a_parameter_of_the_wrong_shape_fails_on_the_worker_and_changes_nothing(client):
    params = dict(mlp_params(), W2=np.zeros((1, 5)))     # the hidden layer has 8 units
    trainer = DataParallel(client, mlp(), params, "loss")
    with pytest.raises(so.OperatorError, match="FC"):
        trainer.step(mlp_shards([3, 3]))
    np.testing.assert_array_equal(trainer.params["W2"], np.zeros((1, 5)))


# -- a worker killed mid-step --------------------------------------------------------


def test_a_worker_killed_mid_step_loses_nothing(client, tmp_path):
    params = mlp_params(seed=3)
    shards = mlp_shards([6, 7, 5], seed=4)         # the 7-row shard kills its worker once
    flag = tmp_path / "killed"
    assert not flag.exists()
    survivor = DataParallel(client, mlp("killing", flag, 7), params, "loss", lr=0.1)
    losses = survivor.fit(shards, 3)
    assert flag.exists()                           # a worker process did die, in step 1
    reference = DataParallel(client, mlp("killing", flag, 7), params, "loss", lr=0.1)
    assert reference.fit(shards, 3) == losses      # the flag stays: this run loses no one
    for name, value in reference.params.items():
        np.testing.assert_array_equal(survivor.params[name], value)
    client.wait_for_workers(2, timeout=30)         # the nanny brought the worker back


def test_a_large_shard_travels_in_its_task_without_dasks_large_graph_warning(client):
    shards = mlp_shards([480_000, 3])                 # 15 MiB of x and target
    trainer = DataParallel(client, mlp(), mlp_params(), "loss")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.step(shards)
    assert not [w for w in caught if "large graph" in str(w.message)]


# -- progress ------------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_fit_is_quiet_when_stderr_is_not_a_terminal(client, monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    DataParallel(client, mlp(), mlp_params(), "loss").fit(mlp_shards([3, 3]), 2)
    assert stream.getvalue() == ""


def test_fit_shows_a_progress_bar_on_a_terminal_unless_told_not_to(client, monkeypatch):
    stream = Terminal()
    monkeypatch.setattr(sys, "stderr", stream)
    trainer = DataParallel(client, mlp(), mlp_params(), "loss")
    trainer.fit(mlp_shards([3, 3]), 2)
    assert "training" in stream.getvalue() and "2/2" in stream.getvalue()
    stream.truncate(0)
    stream.seek(0)
    trainer.fit(mlp_shards([3, 3]), 2, progress=False)
    assert stream.getvalue() == ""


# -- workspaces travel to workers and back -------------------------------------------


def run_double(ws):
    ws.run_net("double")
    return ws


def test_a_workspace_goes_to_a_worker_runs_its_net_and_comes_back(client):
    root = so.Workspace()
    root.create_blob("x").tensor((1 << 18,), np.float32)[...] = 1.5
    stack = so.WorkspaceStack()
    root["scope"] = stack
    child = stack.push_forward_workspace(root, {"x_in": "x"})
    child["note"] = "child"
    net = so.Net("double")
    net.Add(["x", "x"], ["y"])
    root.create_net(net)
    back = client.submit(run_double, root, pure=False).result()
    np.testing.assert_array_equal(back["y"], np.full(1 << 18, 3.0, np.float32))
    top = back["scope"].top
    assert top["note"] == "child" and top.get_blob("x_in") is back.get_blob("x")
    assert root.get_blob("y").is_empty()       # the original stayed as it was


def test_independent_pipelines_each_build_their_own_workspaces(client):
    results = client.gather(client.map(_pipeline, [1.0, 2.0, 3.0], pure=False))
    assert results == [2.0, 4.0, 6.0]


def _pipeline(scale):
    ws = so.Workspace()
    ws["x"] = np.array([scale])
    ws.run_operator_once(so.create_operator("Add", ["x", "x"], ["y"]))
    return float(ws["y"][0])


# -- without the extra ---------------------------------------------------------------


def test_importing_without_dask_says_what_to_install():
    result = run_python("""
        import sys
        sys.modules["distributed"] = None      # as if Dask were not installed
        try:
            import scopeops.distributed
        except ImportError as exc:
            print(exc)
    """)
    assert result.returncode == 0, result.stderr
    assert 'pip install "scopeops[distributed]"' in result.stdout


def test_the_demo_command_without_dask_says_how_to_get_it():
    result = run_python("""
        import sys
        sys.modules["distributed"] = None      # as if Dask were not installed
        from scopeops.cli import main
        sys.exit(main(["demo", "--workers", "2", "--steps", "1"]))
    """)
    assert result.returncode == 2
    assert 'pip install "scopeops[distributed]"' in result.stderr


# -- the demo on a cluster of its own ------------------------------------------------


def test_the_demo_trains_data_parallel_on_workers(tmp_path):
    env = {**os.environ, "PYTHONPATH": PACKAGE_PARENT}
    result = subprocess.run([sys.executable, "-m", "scopeops", "demo", "--workers", "2",
                             "--steps", "12", "--out", "dask-demo"], capture_output=True,
                            text=True, cwd=tmp_path, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Dask cluster of 2 worker process(es)" in result.stdout
    losses = [float(line.split()[-1]) for line in result.stdout.splitlines()
              if line.strip().startswith("step")]
    assert losses[-1] < losses[0]
    assert "held-out R^2 after training" in result.stdout
