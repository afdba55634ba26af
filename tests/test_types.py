"""Known types: TypeMeta, type_meta() resolution, the registry."""

import numpy as np
import pytest

import scopeops as so

ELEMENT_TYPES = [
    ("bool", np.bool_, 1),
    ("int8", np.int8, 1),
    ("int16", np.int16, 2),
    ("int32", np.int32, 4),
    ("int64", np.int64, 8),
    ("uint8", np.uint8, 1),
    ("uint16", np.uint16, 2),
    ("uint32", np.uint32, 4),
    ("uint64", np.uint64, 8),
    ("float16", np.float16, 2),
    ("float32", np.float32, 4),
    ("float64", np.float64, 8),
    ("complex64", np.complex64, 8),
    ("complex128", np.complex128, 16),
]


# --- TypeMeta -------------------------------------------------------------------------------


def test_type_meta_has_str_name_int_id_and_int_itemsize():
    meta = so.type_meta(np.float32)
    assert isinstance(meta, so.TypeMeta)
    assert isinstance(meta.name, str)
    assert isinstance(meta.id, int)
    assert isinstance(meta.itemsize, int)


@pytest.mark.parametrize("name, scalar_type, itemsize", ELEMENT_TYPES)
def test_element_type_meta_has_dtype_name_and_itemsize(name, scalar_type, itemsize):
    meta = so.type_meta(scalar_type)
    assert meta.name == name
    assert meta.itemsize == itemsize


def test_class_meta_has_itemsize_zero():
    class Payload:
        pass

    assert so.type_meta(Payload).itemsize == 0


def test_tensor_meta_has_itemsize_zero():
    assert so.type_meta(np.ndarray).itemsize == 0


def test_type_meta_id_is_stable_across_lookups():
    class Payload:
        pass

    first = so.type_meta(Payload)
    assert so.type_meta(Payload).id == first.id
    assert so.type_meta(Payload()).id == first.id


def test_distinct_types_have_distinct_ids():
    ids = [so.type_meta(scalar_type).id for _, scalar_type, _ in ELEMENT_TYPES]
    ids += [so.type_meta(np.ndarray).id, so.type_meta(str).id, so.type_meta(bytes).id]
    assert len(set(ids)) == len(ids)


def test_metas_of_same_type_from_different_spellings_are_equal():
    assert so.type_meta(np.float32) == so.type_meta(np.dtype("float32"))
    assert so.type_meta("float32") == so.type_meta(np.float32)


def test_metas_of_different_types_are_not_equal():
    assert so.type_meta(np.float32) != so.type_meta(np.float64)
    assert so.type_meta(np.ndarray) != so.type_meta(str)


def test_equal_metas_hash_equal_and_work_as_dict_keys():
    by_meta = {so.type_meta(np.dtype("int16")): "found"}
    assert hash(so.type_meta("int16")) == hash(so.type_meta(np.int16))
    assert by_meta[so.type_meta(np.int16)] == "found"


def test_metas_deduplicate_in_a_set_by_id():
    metas = {so.type_meta(np.int32), so.type_meta("int32"), so.type_meta(np.dtype(np.int32))}
    assert len(metas) == 1


@pytest.mark.parametrize("attribute, value", [("name", "hacked"), ("id", 12345), ("itemsize", 3)])
def test_type_meta_attributes_cannot_be_assigned(attribute, value):
    meta = so.type_meta(np.float64)
    before = (meta.name, meta.id, meta.itemsize)
    with pytest.raises(AttributeError):
        setattr(meta, attribute, value)
    assert (meta.name, meta.id, meta.itemsize) == before


def test_type_meta_rejects_new_attributes():
    meta = so.type_meta(np.float64)
    with pytest.raises(AttributeError):
        meta.extra = 1


# --- type_meta() resolution -----------------------------------------------------------------


def test_type_meta_of_a_type_meta_returns_it_unchanged():
    meta = so.type_meta(np.uint16)
    assert so.type_meta(meta) is meta


@pytest.mark.parametrize("name, scalar_type, itemsize", ELEMENT_TYPES)
def test_numpy_scalar_type_dtype_and_dtype_string_resolve_to_the_same_element_meta(
    name, scalar_type, itemsize
):
    from_scalar_type = so.type_meta(scalar_type)
    assert so.type_meta(np.dtype(scalar_type)) == from_scalar_type
    assert so.type_meta(name) == from_scalar_type


def test_ndarray_class_resolves_to_tensor_meta():
    assert so.type_meta(np.ndarray).name == "Tensor"


def test_ndarray_value_resolves_to_tensor_meta_whatever_its_dtype():
    tensor_meta = so.type_meta(np.ndarray)
    assert so.type_meta(np.zeros(3, dtype=np.float32)) == tensor_meta
    assert so.type_meta(np.zeros((2, 2), dtype=np.int8)) == tensor_meta


def test_ndarray_value_does_not_resolve_to_its_element_meta():
    assert so.type_meta(np.zeros(3, dtype=np.float32)) != so.type_meta(np.float32)


def test_workspace_stack_class_resolves_to_its_own_meta():
    meta = so.type_meta(so.WorkspaceStack)
    assert isinstance(meta, so.TypeMeta)
    assert meta != so.type_meta(so.Workspace)
    assert meta != so.type_meta(np.ndarray)


def test_workspace_stack_value_resolves_to_the_class_meta():
    assert so.type_meta(so.WorkspaceStack()) == so.type_meta(so.WorkspaceStack)


def test_user_class_resolves_to_its_own_meta():
    class Payload:
        pass

    class OtherPayload:
        pass

    assert so.type_meta(Payload) != so.type_meta(OtherPayload)


def test_user_value_resolves_to_meta_of_its_class():
    class Payload:
        pass

    assert so.type_meta(Payload()) == so.type_meta(Payload)


def test_python_int_value_resolves_to_meta_of_int_class():
    assert so.type_meta(7) == so.type_meta(int)


def test_python_int_class_is_a_class_meta_not_a_numpy_element_meta():
    # int is not a numpy scalar type, so it resolves as "any other class".
    meta = so.type_meta(int)
    assert meta.itemsize == 0
    assert meta != so.type_meta(np.int64)


def test_numpy_scalar_value_resolves_to_its_element_meta():
    assert so.type_meta(np.float32(1.5)) == so.type_meta(np.float32)


def test_bytes_value_resolves_to_bytes_meta():
    assert so.type_meta(b"raw") == so.type_meta(bytes)


# --- register_known_type / known_types ------------------------------------------------------


def test_register_known_type_returns_a_type_meta():
    class Registered:
        pass

    assert isinstance(so.register_known_type(Registered), so.TypeMeta)


def test_register_known_type_twice_returns_the_same_meta():
    class Registered:
        pass

    first = so.register_known_type(Registered)
    second = so.register_known_type(Registered)
    assert second == first
    assert second.id == first.id


def test_register_known_type_matches_type_meta_of_the_class():
    class Registered:
        pass

    meta = so.register_known_type(Registered)
    assert so.type_meta(Registered) == meta
    assert so.type_meta(Registered()) == meta


def test_register_known_type_uses_the_given_name():
    class Registered:
        pass

    meta = so.register_known_type(Registered, name="scopeops_tests.CustomName")
    assert meta.name == "scopeops_tests.CustomName"


def test_register_known_type_after_first_sight_returns_the_meta_seen_first():
    class SeenFirst:
        pass

    seen = so.type_meta(SeenFirst())
    assert so.register_known_type(SeenFirst) == seen


def test_registered_type_appears_in_known_types():
    class Registered:
        pass

    meta = so.register_known_type(Registered)
    assert meta in so.known_types()


def test_registering_again_adds_nothing_to_known_types():
    class Registered:
        pass

    so.register_known_type(Registered)
    # Compared as sets: a class the registry held weakly may be collected meanwhile.
    before = set(so.known_types())
    so.register_known_type(Registered)
    assert not set(so.known_types()) - before


def test_known_types_is_a_tuple_of_type_metas():
    known = so.known_types()
    assert isinstance(known, tuple)
    assert known
    assert all(isinstance(meta, so.TypeMeta) for meta in known)


@pytest.mark.parametrize("name, scalar_type, itemsize", ELEMENT_TYPES)
def test_known_types_contains_every_builtin_element_type(name, scalar_type, itemsize):
    assert so.type_meta(scalar_type) in so.known_types()


@pytest.mark.parametrize("pytype", [np.ndarray, str, bytes, so.WorkspaceStack])
def test_known_types_contains_builtin_class_types(pytype):
    assert so.type_meta(pytype) in so.known_types()


def test_known_types_contains_a_meta_named_tensor():
    assert "Tensor" in [meta.name for meta in so.known_types()]


def test_storing_a_value_of_an_unregistered_type_registers_it_once():
    class NeverSeen:
        pass

    before = set(so.known_types())
    blob = so.Blob()
    blob.set(NeverSeen())
    assert set(so.known_types()) - before == {blob.meta}
    blob.set(NeverSeen())
    assert set(so.known_types()) - before == {blob.meta}


def test_type_registered_on_first_sight_is_the_one_register_known_type_returns():
    class NeverSeen:
        pass

    blob = so.Blob()
    blob.set(NeverSeen())
    assert so.register_known_type(NeverSeen) == blob.meta
    assert so.type_meta(NeverSeen) == blob.meta


def test_feeding_a_workspace_registers_an_unregistered_type():
    class NeverSeen:
        pass

    ws = so.Workspace()
    ws.feed_blob("payload", NeverSeen())
    assert ws.get_blob("payload").meta in so.known_types()
    assert ws.get_blob("payload").meta == so.type_meta(NeverSeen)
