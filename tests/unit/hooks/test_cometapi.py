"""The hook against requests-mock: routes, auth, both error shapes, retries, create safety, timeouts."""

from __future__ import annotations

import json

import pytest
import requests

from airflow_provider_cometflux.exceptions import (
    CometAPIAuthError,
    CometAPIConnectionConfigError,
    CometAPIError,
    CometFluxInputError,
    PredictionMayExistError,
)
from airflow_provider_cometflux.hooks.cometapi import CometAPIHook
from tests.conftest import BASE, TEST_KEY, prediction_json

CREATE = f"{BASE}/replicate/v1/models/black-forest-labs/flux-schnell/predictions"
GET = f"{BASE}/replicate/v1/predictions/p1abc"
CANCEL = f"{GET}/cancel"


@pytest.fixture
def hook(api_connection: str, fast_retries) -> CometAPIHook:
    return CometAPIHook(retry_policy=fast_retries)


def test_create_sends_input_and_bearer(hook, requests_mock):
    requests_mock.post(CREATE, status_code=201, json=prediction_json())
    result = hook.create_prediction("black-forest-labs/flux-schnell", {"prompt": "a cat", "num_outputs": 2})
    assert result["id"] == "p1abc"
    sent = requests_mock.last_request
    assert sent.json() == {"input": {"prompt": "a cat", "num_outputs": 2}}
    assert sent.headers["Authorization"] == f"Bearer {TEST_KEY}"
    assert "Prefer" not in sent.headers


def test_create_prefer_wait_and_cancel_after(hook, requests_mock):
    requests_mock.post(CREATE, status_code=201, json=prediction_json(status="succeeded", output=["https://x/1.webp"]))
    hook.create_prediction("black-forest-labs/flux-schnell", {"prompt": "a"}, wait=90, cancel_after="5m")
    assert requests_mock.last_request.headers["Prefer"] == "wait=60"
    assert requests_mock.last_request.headers["Cancel-After"] == "5m"


def test_create_rejects_malformed_model_before_any_request(hook, requests_mock):
    with pytest.raises(CometFluxInputError, match="model: 'flux-schnell'"):
        hook.create_prediction("flux-schnell", {"prompt": "a"})
    assert requests_mock.call_count == 0


def test_get_uses_cometapi_route_not_urls_get(hook, requests_mock):
    requests_mock.get(GET, json=prediction_json(status="processing"))
    assert hook.get_prediction("p1abc")["status"] == "processing"
    assert requests_mock.last_request.url == GET


def test_bad_prediction_id_is_refused(hook, requests_mock):
    with pytest.raises(CometFluxInputError, match="prediction_id"):
        hook.get_prediction("../../admin")
    assert requests_mock.call_count == 0


def test_cometapi_error_shape(hook, requests_mock):
    body = {"error": {"message": "bad aspect", "type": "invalid_request_error", "param": "aspect_ratio", "code": "x"}}
    requests_mock.get(GET, status_code=400, json=body)
    with pytest.raises(CometAPIError) as info:
        hook.get_prediction("p1abc")
    err = info.value
    assert (err.http_status, err.prediction_id, err.error_code) == (400, "p1abc", "x")
    assert "bad aspect (param: aspect_ratio)" in str(err) and "prediction p1abc" in str(err)
    assert requests_mock.call_count == 1  # 400 is never retried


def test_problem_json_shape(hook, requests_mock):
    body = {"title": "Prediction not found", "detail": "No prediction with id p1abc", "status": 404}
    requests_mock.get(GET, status_code=404, json=body, headers={"Content-Type": "application/problem+json"})
    with pytest.raises(CometAPIError, match="No prediction with id p1abc") as info:
        hook.get_prediction("p1abc")
    assert info.value.error_type == "Prediction not found"
    assert requests_mock.call_count == 1


def test_html_error_page(hook, requests_mock):
    requests_mock.get(
        GET, status_code=404, text="<html><body>Not Found</body></html>", headers={"Content-Type": "text/html"}
    )
    with pytest.raises(CometAPIError, match="HTML page"):
        hook.get_prediction("p1abc")


@pytest.mark.parametrize("status", [401, 403])
def test_auth_errors_are_not_retried_and_hide_the_key(hook, requests_mock, status):
    requests_mock.get(GET, status_code=status, json={"error": {"message": "Invalid token", "code": "invalid_api_key"}})
    with pytest.raises(CometAPIAuthError) as info:
        hook.get_prediction("p1abc")
    assert requests_mock.call_count == 1
    assert TEST_KEY not in str(info.value) and TEST_KEY not in repr(info.value)


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504, 524])
def test_transient_statuses_are_retried(hook, requests_mock, status):
    requests_mock.get(
        GET,
        [
            {"status_code": status, "json": {"error": {"message": "busy"}}, "headers": {"Retry-After": "0"}},
            {"status_code": 200, "json": prediction_json(status="processing")},
        ],
    )
    assert hook.get_prediction("p1abc")["status"] == "processing"
    assert requests_mock.call_count == 2


def test_500_invalid_request_is_not_retried(hook, requests_mock):
    requests_mock.get(GET, status_code=500, json={"error": {"message": "nope", "code": "invalid_request"}})
    with pytest.raises(CometAPIError, match="nope"):
        hook.get_prediction("p1abc")
    assert requests_mock.call_count == 1


def test_retries_are_bounded(hook, requests_mock, fast_retries):
    requests_mock.get(GET, status_code=503, json={"error": {"message": "overloaded"}})
    with pytest.raises(CometAPIError, match="overloaded") as info:
        hook.get_prediction("p1abc")
    assert info.value.transient
    assert requests_mock.call_count == fast_retries.max_retries + 1


def test_get_read_timeout_is_retried(hook, requests_mock):
    requests_mock.get(GET, [{"exc": requests.ReadTimeout("slow")}, {"json": prediction_json(status="processing")}])
    assert hook.get_prediction("p1abc")["status"] == "processing"


def test_create_retried_on_429_and_refused_connection(hook, requests_mock):
    refused = requests.ConnectionError("HTTPConnectionPool: NewConnectionError: Connection refused")
    requests_mock.post(
        CREATE,
        [
            {"exc": refused},
            {"status_code": 429, "json": {"error": {"message": "slow down"}}, "headers": {"Retry-After": "0"}},
            {"status_code": 201, "json": prediction_json()},
        ],
    )
    assert hook.create_prediction("black-forest-labs/flux-schnell", {"prompt": "a"})["id"] == "p1abc"
    assert requests_mock.call_count == 3


@pytest.mark.parametrize("exc", [requests.ReadTimeout("lost"), requests.ConnectionError("Connection reset by peer")])
def test_create_with_lost_answer_is_never_resubmitted(hook, requests_mock, exc):
    requests_mock.post(CREATE, exc=exc)
    with pytest.raises(PredictionMayExistError, match="may exist"):
        hook.create_prediction("black-forest-labs/flux-schnell", {"prompt": "a"})
    assert requests_mock.call_count == 1


def test_create_answer_not_json_is_not_resubmitted(hook, requests_mock):
    requests_mock.post(CREATE, status_code=201, text="{oops")
    with pytest.raises(PredictionMayExistError):
        hook.create_prediction("black-forest-labs/flux-schnell", {"prompt": "a"})
    assert requests_mock.call_count == 1


def test_get_not_json_is_retried(hook, requests_mock):
    requests_mock.get(GET, [{"text": "{oops"}, {"json": prediction_json(status="processing")}])
    assert hook.get_prediction("p1abc")["status"] == "processing"


def test_cancel(hook, requests_mock):
    requests_mock.post(CANCEL, json=prediction_json(status="canceled"))
    assert hook.cancel_prediction("p1abc")["status"] == "canceled"


@pytest.mark.parametrize("status", [404, 405])
def test_cancel_unsupported_is_logged_not_raised(hook, requests_mock, caplog, status):
    requests_mock.post(CANCEL, status_code=status, text="<html>no</html>")
    assert hook.cancel_prediction("p1abc") is None
    assert "no cancel route" in caplog.text


def test_host_without_scheme_and_default_host(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_COMETAPI_DEFAULT", json.dumps({"conn_type": "cometapi", "password": "k"}))
    assert CometAPIHook().credentials.base_url == "https://api.cometapi.com"
    monkeypatch.setenv(
        "AIRFLOW_CONN_OTHER", json.dumps({"conn_type": "cometapi", "host": "127.0.0.1", "port": 8080, "password": "k"})
    )
    assert CometAPIHook("other").credentials.base_url == "https://127.0.0.1:8080"


def test_missing_key_says_how_to_set_it(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_COMETAPI_DEFAULT", json.dumps({"conn_type": "cometapi"}))
    with pytest.raises(CometAPIConnectionConfigError, match=r"has no API key.*password"):
        CometAPIHook().get_prediction("p1abc")


def test_missing_connection_says_how_to_set_it(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_NOPE", raising=False)
    with pytest.raises(CometAPIConnectionConfigError, match="AIRFLOW_CONN_NOPE"):
        CometAPIHook("nope").get_prediction("p1abc")


def test_key_not_in_hook_repr_or_credentials_repr(hook):
    assert TEST_KEY not in repr(hook.credentials)


def test_test_connection(hook, requests_mock):
    url = f"{BASE}/replicate/v1/predictions/connection-test"
    requests_mock.get(url, status_code=404, json={"title": "Not found", "detail": "no", "status": 404})
    ok, message = hook.test_connection()
    assert ok and "accepted" in message
    requests_mock.get(url, status_code=401, json={"error": {"message": "Invalid token"}})
    ok, message = hook.test_connection()
    assert not ok and "refused" in message and TEST_KEY not in message
    requests_mock.get(url, exc=requests.ConnectionError("NewConnectionError: Connection refused"))
    ok, message = hook.test_connection()
    assert not ok and "Could not reach" in message


def test_errors_survive_pickling(hook, requests_mock):
    import pickle

    requests_mock.get(GET, status_code=400, json={"error": {"message": "bad", "code": "c"}})
    with pytest.raises(CometAPIError) as info:
        hook.get_prediction("p1abc")
    clone = pickle.loads(pickle.dumps(info.value))
    assert (clone.http_status, clone.prediction_id, str(clone)) == (400, "p1abc", str(info.value))


# -- credentials shared by the hooks of one event loop (the triggerer) -------------------------------------------


def _conn_env(monkeypatch: pytest.MonkeyPatch, key: str, conn_id: str = "shared") -> None:
    conn = {"conn_type": "cometapi", "host": BASE, "password": key}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The connection ids the hooks actually looked up (not answered from the event loop's cache)."""
    from airflow_provider_cometflux.hooks import connection

    seen: list[str] = []
    original = connection._alookup

    async def counted(conn_id: str):
        seen.append(conn_id)
        return await original(conn_id)

    monkeypatch.setattr(connection, "_alookup", counted)
    return seen


async def test_a_thousand_hooks_on_one_loop_read_the_connection_once(monkeypatch, lookups):
    import asyncio

    _conn_env(monkeypatch, "sk-first")
    _conn_env(monkeypatch, "sk-other", conn_id="other")
    hooks = [CometAPIHook("shared") for _ in range(1000)] + [CometAPIHook("other")]
    found = await asyncio.gather(*(hook._aget_credentials() for hook in hooks))
    assert lookups == ["shared", "other"]
    assert {c.api_key for c in found[:1000]} == {"sk-first"} and found[-1].api_key == "sk-other"


async def test_a_changed_key_is_picked_up_after_the_ttl(monkeypatch, lookups):
    _conn_env(monkeypatch, "sk-first")
    assert (await CometAPIHook("shared")._aget_credentials()).api_key == "sk-first"
    _conn_env(monkeypatch, "sk-rotated")
    assert (await CometAPIHook("shared")._aget_credentials()).api_key == "sk-first"  # within the TTL
    monkeypatch.setattr("airflow_provider_cometflux.hooks.connection.CREDENTIALS_TTL", 0.0)
    assert (await CometAPIHook("shared")._aget_credentials()).api_key == "sk-rotated"
    assert lookups == ["shared", "shared"]


async def test_a_failed_lookup_is_not_kept(monkeypatch, lookups):
    monkeypatch.delenv("AIRFLOW_CONN_SHARED", raising=False)
    with pytest.raises(CometAPIConnectionConfigError, match="AIRFLOW_CONN_SHARED"):
        await CometAPIHook("shared")._aget_credentials()
    _conn_env(monkeypatch, "sk-late")
    assert (await CometAPIHook("shared")._aget_credentials()).api_key == "sk-late"
    assert lookups == ["shared", "shared"]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({}, None),
        ({"requests_per_minute": 600}, 600.0),
        ({"requests_per_minute": "120"}, 120.0),
        ({"extra__cometapi__requests_per_minute": 90}, 90.0),
        ({"requests_per_minute": ""}, None),
    ],
)
def test_the_request_ceiling_comes_from_the_connection(monkeypatch, extra, expected):
    conn = {"conn_type": "cometapi", "host": BASE, "password": TEST_KEY, "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_COMETAPI_DEFAULT", json.dumps(conn))
    assert CometAPIHook().requests_per_minute == expected


@pytest.mark.parametrize(
    ("extra", "polls_per_minute"),
    [
        ({}, None),
        ({"triggerers": 2}, None),
        ({"requests_per_minute": 600}, 600.0),
        ({"requests_per_minute": 600, "triggerers": 3}, 200.0),
        ({"requests_per_minute": 600, "extra__cometapi__triggerers": "2"}, 300.0),
        ({"requests_per_minute": 600, "triggerers": ""}, 600.0),
    ],
)
async def test_each_triggerer_polls_at_its_share_of_the_ceiling(monkeypatch, extra, polls_per_minute):
    conn = {"conn_type": "cometapi", "host": BASE, "password": TEST_KEY, "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_COMETAPI_DEFAULT", json.dumps(conn))
    hook = CometAPIHook()
    assert await hook.apolls_per_minute() == polls_per_minute
    assert await hook.arequests_per_minute() == extra.get("requests_per_minute")  # creates keep the whole ceiling
    await hook.aclose()


@pytest.mark.parametrize("bad", [0, -1, 1.5, "two", True])
def test_a_bad_number_of_triggerers_is_a_clear_connection_error(monkeypatch, bad):
    conn = {"conn_type": "cometapi", "host": BASE, "password": TEST_KEY, "extra": {"triggerers": bad}}
    monkeypatch.setenv("AIRFLOW_CONN_COMETAPI_DEFAULT", json.dumps(conn))
    with pytest.raises(CometAPIConnectionConfigError, match=f"triggerers {bad!r} is not allowed; expected an integer"):
        assert CometAPIHook().requests_per_minute is None


@pytest.mark.parametrize("bad", [0, -5, "fast", "nan"])
def test_a_bad_request_ceiling_is_a_clear_connection_error(monkeypatch, bad):
    conn = {"conn_type": "cometapi", "host": BASE, "password": TEST_KEY, "extra": {"requests_per_minute": bad}}
    monkeypatch.setenv("AIRFLOW_CONN_COMETAPI_DEFAULT", json.dumps(conn))
    with pytest.raises(CometAPIConnectionConfigError, match=f"requests_per_minute {bad!r} is not allowed"):
        assert CometAPIHook().requests_per_minute is None


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({}, {}),
        ({"prices": {"black-forest-labs/flux-schnell": 0.002}}, {"black-forest-labs/flux-schnell": (0.002, "image")}),
        ({"prices": '{"me/mine": {"usd": 0.01, "per": "megapixel"}}'}, {"me/mine": (0.01, "megapixel")}),
        ({"extra__cometapi__prices": {"me/mine": 1}}, {"me/mine": (1.0, "image")}),
    ],
)
def test_the_accounts_prices_come_from_the_connection(monkeypatch, extra, expected):
    conn = {"conn_type": "cometapi", "host": BASE, "password": TEST_KEY, "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_COMETAPI_DEFAULT", json.dumps(conn))
    assert {model: (p.usd, p.per) for model, p in CometAPIHook().prices.items()} == expected


@pytest.mark.parametrize("bad", [[1], {"me/mine": "cheap"}, "not json"])
def test_bad_prices_are_a_clear_connection_error(monkeypatch, bad):
    conn = {"conn_type": "cometapi", "host": BASE, "password": TEST_KEY, "extra": {"prices": bad}}
    monkeypatch.setenv("AIRFLOW_CONN_COMETAPI_DEFAULT", json.dumps(conn))
    with pytest.raises(CometAPIConnectionConfigError, match="Connection 'cometapi_default' extra prices"):
        assert CometAPIHook().prices
