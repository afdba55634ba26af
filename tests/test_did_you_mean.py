"""Not-found errors suggest the closest names: blobs, operator types, variables."""

import pickle

import numpy as np
import pytest

import scopeops as so


def model_workspace():
    ws = so.Workspace()
    ws["weights"] = np.ones((2, 2))
    ws["bias"] = np.zeros(2)
    return ws


# -- blob names ------------------------------------------------------------------------------


def test_fetching_a_misspelt_blob_suggests_the_visible_name():
    with pytest.raises(so.BlobNotFoundError, match=r"Blob wieghts not in the workspace; "
                                                   r"did you mean weights\?"):
        model_workspace()["wieghts"]


def test_a_blob_not_found_error_names_the_blob_asked_for():
    with pytest.raises(so.BlobNotFoundError) as caught:
        model_workspace().fetch_blob("wieghts")
    assert caught.value.name == "wieghts"


def test_a_name_close_to_nothing_gets_no_suggestion():
    with pytest.raises(so.BlobNotFoundError) as caught:
        model_workspace()["learning_rate"]
    assert str(caught.value) == "Blob learning_rate not in the workspace"


def test_suggestions_come_from_names_visible_through_the_shared_parent_and_forwards():
    root = model_workspace()
    child = so.Workspace.from_bindings(root, {"kernel": "weights"})
    reader = so.Workspace(shared=root)
    with pytest.raises(so.BlobNotFoundError, match=r"did you mean kernel\?"):
        child["kernle"]
    with pytest.raises(so.BlobNotFoundError, match=r"did you mean bias\?"):
        reader["bais"]


def test_suggestions_are_worked_out_when_the_message_is_read():
    ws = model_workspace()
    with pytest.raises(so.BlobNotFoundError) as caught:
        ws["momentum"]
    ws["momentun"] = np.zeros(2)           # created after the error, before it is read
    assert str(caught.value).endswith("did you mean momentun?")


def test_scope_paths_shared_by_every_name_do_not_make_names_close():
    ws = so.Workspace()
    ws["model/weights"] = np.ones(2)
    with pytest.raises(so.BlobNotFoundError) as caught:
        ws["model/bias"]
    assert "did you mean" not in str(caught.value)


def test_a_pickled_not_found_error_keeps_its_message_and_name():
    with pytest.raises(so.BlobNotFoundError) as caught:
        model_workspace()["wieghts"]
    copy = pickle.loads(pickle.dumps(caught.value))
    assert type(copy) is so.BlobNotFoundError
    assert str(copy) == "Blob wieghts not in the workspace; did you mean weights?"
    assert copy.name == "wieghts"


def test_deleting_a_misspelt_local_blob_suggests_a_local_name():
    ws = model_workspace()
    with pytest.raises(so.BlobNotFoundError, match=r"local blob list; did you mean bias\?"):
        del ws["bais"]


def test_renaming_a_misspelt_local_blob_suggests_a_local_name():
    ws = model_workspace()
    with pytest.raises(so.BlobNotFoundError, match=r"did you mean weights\?"):
        ws.rename_blob("wieghts", "kernel")


def test_binding_a_misspelt_outer_blob_suggests_the_parents_name():
    stack = so.WorkspaceStack()
    with pytest.raises(so.BindingError, match=r"Invalid parent workspace blob: wieghts "
                                              r"\(bound to inner name w\); did you mean weights\?"):
        stack.push_forward_workspace(model_workspace(), {"w": "wieghts"})


def test_an_operator_reading_a_misspelt_blob_suggests_the_workspace_name():
    net = so.Net("model")
    net.Scale(["wieghts"], ["scaled"], scale=2.0)
    with pytest.raises(so.OperatorError, match=r"non-existing input blob: wieghts; "
                                               r"did you mean weights\?"):
        model_workspace().run_net_once(net)


def test_an_operator_whose_input_was_removed_suggests_the_renamed_blob():
    ws = model_workspace()
    net = so.Net("model")
    net.Scale(["weights"], ["scaled"], scale=2.0)
    ws.create_net(net)
    ws.rename_blob("weights", "weights_v2")
    with pytest.raises(so.OperatorError, match=r"input blob weights is no longer in the "
                                               r"workspace; did you mean weights_v2\?"):
        ws.run_net("model")


# -- operator types ---------------------------------------------------------------------------


def test_the_net_builder_suggests_an_operator_type_for_a_misspelt_method():
    with pytest.raises(AttributeError, match=r"'Tanhh'.*did you mean Tanh\?"):
        so.Net("model").Tanhh(["x"], ["y"])


@pytest.mark.parametrize("make", [
    lambda: so.Net("model").add_op("Tanhh", ["x"], ["y"]),
    lambda: so.create_operator("Tanhh", ["x"], ["y"]),
    lambda: so.ops.schema("Tanhh"),
    lambda: so.Workspace().run_operator_once(so.OperatorDef("Tanhh", ["x"], ["y"])),
], ids=["add_op", "create_operator", "schema", "a hand-made OperatorDef run"])
def test_every_way_to_name_an_operator_type_suggests_the_registered_one(make):
    with pytest.raises(so.OperatorError, match="Did you mean: Tanh"):
        make()


# -- variable names ---------------------------------------------------------------------------


def test_get_variable_with_reuse_on_a_misspelt_name_suggests_the_variable():
    ws = so.Workspace()
    with so.variable_scope("model", workspace=ws):
        so.get_variable("weights", (2, 2))
    with so.variable_scope("model", reuse=True, workspace=ws):
        with pytest.raises(so.VariableError,
                           match=r"Variable model/wieghts does not exist.*did you mean "
                                 r"model/weights\? If it is a new variable, set "
                                 r"reuse=so.AUTO_REUSE"):
            so.get_variable("wieghts", (2, 2))


def test_get_variable_with_reuse_on_a_new_name_keeps_tensorflows_advice():
    ws = so.Workspace()
    with so.variable_scope("model", workspace=ws):
        so.get_variable("weights", (2, 2))
    with so.variable_scope("model", reuse=True, workspace=ws):
        with pytest.raises(so.VariableError, match=r"Did you mean to set "
                                                   r"reuse=so.AUTO_REUSE in variable_scope\?"):
            so.get_variable("bias", (2,))
