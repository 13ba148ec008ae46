"""The task state store as the provider uses it: ids kept per request, and only read back for the same request."""

from __future__ import annotations

from airflow_provider_cometflux.state import StateStore, fingerprint
from tests.unit.fakes import FakeStore, context

MODEL = "black-forest-labs/flux-schnell"


def test_the_fingerprint_depends_on_the_model_and_every_input_not_their_key_order():
    base = fingerprint(MODEL, [{"prompt": "a", "seed": 1}])
    assert fingerprint(MODEL, [{"seed": 1, "prompt": "a"}]) == base
    assert fingerprint(MODEL, [{"prompt": "a", "seed": 2}]) != base
    assert fingerprint("black-forest-labs/flux-dev", [{"prompt": "a", "seed": 1}]) != base
    assert fingerprint(MODEL, [{"prompt": "a", "seed": 1}, {"prompt": "b"}]) != base


def test_saved_ids_are_read_back_for_the_same_request():
    store = FakeStore()
    StateStore(context(store), "key", "r1").save(["p1", None])
    assert StateStore(context(store), "key", "r1").load(2) == ["p1", None]


def test_another_request_another_count_or_a_mangled_value_reads_nothing():
    store = FakeStore()
    StateStore(context(store), "key", "r1").save(["p1", "p2"])
    assert StateStore(context(store), "key", "r2").load(2) is None
    assert StateStore(context(store), "key", "r1").load(3) is None
    store.values["key"] = {"request": "r1", "prediction_ids": ["p1", 7]}
    assert StateStore(context(store), "key", "r1").load(2) == ["p1", None]
    store.values["key"] = "garbage"
    assert StateStore(context(store), "key", "r1").load(2) is None


def test_nothing_is_written_before_any_id_exists():
    store = FakeStore()
    StateStore(context(store), "key", "r1").save([None, None])
    assert store.writes == 0


def test_without_a_store_airflow_3_0_to_3_2_nothing_is_kept():
    state = StateStore(context(), "key", "r1")
    assert not state.available
    state.save(["p1"])
    assert state.load(1) is None


def test_reuse_decisions_are_saved_with_the_ids_for_this_request_only():
    store = FakeStore()
    saved = StateStore(context(store), "k", "req")
    saved.save([None, None], {1: {"prediction_id": "p0"}})
    assert StateStore(context(store), "k", "req").load_reused() == {1: {"prediction_id": "p0"}}
    assert StateStore(context(store), "k", "other").load_reused() == {}
    assert StateStore(context(), "k", "req").load_reused() == {}
