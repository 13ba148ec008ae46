"""``@task.cometflux``, fast: tasks built by Airflow's TaskFlow from the registered decorator, run against the
simulator (real ``airflow dags test`` runs are in tests/integration/test_decorator.py)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import DAG, task

from airflow_provider_cometflux.completion import XCOM_PREDICTION, XCOM_PREDICTION_ID
from airflow_provider_cometflux.decorators.cometflux import (
    XCOM_MODEL_INPUT,
    CometFluxDecoratedOperator,
    cometflux_task,
)
from airflow_provider_cometflux.exceptions import AirflowFailException, CometFluxInputError
from airflow_provider_cometflux.triggers.prediction import CometFluxPredictionTrigger
from tests.unit.fakes import context, first_event, task_deferred

FAST = {"poll_interval": 0.1, "deferrable": False}


def built(function: Any, *args: Any, **kwargs: Any) -> CometFluxDecoratedOperator:
    """The operator Airflow builds when the decorated ``function`` is called in a DAG."""
    with DAG("decorated", schedule=None, start_date=datetime(2026, 1, 1)):
        op = function(*args, **kwargs).operator
    assert isinstance(op, CometFluxDecoratedOperator)
    return op


def test_task_cometflux_is_registered_through_the_provider_info():
    assert task.cometflux is cometflux_task


@pytest.mark.cometapi_simulator(run_seconds=0.1)
def test_a_returned_prompt_is_merged_into_the_input_defaults(cometapi_connection):
    @task.cometflux(input={"num_outputs": 2, "seed": 7}, **FAST)
    def draw(city: str, style: str = "watercolour") -> str:
        return f"{city} at dawn, {style}"

    ctx = context()
    urls = built(draw, "Lisbon", style="ink").execute(ctx)
    assert len(urls) == 2 and all(u.startswith(cometapi_connection.base_url) for u in urls)
    expected = {"num_outputs": 2, "seed": 7, "prompt": "Lisbon at dawn, ink"}
    assert ctx["ti"].xcoms[XCOM_PREDICTION]["input"] == expected
    assert ctx["ti"].xcoms[XCOM_MODEL_INPUT] == expected
    (sent,) = cometapi_connection.predictions.values()
    assert sent["input"] == expected


@pytest.mark.cometapi_simulator(run_seconds=0.1)
def test_a_returned_model_input_wins_over_the_defaults(cometapi_connection):
    @task.cometflux(input={"aspect_ratio": "1:1", "seed": 1}, **FAST)
    def draw(row: dict[str, Any]) -> dict[str, Any]:  # a dict hint does not unroll the result (multiple_outputs)
        return {"prompt": f"a poster of {row['city']}", "seed": row["seed"]}

    op = built(draw, {"city": "Oslo", "seed": 99})
    assert op.multiple_outputs is False
    ctx = context()
    (url,) = op.execute(ctx)
    (sent,) = cometapi_connection.predictions.values()
    assert sent["input"] == {"aspect_ratio": "1:1", "seed": 99, "prompt": "a poster of Oslo"}
    assert url in sent["output"]


@pytest.mark.parametrize(
    ("returned", "shown"),
    [
        (None, "None (NoneType)"),
        (42, "42 (int)"),
        (["a cat"], "['a cat'] (list)"),
        ("", "'' (str)"),
        ("   ", "'   ' (str)"),
        (b"a cat", "b'a cat' (bytes)"),
        ({"seed": 1, "aspect_ratio": "1:1"}, "a dict without 'prompt' (keys: ['aspect_ratio', 'seed'])"),
    ],
)
def test_anything_else_fails_before_any_request_naming_value_type_and_what_is_allowed(
    cometapi_connection, returned, shown
):
    @task.cometflux(**FAST)
    def draw() -> Any:
        return returned

    with pytest.raises(CometFluxInputError) as caught:
        built(draw).execute(context())
    message = str(caught.value)
    assert f"@task.cometflux function 'draw' returned {shown}" in message
    assert "expected a prompt (a non-empty str) or a model input (a dict with a 'prompt' key)" in message
    assert isinstance(caught.value, AirflowFailException)  # fails without retries
    assert cometapi_connection.stats["creates"] == 0


def test_a_returned_input_the_model_refuses_fails_before_any_request(cometapi_connection):
    @task.cometflux(**FAST)
    def draw() -> dict[str, Any]:
        return {"prompt": "a cat", "aspect_ratio": "7:5"}

    with pytest.raises(CometFluxInputError, match=r"input\.aspect_ratio: '7:5' is not allowed"):
        built(draw).execute(context())
    assert cometapi_connection.stats["creates"] == 0


@pytest.mark.cometapi_simulator(run_seconds=0.1, validate_input=False)
def test_unchecked_inputs_reach_the_service_with_a_warning(cometapi_connection, caplog):
    @task.cometflux(unchecked_inputs=["aspect_ratio"], **FAST)
    def draw() -> dict[str, Any]:
        return {"prompt": "a cat", "aspect_ratio": "7:5"}

    with caplog.at_level("WARNING", logger="airflow_provider_cometflux.models"):
        assert built(draw).execute(context())
    assert "input.aspect_ratio: '7:5' is not allowed" in caplog.text
    (sent,) = cometapi_connection.predictions.values()
    assert sent["input"]["aspect_ratio"] == "7:5"


@pytest.mark.cometapi_simulator(run_seconds=0.3)
def test_deferred_task_resumes_in_a_fresh_operator_and_records_the_returned_input(cometapi_connection, tmp_path):
    @task.cometflux(
        input={"output_format": "png"}, output_path=tmp_path.as_uri(), deferrable=True, defer_after=0, poll_interval=0.1
    )
    def draw(city: str) -> dict[str, Any]:
        return {"prompt": f"{city} by night", "num_outputs": 2}

    ctx = context()
    with pytest.raises(task_deferred()) as deferred:
        built(draw, "Kyoto").execute(ctx)
    trigger = deferred.value.trigger
    assert isinstance(trigger, CometFluxPredictionTrigger)
    assert deferred.value.method_name == "execute_complete"
    event = asyncio.run(first_event(trigger))

    # Airflow resumes a deferred task in a new process: the operator is built again and the function not rerun.
    uris = built(draw, "Kyoto").execute_complete(ctx, event)
    pid = ctx["ti"].xcoms[XCOM_PREDICTION_ID]
    assert [Path(u).name for u in uris] == [f"{pid}-0.png", f"{pid}-1.png"]
    assert (tmp_path / f"{pid}-0.png").read_bytes().startswith(b"\x89PNG")
    recorded = ctx["ti"].xcoms[XCOM_PREDICTION]["input"]
    assert recorded == {"output_format": "png", "prompt": "Kyoto by night", "num_outputs": 2}
    assert cometapi_connection.stats["created"] == 1


@pytest.mark.cometapi_simulator(run_seconds=0.1)
def test_function_gets_context_values_and_partial_arguments(cometapi_connection):
    @task.cometflux(**FAST)
    def draw(subject: str, style: str, ti: Any = None) -> str:
        return f"{subject}, {style}, for {ti.task_id}"

    with DAG("mapped", schedule=None, start_date=datetime(2026, 1, 1)):
        mapped = draw.partial(style="linocut").expand(subject=["a fox", "an owl"]).operator
        single = draw.override(task_id="one")("a hare", "pastel").operator
    assert mapped.operator_class is CometFluxDecoratedOperator
    assert mapped.multiple_outputs is False
    assert mapped.partial_kwargs["op_kwargs"] == {"style": "linocut"}
    assert single.execute(context()) and cometapi_connection.predictions
    (sent,) = cometapi_connection.predictions.values()
    assert sent["input"]["prompt"] == "a hare, pastel, for generate"  # the fake task instance's id


def test_prompt_and_multiple_outputs_are_refused_at_parse_time():
    def draw() -> str:
        return "a cat"

    with pytest.raises(CometFluxInputError, match=r"prompt: 'a dog' is not allowed in @task\.cometflux"):
        built(cometflux_task(prompt="a dog")(draw))
    with pytest.raises(CometFluxInputError, match=r"multiple_outputs: True is not allowed"):
        cometflux_task(multiple_outputs=True)


def test_operator_arguments_are_checked_at_parse_time():
    with pytest.raises(CometFluxInputError, match="timeout"):

        @task.cometflux(timeout=0)
        def draw() -> str:
            return "a cat"

        built(draw)


@pytest.mark.cometapi_simulator(run_seconds=0.1)
def test_an_asset_argument_becomes_an_inlet_as_in_any_taskflow_task(cometapi_connection):
    from airflow.sdk import Asset

    rows = Asset("file:///data/cities.csv")

    @task.cometflux(**FAST)
    def draw(source: Asset) -> str:
        return f"a map drawn from {source.uri}"

    op = built(draw, rows)
    assert len(op.execute(context())) == 1
    assert rows in op.inlets


@pytest.mark.cometapi_simulator(run_seconds=0.2)
def test_reuse_path_serves_a_second_run_even_after_a_deferred_first(cometapi_connection, tmp_path):
    """A deferred first run keys the index by the input as sent (read back after the deferral)."""
    image = tmp_path / "ref.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + b"ref" * 50)

    def draw_task(run: str, **options: Any) -> Any:
        @task.cometflux(
            model="black-forest-labs/flux-dev",
            output_path=str(tmp_path / run),
            reuse_path=str(tmp_path / "index"),
            poll_interval=0.1,
            **options,
        )
        def draw(seed: int) -> dict[str, Any]:
            return {"prompt": "a kite", "seed": seed, "image": str(image)}

        return draw

    ctx = context()
    first = built(draw_task("first", deferrable=True, defer_after=0), 3)
    with pytest.raises(task_deferred()) as deferred:
        first.execute(ctx)
    event = asyncio.run(first_event(deferred.value.trigger))
    resumed = built(draw_task("first", deferrable=True, defer_after=0), 3)
    resumed.execute_complete(ctx, event)
    assert len(list((tmp_path / "index").glob("*.json"))) == 1
    again = context()
    uris = built(draw_task("second", deferrable=False), 3).execute(again)
    assert cometapi_connection.stats["created"] == 1
    assert again["ti"].xcoms["cost"] == {"usd": 0.0, "images": 1, "predictions": 1, "reused": 1}
    assert [Path(u).name for u in uris] == [f"{event['prediction_id']}-0.webp"]
