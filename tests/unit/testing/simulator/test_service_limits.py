"""The service's limits as the simulator plays them: unreadable images, request size, the safety filter, a spent
rate limit without Retry-After, and Pillow."""

from __future__ import annotations

import time

import pytest

from airflow_provider_cometflux.schema import MAX_REQUEST_BYTES
from airflow_provider_cometflux.testing.simulator import CometAPISimulator
from airflow_provider_cometflux.testing.simulator.lifecycle import ALL_FILTERED_MESSAGE
from tests.unit.testing.conftest import DEV, KEY, SCHNELL, decode, finished, get_prediction, post_create

FLUX2_PRO = "black-forest-labs/flux-2-pro"


@pytest.fixture
def any_model_sim():
    """A simulator that takes any model id (``--any-model``)."""
    with CometAPISimulator(run_seconds=0.05, api_key=KEY, known_models=None) as simulator:
        yield simulator


@pytest.mark.parametrize(
    ("model", "inputs", "field"),
    [
        (FLUX2_PRO, {"input_images": ["https://x/a.png", "/home/me/b.png"]}, "input.input_images.1"),
        ("acme/any-image-model", {"input_images": ["file:///tmp/a.png"]}, "input.input_images.0"),
        ("acme/any-image-model", {"image": "/tmp/a.png"}, "input.image"),
        ("acme/any-image-model", {"input_image": "s3://bucket/a.png"}, "input.input_image"),
    ],
)
def test_an_image_the_service_cannot_read_is_refused_for_any_model(any_model_sim, model, inputs, field):
    resp = post_create(any_model_sim, model, prompt="p", **inputs)
    assert resp.status_code == 422
    assert [entry["field"] for entry in resp.json()["invalid_fields"]] == [field]
    assert "Does not match format 'uri'" in resp.json()["detail"]


def test_any_model_still_takes_urls_data_uris_and_other_inputs(any_model_sim):
    resp = post_create(
        any_model_sim, "acme/any-image-model", prompt="p", input_images=["https://x/a.png", "data:image/png;base64,AA"]
    )
    assert resp.status_code == 201


def test_the_request_size_limit_is_what_the_provider_may_send(strict_sim):
    assert strict_sim.max_request_bytes == MAX_REQUEST_BYTES > 18 * 1024 * 1024
    image = "data:image/png;base64," + "A" * (10 * 1024 * 1024)  # a 7.5 MB image: over the old 1 MiB limit
    assert post_create(strict_sim, FLUX2_PRO, prompt="p", input_images=[image]).status_code == 201
    too_big = "data:image/png;base64," + "A" * MAX_REQUEST_BYTES
    resp = post_create(strict_sim, FLUX2_PRO, prompt="p", input_images=[too_big])
    assert resp.status_code == 413
    assert resp.json()["error"]["code"] == "request_too_large"


@pytest.mark.parametrize(
    ("model", "inputs", "returned"),
    [
        (SCHNELL, {"num_outputs": 4, "prompt": "p [sim:nsfw=1]"}, 3),
        (DEV, {"num_outputs": 2, "prompt": "p [sim:nsfw=1]"}, 1),
        (SCHNELL, {"num_outputs": 2, "prompt": "p [sim:nsfw=1]", "disable_safety_checker": True}, 2),
        ("black-forest-labs/flux-1.1-pro", {"prompt": "p [sim:nsfw]"}, None),  # no such filter: one image
    ],
)
def test_the_safety_filter_drops_images(strict_sim, model, inputs, returned):
    pid = post_create(strict_sim, model, **inputs).json()["id"]
    done = finished(strict_sim, pid)
    assert done["status"] == "succeeded"
    if returned is None:
        assert isinstance(done["output"], str)
        return
    assert len(done["output"]) == returned == done["metrics"]["image_count"]
    asked = inputs["num_outputs"]
    safe = asked if inputs.get("disable_safety_checker") else returned
    assert f"Total safe images: {safe} out of {asked}" in done["logs"]


def test_the_safety_filter_fails_only_when_every_image_is_filtered(strict_sim):
    pid = post_create(strict_sim, SCHNELL, prompt="p [sim:nsfw=2]", num_outputs=2).json()["id"]
    done = finished(strict_sim, pid)
    assert (done["status"], done["error"], done["output"]) == ("failed", ALL_FILTERED_MESSAGE, None)


def test_a_spent_rate_limit_answers_429_without_retry_after_until_it_resets(strict_sim):
    pid = post_create(strict_sim, SCHNELL, prompt="p").json()["id"]
    strict_sim.add_fault("get", "throttle", delay=0.5)
    first = get_prediction(strict_sim, pid)
    again = get_prediction(strict_sim, pid)
    assert first.status_code == again.status_code == 429
    assert "Retry-After" not in first.headers
    assert first.json() == {"detail": "Request was throttled. Your rate limit resets in ~1s.", "status": 429}
    assert post_create(strict_sim, SCHNELL, prompt="p").status_code == 201  # creates are another route
    time.sleep(0.6)
    assert get_prediction(strict_sim, pid).status_code == 200
    assert strict_sim.faults == []


def test_the_throttle_says_thirty_seconds_by_default(strict_sim):
    strict_sim.add_fault("create", "throttle")
    body = post_create(strict_sim, SCHNELL, prompt="p").json()
    assert body["detail"] == "Request was throttled. Your rate limit resets in ~30s."
    assert strict_sim.faults[0].kind == "throttle"


def test_a_failed_image_download_reads_as_one(cometapi_connection):
    from airflow_provider_cometflux.exceptions import CometAPIError
    from airflow_provider_cometflux.hooks.cometapi import CometAPIHook
    from airflow_provider_cometflux.pacing import RetryPolicy

    hook = CometAPIHook(retry_policy=RetryPolicy(max_retries=1, base_delay=0.001, max_delay=0.01))
    pid = hook.create_prediction(SCHNELL, {"prompt": "p"})["id"]
    cometapi_connection.finish([pid])
    url = hook.get_prediction(pid)["output"][0]
    cometapi_connection.add_fault("file", "status", status=500, times=None)
    with pytest.raises(CometAPIError, match=r"download of .* failed: the delivery host answered HTTP 500") as info:
        hook.download_output(url, _Sink(), prediction_id=pid)
    assert "non-JSON" not in str(info.value)


class _Sink:
    def begin(self) -> None:
        pass

    def write(self, chunk: bytes) -> None:
        pass


def test_the_simulator_refuses_to_start_without_pillow(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(RuntimeError, match=r"draws its images with Pillow, which is not installed: pip install"):
        CometAPISimulator().start()


def test_the_command_line_says_so_too(monkeypatch, capsys):
    import sys

    from airflow_provider_cometflux.testing.simulator.cli import main

    monkeypatch.setitem(sys.modules, "PIL", None)
    assert main(["--port", "0"]) == 1
    assert "Pillow, which is not installed" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("inputs", "size"),
    [
        ({"aspect_ratio": "16:9", "resolution": "4 MP"}, (2048, 1168)),  # 4 MP, but at most 2048 a side
        ({"aspect_ratio": "1:1", "resolution": "0.5 MP"}, (720, 720)),
        ({"aspect_ratio": "3:2"}, (1216, 832)),  # 1 MP by default
        ({"aspect_ratio": "custom", "width": 1010, "height": 700, "resolution": "4 MP"}, (1008, 704)),  # ignored
    ],
)
def test_flux2_images_follow_resolution_and_aspect_ratio(strict_sim, inputs, size):
    import requests

    pid = post_create(strict_sim, FLUX2_PRO, prompt="p", output_format="png", **inputs).json()["id"]
    url = finished(strict_sim, pid)["output"]
    assert decode(requests.get(url, timeout=30).content) == ("PNG", size)
