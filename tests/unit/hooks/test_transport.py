"""The one transport: redirects refused, bodies bounded, service text escaped, every try bounded in time."""

from __future__ import annotations

import asyncio
import time

import pytest

from airflow_provider_cometflux.exceptions import (
    CometAPIError,
    OutputExpiredError,
    OutputTooLargeError,
    PredictionMayExistError,
)
from airflow_provider_cometflux.hooks import connection
from airflow_provider_cometflux.hooks.cometapi import CometAPIHook, close_async_session
from airflow_provider_cometflux.hooks.transport import MAX_API_BODY, read_answer
from airflow_provider_cometflux.pacing import RetryPolicy
from tests.conftest import BASE, prediction_json

GET = f"{BASE}/replicate/v1/predictions/p1abc"
NO_RETRIES = RetryPolicy(max_retries=0)


@pytest.fixture(autouse=True)
async def _close_shared_session():
    yield
    await close_async_session()


@pytest.fixture
def hook(api_connection: str) -> CometAPIHook:
    return CometAPIHook(retry_policy=NO_RETRIES)


class Sink:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.begun = 0

    def begin(self) -> None:
        self.begun += 1
        self.chunks = []

    def write(self, chunk: bytes) -> None:
        self.chunks.append(chunk)


def test_an_api_redirect_to_another_host_is_refused_and_not_followed(hook, requests_mock):
    elsewhere = "https://evil.example/replicate/v1/predictions/p1abc"
    requests_mock.get(GET, status_code=307, headers={"Location": elsewhere})
    requests_mock.get(elsewhere, json=prediction_json(status="succeeded", output=["https://x/1.png"]))
    with pytest.raises(CometAPIError, match="redirected the API call") as caught:
        hook.get_prediction("p1abc")
    assert caught.value.http_status == 307 and not caught.value.transient
    assert [r.url for r in requests_mock.request_history] == [GET]  # the other host was never asked


def test_service_text_is_escaped_in_errors(hook, requests_mock):
    forged = "\x1b[31mboom\nINFO - Task succeeded"
    requests_mock.get(GET, status_code=422, json={"detail": forged})
    with pytest.raises(CometAPIError) as caught:
        hook.get_prediction("p1abc")
    text = str(caught.value)
    assert "\x1b" not in text and "\n" not in text
    assert "\\x1b[31mboom\\nINFO - Task succeeded" in text


def test_a_prediction_error_text_is_escaped():
    from airflow_provider_cometflux.models import Prediction

    prediction = Prediction(prediction_json(status="failed", error="bad\r\nINFO - Task succeeded\x07"))
    assert "bad\\r\\nINFO - Task succeeded\\x07. " in prediction.failure_message()


def test_an_api_answer_over_the_limit_is_not_read(hook, requests_mock):
    requests_mock.get(GET, content=b"x" * (MAX_API_BODY + 1))
    with pytest.raises(CometAPIError, match="larger than"):
        hook.get_prediction("p1abc")


def test_a_redirect_answer_is_classified_before_its_body():
    answer = read_answer(302, {"Location": "http://127.0.0.2/x"}, b"", op="create", prediction_id=None)
    assert answer.error is not None and "not performed" in answer.error.message and not answer.retryable


def test_download_refuses_a_declared_size_over_the_limit_before_writing(hook, requests_mock):
    url = "https://delivery.example/out/0.png"
    body = b"\x89PNG" + b"0" * 2000
    requests_mock.get(url, content=body, headers={"Content-Type": "image/png", "Content-Length": str(len(body))})
    sink = Sink()
    with pytest.raises(OutputTooLargeError, match="declares 2004 bytes, over the limit of 1000"):
        hook.download_output(url, sink, max_bytes=1000, prediction_id="p1abc")
    assert sink.chunks == [] and sink.begun == 0


def test_download_of_an_expired_url_names_the_prediction(hook, requests_mock):
    url = "https://delivery.example/out/0.png"
    requests_mock.get(url, status_code=404)
    with pytest.raises(OutputExpiredError, match="expired") as caught:
        hook.download_output(url, Sink(), prediction_id="p1abc")
    assert caught.value.prediction_id == "p1abc"


@pytest.mark.cometapi_simulator(run_seconds=0.1)
def test_download_streams_into_the_sink(cometapi_connection):
    sim = cometapi_connection
    pid = CometAPIHook().create_prediction("black-forest-labs/flux-schnell", {"prompt": "a", "output_format": "png"})[
        "id"
    ]
    time.sleep(0.3)
    (url,) = CometAPIHook().get_prediction(pid)["output"]
    sink = Sink()
    got = CometAPIHook().download_output(url, sink, prediction_id=pid)
    assert b"".join(sink.chunks) == sim.file_bytes(pid) and got.bytes == len(sim.file_bytes(pid))
    assert got.content_type == "image/png"


@pytest.mark.cometapi_simulator(run_seconds=0.1, poll_delay=5)
async def test_an_async_create_waiting_for_a_pooled_connection_is_bounded(cometapi_connection, monkeypatch):
    """Defect: the async create had no total timeout, so waiting for a pooled connection was unbounded."""
    monkeypatch.setattr(connection, "ASYNC_POOL_LIMIT", 1)
    hook = CometAPIHook(connect_timeout=0.5, read_timeout=0.5, retry_policy=NO_RETRIES)
    busy = CometAPIHook(read_timeout=30, retry_policy=NO_RETRIES)
    pid = (await hook.acreate_prediction("black-forest-labs/flux-schnell", {"prompt": "first"}))["id"]
    hold = asyncio.ensure_future(busy.aget_prediction(pid))  # holds the only connection for 5 s
    await asyncio.sleep(0.2)
    started = time.monotonic()
    with pytest.raises(CometAPIError) as caught:
        await hook.acreate_prediction("black-forest-labs/flux-schnell", {"prompt": "second"})
    assert time.monotonic() - started < 3
    assert not isinstance(caught.value, PredictionMayExistError) and caught.value.transient  # nothing was sent
    hold.cancel()
    await asyncio.gather(hold, return_exceptions=True)
    await hook.aclose()
    await busy.aclose()
