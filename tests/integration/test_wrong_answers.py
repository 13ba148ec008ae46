"""When the service answers wrong: real ``airflow dags test`` runs, inline and deferred, on the simulator's faults."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import requests

PATHS = ["inline", "deferred"]


def tried_twice(output: str) -> bool:
    return "up_for_retry" in output.lower()


def left_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("directive", ["[sim:output=empty]", "[sim:output=null]"])
def test_a_success_without_images_fails_naming_the_prediction(dags_test, cometapi_simulator, path, directive):
    result = dags_test(f"it_wrong_{path}", COMETFLUX_IT_PROMPT=f"a lighthouse {directive}")
    assert result.states == {"generate": "failed"}, result.logs()[-3000:]
    # not final: retried (retries=1); the retry created a new prediction, which had no images either (Airflow
    # 3.0's `dags test` stops at up_for_retry instead of running the retry)
    assert tried_twice(result.logs()) and 1 <= len(cometapi_simulator.predictions) <= 2
    for pid in cometapi_simulator.predictions:
        assert re.search(rf"Prediction {pid} succeeded without any output", result.logs())


@pytest.mark.cometapi_simulator(run_seconds=0.1, expire_after=0.2)
def test_a_sensor_on_a_prediction_whose_outputs_were_removed_fails_without_retries(dags_test, cometapi_simulator):
    api = f"{cometapi_simulator.base_url}/replicate/v1"
    auth = {"Authorization": f"Bearer {cometapi_simulator.api_key}"}  # the key the fixture's simulator accepts
    made = requests.post(
        f"{api}/models/black-forest-labs/flux-schnell/predictions", json={"input": {"prompt": "old"}}, headers=auth
    )
    pid = made.json()["id"]
    time.sleep(0.5)
    old = requests.get(f"{api}/predictions/{pid}", headers=auth, timeout=10).json()
    assert old["data_removed"] is True and old["output"] is None and old["status"] == "succeeded"
    result = dags_test("it_wrong_sensor", COMETFLUX_IT_PREDICTION_ID=pid)
    assert result.states == {"wait": "failed"}
    assert f"Prediction {pid} succeeded, but the service has removed its outputs" in result.logs()
    assert not tried_twice(result.logs())


@pytest.mark.parametrize("path", PATHS)
def test_an_output_declaring_3_gb_is_refused_before_writing(dags_test, cometapi_simulator, tmp_path, path):
    cometapi_simulator.add_fault("file", "huge", times=None)
    out = tmp_path / "kept"
    result = dags_test(f"it_wrong_{path}", COMETFLUX_IT_OUTPUT_PATH=out.as_uri())
    assert result.states == {"generate": "failed"}
    assert "over the limit of 67108864 bytes (max_output_bytes); nothing was written" in result.logs()
    assert left_files(out) == [] and not tried_twice(result.logs())


@pytest.mark.parametrize("path", PATHS)
def test_an_endless_output_is_cut_at_the_limit(dags_test, cometapi_simulator, tmp_path, path):
    cometapi_simulator.add_fault("file", "endless", times=None)
    out = tmp_path / "kept"
    result = dags_test(f"it_wrong_{path}", COMETFLUX_IT_OUTPUT_PATH=out.as_uri(), COMETFLUX_IT_MAX_BYTES="1048576")
    assert result.states == {"generate": "failed"}
    assert "sent more than 1048576 bytes (max_output_bytes); the copy was abandoned" in result.logs()
    assert left_files(out) == []


@pytest.mark.parametrize("path", PATHS)
def test_a_download_slower_than_its_limit_is_abandoned(dags_test, cometapi_simulator, tmp_path, path):
    cometapi_simulator.add_fault("file", "trickle", delay=0.5, times=None)
    out = tmp_path / "kept"
    started = time.monotonic()
    result = dags_test(f"it_wrong_{path}", COMETFLUX_IT_OUTPUT_PATH=out.as_uri(), COMETFLUX_IT_DOWNLOAD_TIMEOUT="2")
    assert result.states == {"generate": "failed"}
    assert "took longer than 2s (download_timeout)" in result.logs()
    assert left_files(out) == []
    assert time.monotonic() - started < 120


@pytest.mark.parametrize("path", PATHS)
def test_service_error_text_cannot_forge_log_lines(dags_test, cometapi_simulator, path):
    forged = "\x1b[31mrefused\nINFO - Task succeeded"
    cometapi_simulator.add_fault("create", "status", status=422, message=forged, times=None)
    result = dags_test(f"it_wrong_{path}")
    assert result.states == {"generate": "failed"}
    assert "\x1b[31m" not in result.output
    assert "\\x1b[31mrefused\\nINFO - Task succeeded" in result.logs()
    assert not any(line.startswith("INFO - Task succeeded") for line in result.output.splitlines())


@pytest.mark.parametrize("path", PATHS)
def test_an_api_call_redirected_to_another_host_is_not_followed(dags_test, cometapi_simulator, path):
    from airflow_provider_cometflux.testing.simulator import CometAPISimulator

    with CometAPISimulator("127.0.0.1", 0, run_seconds=0.1) as elsewhere:
        target = f"{elsewhere.base_url}/replicate/v1/predictions/anything"
        cometapi_simulator.add_fault("get", "redirect", location=target, times=None)
        result = dags_test(f"it_wrong_{path}")
        assert result.states == {"generate": "failed"}
        assert "redirected the API call (HTTP 307)" in result.logs()
        assert elsewhere.stats["gets"] == 0  # never asked, never believed


def test_an_inline_poll_trickling_a_byte_a_second_cannot_outlast_the_timeout(dags_test, cometapi_simulator):
    cometapi_simulator.add_fault("get", "trickle", delay=1, times=None)
    started = time.monotonic()
    result = dags_test("it_wrong_inline", COMETFLUX_IT_TIMEOUT="4")
    took = time.monotonic() - started
    assert result.states == {"generate": "failed"}
    assert "gave up after" in result.logs()
    assert took < 60, f"the run took {took:.0f}s"
