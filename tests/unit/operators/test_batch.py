"""The batch operator's face: argument checks, creates in the worker, inline and deferred waits, retries."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from airflow_provider_cometflux.completion import XCOM_FAILURES, XCOM_PREDICTION_IDS, XCOM_PREDICTIONS
from airflow_provider_cometflux.exceptions import CometFluxBatchFailedError, CometFluxInputError
from airflow_provider_cometflux.operators.batch import CometFluxBatchOperator
from airflow_provider_cometflux.triggers.batch import CometFluxBatchTrigger
from tests.unit.fakes import FakeStore, context, first_event, task_deferred


def batch_operator(**kwargs: Any) -> CometFluxBatchOperator:
    options: dict[str, Any] = {"task_id": "generate", "poll_interval": 0.1, "deferrable": False}
    options.update(kwargs)
    return CometFluxBatchOperator(**options)


@pytest.mark.parametrize(
    ("prompts", "fragment"),
    [("a kite", "JSON list"), (42, "expected a list"), (["ok", ""], "prompts[1]"), (["ok", 3], "prompts[1]")],
)
def test_prompts_are_checked_before_any_request(prompts, fragment):
    with pytest.raises(CometFluxInputError) as caught:
        batch_operator(prompts=prompts).execute(context())
    assert fragment in str(caught.value)


def test_every_prompts_input_is_validated_with_its_index(cometapi_connection):
    with pytest.raises(CometFluxInputError, match=r"prompts\[0\].*num_outputs"):
        batch_operator(prompts=["a", "b"], input={"num_outputs": 9}).execute(context())
    assert cometapi_connection.stats["creates"] == 0


def test_a_json_list_in_a_string_is_read():
    assert batch_operator(prompts='["a", "b"]')._prompt_list() == ["a", "b"]


@pytest.mark.parametrize(
    "bad",
    [
        {"creates_per_minute": 0},
        {"timeout": -1},
        {"defer_after": -1},
        {"download_concurrency": 0},
        {"max_output_bytes": 0},
        {"poll_interval": True},
    ],
)
def test_bad_arguments_fail_at_parse_time(bad):
    with pytest.raises(CometFluxInputError, match=next(iter(bad))):
        batch_operator(prompts=["a"], **bad)


def test_create_in_worker_is_gone():
    with pytest.raises(TypeError):
        batch_operator(prompts=["a"], create_in_worker=True)


@pytest.mark.cometapi_simulator(run_seconds=0.1)
def test_inline_batch_returns_images_per_prompt_in_order(cometapi_connection):
    ctx = context()
    result = batch_operator(prompts=["a", "b", "c"], input={"num_outputs": 2}).execute(ctx)
    assert [len(urls) for urls in result] == [2, 2, 2]
    ids = ctx["ti"].xcoms[XCOM_PREDICTION_IDS]
    for urls, pid in zip(result, ids, strict=True):
        assert all(f"/files/{pid}/" in url for url in urls)
    assert ctx["ti"].xcoms[XCOM_FAILURES] == []
    records = ctx["ti"].xcoms[XCOM_PREDICTIONS]
    assert [r["input"]["prompt"] for r in records] == ["a", "b", "c"] and records[0]["input"]["num_outputs"] == 2


@pytest.mark.cometapi_simulator(run_seconds=0.1)
def test_failed_prompts_fail_the_task_after_pushing_every_result(cometapi_connection):
    ctx = context()
    with pytest.raises(CometFluxBatchFailedError, match=r"(?s)1 of 3 prompts failed.*#1 'b \[sim:failed"):
        batch_operator(prompts=["a", "b [sim:failed]", "c"]).execute(ctx)
    xcoms = ctx["ti"].xcoms
    assert [len(urls) for urls in xcoms["return_value"]] == [1, 0, 1]
    (failure,) = xcoms[XCOM_FAILURES]
    assert failure["index"] == 1 and failure["status"] == "failed"
    assert failure["prediction_id"] == xcoms[XCOM_PREDICTION_IDS][1]
    assert xcoms[XCOM_PREDICTIONS][1] is None


@pytest.mark.cometapi_simulator(run_seconds=0.1)
def test_a_success_without_images_is_a_failed_prompt(cometapi_connection):
    ctx = context()
    result = batch_operator(prompts=["a", "b [sim:output=empty]"], fail_on_error=False).execute(ctx)
    assert [len(urls) for urls in result] == [1, 0]
    (failure,) = ctx["ti"].xcoms[XCOM_FAILURES]
    assert failure["index"] == 1 and "succeeded without any output" in failure["message"]
    assert failure["prediction_id"] in failure["message"]


@pytest.mark.cometapi_simulator(run_seconds=0.1)
def test_fail_on_error_false_returns_empty_lists_for_failures(cometapi_connection):
    ctx = context()
    result = batch_operator(prompts=["a [sim:aborted]", "b"], fail_on_error=False).execute(ctx)
    assert [len(urls) for urls in result] == [0, 1]
    assert ctx["ti"].xcoms[XCOM_FAILURES][0]["status"] == "aborted"


@pytest.mark.cometapi_simulator(run_seconds=0.1)
def test_output_path_stores_every_image(cometapi_connection, tmp_path):
    ctx = context()
    result = batch_operator(prompts=["a", "b"], input={"output_format": "png"}, output_path=str(tmp_path)).execute(ctx)
    for uris in result:
        (uri,) = uris
        assert uri.startswith("file://") and Path(uri.removeprefix("file://")).read_bytes().startswith(b"\x89PNG")
    assert [len(images) for images in ctx["ti"].xcoms["images"]] == [1, 1]


@pytest.mark.cometapi_simulator(run_seconds=0.3)
def test_deferrable_batch_creates_in_the_worker_then_defers_ids_only(cometapi_connection):
    sim = cometapi_connection
    ctx = context()
    op = batch_operator(prompts=["a", "b", "c [sim:failed]"], deferrable=True, defer_after=0)
    with pytest.raises(task_deferred()) as deferred:
        op.execute(ctx)
    trigger = deferred.value.trigger
    assert isinstance(trigger, CometFluxBatchTrigger) and all(trigger.prediction_ids)
    assert set(trigger.serialize()[1]) == {
        "prediction_ids",
        "cometapi_conn_id",
        "poll_interval",
        "end_time",
        "max_consecutive_errors",
    }
    assert sim.stats["created"] == 3  # every create happened before the deferral
    event = asyncio.run(first_event(trigger))
    resumed = batch_operator(prompts=["a", "b", "c [sim:failed]"], deferrable=True, fail_on_error=False)
    result = resumed.execute_complete(ctx, event)
    assert [len(urls) for urls in result] == [1, 1, 0]
    assert sim.stats["created"] == 3


@pytest.mark.cometapi_simulator(run_seconds=0.1)
def test_a_retry_resumes_the_earlier_attempts_predictions(cometapi_connection):
    sim = cometapi_connection
    store = FakeStore()
    first = batch_operator(prompts=["a", "b"]).execute(context(store))
    assert sim.stats["created"] == 2 and store.values["cometflux_batch"]["prediction_ids"]
    assert batch_operator(prompts=["a", "b"]).execute(context(store, try_number=2)) == first
    assert sim.stats["created"] == 2  # nothing paid twice
    batch_operator(prompts=["a", "c"]).execute(context(store))  # another batch: created anew
    assert sim.stats["created"] == 4


@pytest.mark.cometapi_simulator(run_seconds=0.2)
def test_a_deferred_retry_creates_the_failed_predictions_anew(cometapi_connection):
    """Defect: a deferred batch's retry only reported the earlier failures again, never re-created them."""
    sim = cometapi_connection
    store = FakeStore()
    prompts = ["a", "b [sim:failed]"]
    ctx = context(store)
    with pytest.raises(task_deferred()) as deferred:
        batch_operator(prompts=prompts, deferrable=True, defer_after=0).execute(ctx)
    first_ids = list(deferred.value.trigger.prediction_ids)
    event = asyncio.run(first_event(deferred.value.trigger))
    with pytest.raises(CometFluxBatchFailedError):
        batch_operator(prompts=prompts, deferrable=True).execute_complete(ctx, event)
    retry = context(store, try_number=2)
    with pytest.raises(task_deferred()) as again:
        batch_operator(prompts=prompts, deferrable=True, defer_after=0).execute(retry)
    ids = again.value.trigger.prediction_ids
    assert ids[0] == first_ids[0] and ids[1] != first_ids[1]  # the success kept, the failure created anew
    assert sim.stats["created"] == 3


@pytest.mark.cometapi_simulator(run_seconds=0.1)
def test_ids_are_saved_while_creating(cometapi_connection):
    store = FakeStore()
    batch_operator(prompts=[f"kite {i}" for i in range(5)], creates_per_minute=6000).execute(context(store))
    assert store.writes >= 5  # each id as soon as it is created (and once more at the end)
    assert all(store.values["cometflux_batch"]["prediction_ids"])


@pytest.mark.cometapi_simulator(run_seconds=0.1)
def test_a_mapped_batch_keeps_a_manifest_of_its_own(cometapi_connection, tmp_path):
    from airflow_provider_cometflux.provenance import load_manifest

    ctx = context()
    ctx["ti"].map_index = 2
    batch_operator(prompts=["a", "b"], output_path=str(tmp_path)).execute(ctx)
    assert not (tmp_path / "manifest.jsonl").exists()
    rows = load_manifest(str(tmp_path / "manifest-2.jsonl"))
    assert [row.prompt for row in rows] == ["a", "b"]


@pytest.mark.cometapi_simulator(run_seconds=0.1, validate_input=False)
def test_unchecked_inputs_send_what_a_stale_schema_refuses(cometapi_connection, caplog):
    with pytest.raises(CometFluxInputError, match=r"prompts\[0\]: input\.aspect_ratio: '7:5'"):
        batch_operator(prompts=["a", "b"], input={"aspect_ratio": "7:5"}).execute(context())
    with caplog.at_level("WARNING", logger="airflow_provider_cometflux.models"):
        results = batch_operator(
            prompts=["a", "b"], input={"aspect_ratio": "7:5"}, unchecked_inputs=["aspect_ratio"]
        ).execute(context())
    assert len(results) == 2 and caplog.text.count("unchecked_inputs overrides") == 2
    assert {p["input"]["aspect_ratio"] for p in cometapi_connection.predictions.values()} == {"7:5"}


@pytest.mark.cometapi_simulator(run_seconds=0.05)
def test_shared_reference_images_are_read_once_and_sent_with_every_prompt(cometapi_connection, tmp_path):
    (tmp_path / "ref.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 24)
    ctx = context()
    task = batch_operator(
        prompts=["a", "b"],
        model="black-forest-labs/flux-2-pro",
        input={"input_images": [[str(tmp_path / "ref.png")], []]},  # a batch's outputs, as an XComArg gives them
    )
    assert len(task.execute(ctx)) == 2
    sent = [prediction["input"]["input_images"] for prediction in cometapi_connection.predictions.values()]
    assert len(sent) == 2 and all(images[0].startswith("data:image/png;base64,") for images in sent)
    records = ctx["ti"].xcoms[XCOM_PREDICTIONS]
    assert all(record["input"]["input_images"] == [[str(tmp_path / "ref.png")], []] for record in records)


# -- spend: reuse_path, cost, max_cost_usd ------------------------------------------------------------------------


def local(uri: str) -> Path:
    return Path(urlsplit(uri).path)


def spend_operator(tmp_path: Path, run: str, prompts: list[str], **kwargs: Any) -> CometFluxBatchOperator:
    return batch_operator(
        prompts=prompts, output_path=str(tmp_path / run), reuse_path=str(tmp_path / "index"), **kwargs
    )


@pytest.mark.cometapi_simulator(run_seconds=0.1)
def test_a_second_run_reuses_every_prompt_without_any_request(cometapi_connection, tmp_path):
    sim = cometapi_connection
    first_ctx, second_ctx = context(), context()
    first = spend_operator(tmp_path, "first", ["a", "b"]).execute(first_ctx)
    assert sim.stats["created"] == 2
    assert first_ctx["ti"].xcoms["cost"] == {"usd": 0.006, "images": 2, "predictions": 2, "reused": 0}
    requests = sim.stats["requests"]
    second = spend_operator(tmp_path, "second", ["a", "b"]).execute(second_ctx)
    assert sim.stats["requests"] == requests
    assert [local(u).read_bytes() for (u,) in second] == [local(u).read_bytes() for (u,) in first]
    assert second_ctx["ti"].xcoms["cost"] == {"usd": 0.0, "images": 2, "predictions": 2, "reused": 2}
    records = second_ctx["ti"].xcoms[XCOM_PREDICTIONS]
    assert [r["reused_from"]["stored_in"] for r in records] == [(tmp_path / "first").as_uri()] * 2


@pytest.mark.cometapi_simulator(run_seconds=0.2)
def test_a_deferred_batch_creates_only_what_reuse_does_not_serve(cometapi_connection, tmp_path):
    sim = cometapi_connection
    spend_operator(tmp_path, "first", ["a"]).execute(context())
    ctx = context()
    op = spend_operator(tmp_path, "second", ["a", "b"], deferrable=True, defer_after=0)
    with pytest.raises(task_deferred()) as deferred:
        op.execute(ctx)
    trigger = deferred.value.trigger
    assert trigger.prediction_ids[0] is None and trigger.prediction_ids[1] and sim.stats["created"] == 2
    event = asyncio.run(first_event(trigger))
    result = spend_operator(tmp_path, "second", ["a", "b"], deferrable=True).execute_complete(ctx, event)
    assert [len(uris) for uris in result] == [1, 1]
    assert ctx["ti"].xcoms["cost"] == {"usd": 0.003, "images": 2, "predictions": 2, "reused": 1}


@pytest.mark.cometapi_simulator(run_seconds=0.1)
def test_a_retry_keeps_the_saved_reuse_decision_even_when_the_index_entry_is_gone(cometapi_connection, tmp_path):
    sim = cometapi_connection
    spend_operator(tmp_path, "first", ["a"]).execute(context())
    store = FakeStore()
    spend_operator(tmp_path, "second", ["a"]).execute(context(store))
    assert store.values["cometflux_batch"]["reused"]
    for entry in (tmp_path / "index").iterdir():
        entry.unlink()
    spend_operator(tmp_path, "second", ["a"]).execute(context(store, try_number=2))
    assert sim.stats["created"] == 1  # the retry did not pay


@pytest.mark.cometapi_simulator(run_seconds=0.1)
def test_a_budget_refusal_fails_before_any_request(cometapi_connection, tmp_path):
    from airflow_provider_cometflux.exceptions import CometFluxBudgetError

    with pytest.raises(CometFluxBudgetError, match=r"estimate \$0.0090 for 3 prediction\(s\).*budget \$0.0050"):
        batch_operator(prompts=["a", "b", "c"], max_cost_usd=0.005).execute(context())
    assert cometapi_connection.stats["requests"] == 0


@pytest.mark.cometapi_simulator(run_seconds=0.1)
def test_what_reuse_serves_is_not_counted_against_the_budget(cometapi_connection, tmp_path):
    spend_operator(tmp_path, "first", ["a", "b"]).execute(context())
    result = spend_operator(tmp_path, "second", ["a", "b", "c"], max_cost_usd=0.004).execute(context())
    assert [len(uris) for uris in result] == [1, 1, 1] and cometapi_connection.stats["created"] == 3


def test_reuse_path_needs_output_path_and_prices_are_checked(cometapi_connection, tmp_path):
    with pytest.raises(CometFluxInputError, match=r"reuse_path: .* needs output_path"):
        batch_operator(prompts=["a"], reuse_path=str(tmp_path)).execute(context())
    with pytest.raises(CometFluxInputError, match=r"prices\['me/x'\]"):
        batch_operator(prompts=["a"], prices={"me/x": "free"})
    assert cometapi_connection.stats["requests"] == 0


@pytest.mark.cometapi_simulator(run_seconds=0.1)
def test_task_prices_override_the_table(cometapi_connection):
    ctx = context()
    batch_operator(prompts=["a"], prices={"black-forest-labs/flux-schnell": 0.5}).execute(ctx)
    assert ctx["ti"].xcoms["cost"]["usd"] == 0.5
    assert ctx["ti"].xcoms[XCOM_PREDICTIONS][0]["cost"] == {"usd": 0.5, "images": 1}


@pytest.mark.cometapi_simulator(run_seconds=0.1)
def test_reused_in_the_folder_it_was_made_in_keeps_the_paying_runs_sidecar(cometapi_connection, tmp_path):
    from airflow_provider_cometflux.provenance import load_manifests, load_record

    ((uri,),) = spend_operator(tmp_path, "same", ["a"]).execute(context())
    again = context()
    assert spend_operator(tmp_path, "same", ["a"]).execute(again) == [[uri]]
    assert load_record(uri).cost == {"usd": 0.003, "images": 1} and load_record(uri).reused_from is None
    (row,) = load_manifests(tmp_path / "same")  # this run's manifest says it was reused
    assert row.cost == {"usd": 0.0, "images": 1} and row.reused_from["prediction_id"] == Path(uri).name.split("-")[0]
    assert cometapi_connection.stats["created"] == 1
