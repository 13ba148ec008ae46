"""The batch operator in real ``airflow dags test`` runs against the simulator."""

from __future__ import annotations

from pathlib import Path

from tests.integration.conftest import recorded


def test_deferred_batch_keeps_every_success(dags_test, cometapi_simulator, tmp_path):
    result = dags_test("it_batch_deferred")
    assert result.returncode == 0, result.output[-4000:]
    assert result.states == {"generate": "success", "record": "success"}
    assert "new_state=deferred" in result.output
    seen = recorded(tmp_path, "it_batch_deferred")
    ids = seen["prediction_ids"]
    assert [len(uris) for uris in seen["return_value"]] == [2, 0, 2, 2]
    for uris, pid in zip(seen["return_value"], ids, strict=True):
        assert [Path(uri).name for uri in uris] == [f"{pid}-{i}.png" for i in range(len(uris))]
    (failure,) = seen["failures"]
    assert failure["index"] == 1 and "kite refused" in failure["message"]
    assert seen["predictions"][0]["input"]["prompt"] == "a red kite" and seen["predictions"][1] is None
    assert cometapi_simulator.stats["created"] == 4  # every create in the worker, once


def test_inline_batch_fails_after_recording_the_others(dags_test, cometapi_simulator, tmp_path):
    result = dags_test("it_batch_inline")
    assert result.states == {"generate": "failed", "record": "success"}
    assert "1 of 4 prompts failed" in result.output
    seen = recorded(tmp_path, "it_batch_inline")
    assert [len(urls) for urls in seen["return_value"]] == [1, 0, 1, 1]
    assert "new_state=deferred" not in result.output
    assert cometapi_simulator.stats["created"] == 4
