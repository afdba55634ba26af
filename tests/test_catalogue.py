"""The operator catalogue: so.ops.catalogue() renders every registered operator's schema
(docs/custom-operators.md), and the docs page is generated from it."""

import dataclasses
import re

import pytest

import scopeops as so


@pytest.fixture
def registry_restored():
    registry = so.ops.base._REGISTRY
    saved = {name: dataclasses.replace(schema) for name, schema in registry.items()}
    yield
    registry.clear()
    registry.update(saved)


def test_the_catalogue_has_one_entry_per_registered_operator():
    text = so.ops.catalogue()
    headings = re.findall(r"^## (\S+)$", text, re.M)
    assert headings == so.ops.registered_operators()
    assert text.startswith(f"{len(headings)} operators: ")


def test_an_entry_shows_counts_in_place_rule_gradient_and_doc():
    text = so.ops.catalogue("FC")
    assert text.startswith("## FC\n")
    assert so.ops.schema("FC").doc in text
    assert "- inputs: 3" in text and "- outputs: 1" in text
    assert "- in place: " in text
    assert "- gradient: yes" in text


def test_arguments_are_listed_with_type_default_and_meaning():
    text = so.ops.catalogue("ConstantFill")
    for name, arg in so.ops.schema("ConstantFill").args.items():
        row = next(line for line in text.splitlines() if line.startswith(f"| `{name}` |"))
        assert f"`{arg.default!r}`" in row or "required" in row
        assert arg.doc.replace("|", "\\|") in row


def test_gradient_policies_are_spelled_out():
    assert "SHOULD_NOT_DO_GRADIENT" in so.ops.catalogue("CreateScope")
    assert "NO_GRADIENT" in so.ops.catalogue("ConstantFill")


def test_an_operator_registered_later_appears_with_its_schema(registry_restored):
    @so.ops.register("CatalogueProbe", inputs=(1, 3), outputs=(0, None),
                     allow_inplace={(0, 0)}, args={"k": so.ops.Arg(int, 2, doc="how many")},
                     doc="A probe.")
    class Probe(so.ops.Operator):
        def run(self):
            pass

    text = so.ops.catalogue()
    assert "## CatalogueProbe" in text
    entry = so.ops.catalogue("CatalogueProbe")
    assert "- inputs: 1 to 3" in entry and "- outputs: 0 or more" in entry
    assert "only input 0 as output 0" in entry
    assert "| `k` | int | `2` | how many |" in entry
    assert "not defined" in entry


def test_a_selection_lists_only_the_named_operators():
    text = so.ops.catalogue(["Relu", "Tanh"])
    assert re.findall(r"^## (\S+)$", text, re.M) == ["Relu", "Tanh"]


def test_an_unknown_type_is_refused_with_close_matches():
    with pytest.raises(so.OperatorError, match="Did you mean: Tanh"):
        so.ops.catalogue("Tanhh")
