"""Errors that end an API call say what to do next: the model and its near miss, the connection, the next step."""

from __future__ import annotations

import json

import pytest

from airflow_provider_cometflux.exceptions import CometAPIAuthError, CometAPIError, PredictionMayExistError
from airflow_provider_cometflux.hooks.cometapi import CometAPIHook, explain, suggest_model
from airflow_provider_cometflux.models import KNOWN_MODELS
from tests.conftest import BASE, TEST_KEY

NOT_FOUND = {"detail": "The requested resource could not be found.", "status": 404}
GET = f"{BASE}/replicate/v1/predictions/p1abc"


def create_url(model: str) -> str:
    return f"{BASE}/replicate/v1/models/{model}/predictions"


@pytest.fixture
def hook(api_connection: str, fast_retries) -> CometAPIHook:
    return CometAPIHook(retry_policy=fast_retries)


def test_the_known_models_are_the_ten_flux_models():
    names = {model.split("/")[1] for model in KNOWN_MODELS}
    assert len(KNOWN_MODELS) == 10 and all(model.startswith("black-forest-labs/") for model in KNOWN_MODELS)
    assert {"flux-2-pro", "flux-2-dev", "flux-2-flex", "flux-pro", "flux-1.1-pro-ultra", "flux-schnell"} <= names


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        ("black-forest-labs/flux-schnel", "black-forest-labs/flux-schnell"),
        ("black-forest-labs/flux-1.1-pro-ultr", "black-forest-labs/flux-1.1-pro-ultra"),
        ("blackforestlabs/flux-dev", "black-forest-labs/flux-dev"),
        ("black-forest-labs/flux-kontext-mx", "black-forest-labs/flux-kontext-max"),
        ("acme/painter", None),
    ],
)
def test_suggest_model(typed, meant):
    assert suggest_model(typed) == meant


def test_a_404_on_create_names_the_model_and_suggests_the_near_miss(hook, requests_mock):
    requests_mock.post(create_url("black-forest-labs/flux-schnel"), status_code=404, json=NOT_FOUND)
    with pytest.raises(CometAPIError) as info:
        hook.create_prediction("black-forest-labs/flux-schnel", {"prompt": "a cat"})
    text = str(info.value)
    assert text.startswith("CometAPI error (HTTP 404): The requested resource could not be found.")  # the service's
    assert "the model 'black-forest-labs/flux-schnel' was not found" in text.lower()
    assert "did you mean 'black-forest-labs/flux-schnell'? Set model= to it." in text
    assert info.value.http_status == 404 and not info.value.transient
    assert requests_mock.call_count == 1


def test_a_404_on_create_without_a_near_miss_lists_the_known_models(hook, requests_mock):
    requests_mock.post(create_url("acme/painter"), status_code=404, json=NOT_FOUND)
    with pytest.raises(CometAPIError) as info:
        hook.create_prediction("acme/painter", {"prompt": "a cat"})
    text = str(info.value)
    assert "'acme/painter' was not found" in text and "did you mean" not in text
    assert all(model in text for model in KNOWN_MODELS)


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_names_the_connection_never_the_key(hook, requests_mock, status):
    message = f"Incorrect API key provided: {TEST_KEY}"
    requests_mock.get(GET, status_code=status, json={"error": {"message": message, "code": "invalid_api_key"}})
    with pytest.raises(CometAPIAuthError) as info:
        hook.get_prediction("p1abc")
    text = str(info.value)
    assert "connection 'cometapi_default'" in text and "password (API key) field" in text
    assert "Incorrect API key provided: ***" in text  # the service's text, the key redacted
    assert "prediction p1abc" in text  # the prediction id is kept
    assert TEST_KEY not in text and TEST_KEY not in repr(info.value)
    assert info.value.http_status == status


def test_another_connection_is_named(monkeypatch, requests_mock, fast_retries):
    conn = {"conn_type": "cometapi", "host": BASE, "password": TEST_KEY}
    monkeypatch.setenv("AIRFLOW_CONN_MY_FLUX", json.dumps(conn))
    requests_mock.post(create_url("black-forest-labs/flux-dev"), status_code=401, json={"error": {"message": "no"}})
    with pytest.raises(CometAPIAuthError, match="connection 'my_flux'"):
        CometAPIHook("my_flux", retry_policy=fast_retries).create_prediction(
            "black-forest-labs/flux-dev", {"prompt": ""}
        )


def test_the_service_text_stays_escaped(hook, requests_mock):
    body = {"detail": "gone\n\x1b[31mred", "status": 404}
    requests_mock.post(create_url("black-forest-labs/flux-schnel"), status_code=404, json=body)
    with pytest.raises(CometAPIError) as info:
        hook.create_prediction("black-forest-labs/flux-schnel", {"prompt": "a cat"})
    assert "gone\\n\\x1b[31mred" in str(info.value) and "\x1b" not in str(info.value)


@pytest.mark.parametrize(
    ("status", "step"),
    [
        (404, "check the prediction id"),
        (429, "requests_per_minute"),
        (503, "retry later"),
    ],
)
def test_other_errors_say_what_to_do_next(hook, requests_mock, status, step):
    requests_mock.get(GET, status_code=status, json={"detail": "nope", "status": status})
    with pytest.raises(CometAPIError) as info:
        hook.get_prediction("p1abc")
    assert step in str(info.value) and "nope" in str(info.value) and "prediction p1abc" in str(info.value)


def test_an_unreachable_host_names_the_connection(hook, requests_mock):
    import requests

    requests_mock.get(GET, exc=requests.ConnectionError("refused"))
    with pytest.raises(CometAPIError, match="Base URL \\(host\\) of connection 'cometapi_default'"):
        hook.get_prediction("p1abc")


def test_explain_keeps_everything_and_leaves_self_explaining_errors_alone():
    error = CometAPIError("x", http_status=429, prediction_id="p", error_code="c", transient=True, retry_after=3.0)
    explained = explain(error, op="get", conn_id="c1")
    assert type(explained) is CometAPIError
    assert (explained.http_status, explained.prediction_id, explained.error_code) == (429, "p", "c")
    assert explained.transient and explained.retry_after == 3.0
    may_exist = PredictionMayExistError("a prediction may exist")
    assert explain(may_exist, op="create", conn_id="c1") is may_exist


async def test_the_async_face_says_the_same(cometapi_connection):
    sim = cometapi_connection
    hook = CometAPIHook()
    try:
        with pytest.raises(CometAPIError) as info:
            await hook.acreate_prediction("black-forest-labs/flux-schnel", {"prompt": "a cat"})
    finally:
        await hook.aclose()
    assert "did you mean 'black-forest-labs/flux-schnell'?" in str(info.value)
    assert sim.stats["created"] == 0


def test_the_simulator_answers_404_for_a_typo_and_the_message_names_the_fix(cometapi_connection):
    sim = cometapi_connection
    with pytest.raises(CometAPIError) as info:
        CometAPIHook().create_prediction("black-forest-labs/flux-schnel", {"prompt": "a cat"})
    text = str(info.value)
    assert info.value.http_status == 404
    assert "The requested resource could not be found." in text
    assert "did you mean 'black-forest-labs/flux-schnell'? Set model= to it." in text
    assert sim.stats["created"] == 0 and sim.stats["responses"].get("404") == 1
    # every model the service serves is served by the simulator too
    for model in KNOWN_MODELS:
        assert CometAPIHook().create_prediction(model, {"prompt": "a cat"})["id"]
