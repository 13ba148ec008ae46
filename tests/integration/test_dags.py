"""Real ``airflow dags test`` runs of the operator (deferred and inline), the sensor (poke, reschedule,
deferrable) and the example DAG against the simulator, with downstream tasks reading the results from XCom."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.compat import AIRFLOW_VERSION, requires_task_state_store, storage_uri
from tests.integration.conftest import EXAMPLE_DAGS, recorded

pytestmark = pytest.mark.integration

PNG = b"\x89PNG\r\n\x1a\n"


def local(uri: str) -> Path:
    assert uri.startswith("file://"), uri
    return Path(urlsplit(uri).path)


def test_deferred_operator_stores_images_and_downstream_reads_them(dags_test, cometapi_simulator, tmp_path):
    result = dags_test("it_deferred")
    assert result.returncode == 0, result.output[-4000:]
    assert result.states == {"generate": "success", "record": "success"}
    assert "new_state=deferred" in result.output  # it really went through the trigger
    seen = recorded(tmp_path, "it_deferred")
    pid = seen["prediction_id"]
    uris = seen["return_value"]
    assert [Path(local(u)).name for u in uris] == [f"{pid}-0.png", f"{pid}-1.png"]
    for uri, meta in zip(uris, seen["images"], strict=True):
        data = local(uri).read_bytes()
        assert data.startswith(PNG) and meta["bytes"] == len(data) and meta["content_type"] == "image/png"
    assert seen["prediction"]["status"] == "succeeded" and seen["prediction"]["id"] == pid
    link = seen["_link_CometAPIPredictionLink"]  # the task's Images view (its XCom tab on Airflow 3.0)
    assert "/dags/it_deferred/runs/" in link and link.endswith(("/tasks/generate/plugin/cometflux-images", "/xcom"))
    assert cometapi_simulator.stats["creates"] == 1


def test_inline_operator_returns_delivery_urls(dags_test, cometapi_simulator, tmp_path):
    result = dags_test("it_inline")
    assert result.returncode == 0, result.output[-4000:]
    assert result.states == {"generate": "success", "record": "success"}
    assert "new_state=deferred" not in result.output
    seen = recorded(tmp_path, "it_inline")
    (url,) = seen["return_value"]  # flux-1.1-pro answers one string; the task still gives a list
    assert url.startswith(cometapi_simulator.base_url) and url.endswith(".jpg")
    assert seen["images"] is None
    assert cometapi_simulator.stats["creates"] == 1


@pytest.mark.parametrize("mode", ["poke", "reschedule", "deferrable"])
def test_sensor_modes(dags_test, cometapi_simulator, tmp_path, mode):
    dag_id = f"it_sensor_{mode}"
    result = dags_test(dag_id)
    assert result.returncode == 0, result.output[-4000:]
    assert result.states == {"submit": "success", "wait": "success", "record": "success"}
    seen = recorded(tmp_path, dag_id)
    assert len(seen["return_value"]) == 1 and seen["return_value"][0].startswith("http://127.0.0.1")
    assert seen["prediction"]["status"] == "succeeded"
    assert cometapi_simulator.stats["creates"] == 1


@pytest.mark.parametrize(
    # one failed outcome proves the release's path; the other two only the provider's wording (newest release only)
    "outcome",
    [
        "failed",
        pytest.param("canceled", marks=pytest.mark.any_release),
        pytest.param("aborted", marks=pytest.mark.any_release),
    ],
)
def test_failed_prediction_fails_the_task_with_the_service_error(dags_test, outcome):
    result = dags_test("it_deferred", COMETFLUX_IT_PROMPT=f"a cat [sim:{outcome}]")
    assert result.states["generate"] == "failed"
    assert result.states["record"] == "upstream_failed"
    assert f"ended with status '{outcome}'" in result.output


@pytest.mark.parametrize("deferrable", ["true", "false"])
def test_timeout_cancels_and_fails(dags_test, cometapi_simulator, deferrable):
    result = dags_test("it_timeout", COMETFLUX_IT_PROMPT="a cat [sim:stuck]", COMETFLUX_IT_DEFERRABLE=deferrable)
    assert result.states["generate"] == "failed"
    assert "last status 'processing'" in result.output
    (prediction,) = cometapi_simulator.predictions.values()
    assert prediction["status"] == "canceled"


def test_example_dag(dags_test, cometapi_simulator, tmp_path):
    result = dags_test("cometflux_example", folder=EXAMPLE_DAGS)
    assert result.returncode == 0, result.output[-4000:]
    assert set(result.states.values()) == {"success"}, result.states
    stored = sorted(p for p in (tmp_path / "images").rglob("*.*") if p.suffix != ".json")
    assert len(stored) == 3  # two from `generate`, one from `wait_for_image`
    sidecars = sorted((tmp_path / "images").rglob("*.json"))
    assert len(sidecars) == 2  # one per stored prediction
    assert cometapi_simulator.stats["creates"] == 2


def test_defer_after_finishes_a_fast_prediction_in_one_worker_run(dags_test, cometapi_simulator, tmp_path):
    result = dags_test("it_defer_after")
    assert result.returncode == 0, result.output[-4000:]
    assert result.states == {"generate": "success", "record": "success"}
    assert "new_state=deferred" not in result.output
    assert len(recorded(tmp_path, "it_defer_after")["return_value"]) == 1


def test_defer_after_defers_a_slow_prediction(dags_test, cometapi_simulator):
    result = dags_test("it_defer_after", COMETFLUX_IT_PROMPT="a cat [sim:slow=3]", COMETFLUX_IT_DEFER_AFTER="0.5")
    assert result.returncode == 0, result.output[-4000:]
    assert result.states == {"generate": "success", "record": "success"}
    assert "still running after 0.5s; deferring" in result.output and "new_state=deferred" in result.output


@requires_task_state_store
def test_a_retried_attempt_reattaches_instead_of_creating_again(dags_test, cometapi_simulator, tmp_path):
    cometapi_simulator.add_fault("get", "status", status=404, times=1)  # the first attempt loses track of it
    result = dags_test("it_retry")
    assert result.states == {"generate": "success", "record": "success"}, result.output[-4000:]
    assert re.search(
        r"Predictions of an earlier attempt: (1 reconnected, 0|0 reconnected, 1) already succeeded", result.output
    )
    assert cometapi_simulator.stats["creates"] == 1


def test_local_input_image_is_sent_inline(dags_test, cometapi_simulator, tmp_path):
    source = tmp_path / "source.png"
    source.write_bytes(PNG + b"\x00" * 100)
    result = dags_test("it_input_image", COMETFLUX_IT_INPUT_IMAGE=str(source))
    assert result.returncode == 0, result.output[-4000:]
    (prediction,) = cometapi_simulator.predictions.values()
    assert prediction["input"]["input_image"].startswith("data:image/png;base64,")
    assert local(recorded(tmp_path, "it_input_image")["return_value"][0]).read_bytes().startswith(PNG)


def test_missing_input_image_fails_before_any_request(dags_test, cometapi_simulator):
    result = dags_test("it_input_image", COMETFLUX_IT_INPUT_IMAGE="/nonexistent/photo.png")
    assert result.states["generate"] == "failed"
    assert "input.input_image: '/nonexistent/photo.png' does not exist" in result.output
    assert cometapi_simulator.stats["requests"] == 0


@pytest.mark.parametrize("path", ["deferred", "inline"])
def test_memory_store(dags_test, tmp_path, path):
    dag_id = f"it_memory_{path}"
    result = dags_test(dag_id, COMETFLUX_IT_MEMORY="1")
    assert result.returncode == 0, result.output[-4000:]
    assert result.states == {"generate": "success", "verify_stored": "success"}
    checked = recorded(tmp_path, dag_id)
    assert len(checked) == 2
    for image in checked:
        assert storage_uri(image["uri"]).startswith(f"memory://cometflux-it/{dag_id}/")
        assert (image["read_sha256"], image["read_bytes"]) == (image["sha256"], image["bytes"])
        assert image["content_type"] == "image/webp"


def test_batch_example_maps_prompts_into_one_folder(dags_test, cometapi_simulator, tmp_path):
    result = dags_test("cometflux_batch", folder=EXAMPLE_DAGS)
    assert result.returncode == 0, result.output[-4000:]
    assert set(result.states.values()) == {"success"}
    (folder,) = (tmp_path / "images" / "batch").iterdir()  # one dated folder
    assert len(list(folder.glob("*.png"))) == 3
    assert cometapi_simulator.stats["creates"] == 3
    from airflow_provider_cometflux.provenance import load_manifests, load_record

    rows = load_manifests(folder)  # manifest-0.jsonl .. manifest-2.jsonl, one line each
    assert sorted(path.name for path in folder.glob("manifest*")) == [f"manifest-{i}.jsonl" for i in range(3)]
    assert [(row.index, row.status) for row in rows] == [(i, "succeeded") for i in range(3)]
    assert [load_record(row.images[0].uri).input["prompt"] for row in rows] == [row.prompt for row in rows]


def test_asset_example_records_an_asset_event_with_the_images(dags_test, tmp_path):
    import sqlite3

    result = dags_test("cometflux_asset_producer", folder=EXAMPLE_DAGS, reserialize=True)
    assert result.returncode == 0, result.output[-4000:]
    with sqlite3.connect(result.db) as db:
        rows = db.execute(
            "SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id WHERE a.name = ?",
            ("cometflux_product_images",),
        ).fetchall()
    extra = json.loads(rows[-1][0])
    (uri,) = extra["images"]
    assert local(uri).read_bytes()[:4] == b"RIFF" and extra["prediction_id"] in uri


@pytest.mark.parametrize("mode", ["poke", "reschedule", "deferrable"])
def test_sensor_timeout_cancels_the_prediction(dags_test, cometapi_simulator, mode):
    """The same outcome in every mode: cancelled, AirflowSensorTimeout, no retry (retries=1 is set)."""
    result = dags_test(f"it_sensor_timeout_{mode}")
    assert result.states == {"submit": "success", "wait": "failed"}
    if mode == "reschedule" and AIRFLOW_VERSION.release[:2] < (3, 3):
        pytest.skip("before Airflow 3.3 a rescheduled sensor's timeout is raised outside its execute: no cancel")
    assert "up_for_retry" not in result.logs().lower() and "AirflowSensorTimeout" in result.logs()
    (prediction,) = cometapi_simulator.predictions.values()
    assert prediction["status"] == "canceled"
    # how long it waited is measured (2 s, or 3 s on a busy machine): the words, not the figure
    assert re.search(r"gave up after \d+s", result.logs()) and "cancelled (best effort)" in result.logs()


def test_reference_edits_example_sends_the_stored_character_inline(dags_test, cometapi_simulator, tmp_path):
    """The character's stored image reaches each flux-2-pro edit inline; records keep its URI, never its data."""
    result = dags_test("cometflux_reference_edits", folder=EXAMPLE_DAGS)
    assert result.returncode == 0, result.output[-4000:]
    assert set(result.states.values()) == {"success"}, result.states
    predictions = list(cometapi_simulator.predictions.values())
    (character,) = [p for p in predictions if p["model"].endswith("flux-schnell")]
    edits = [p for p in predictions if p["model"].endswith("flux-2-pro")]
    assert len(edits) == 3
    (stored,) = list((tmp_path / "images").rglob(f"{character['id']}-0.png"))
    for edit in edits:
        (sent,) = edit["input"]["input_images"]
        assert sent.startswith("data:image/png;base64,")
        assert base64.b64decode(sent.split(",", 1)[1]) == stored.read_bytes()
    written = [p.read_text() for p in (tmp_path / "images").rglob("*.json*")]
    assert len(written) == 4 + 3  # a sidecar per prediction, a manifest per mapped edit
    assert not any("base64" in text for text in written)
    records = [json.loads(text) for text in written if '"input_images"' in text]
    assert len(records) == 6 and {tuple(r["input"]["input_images"]) for r in records} == {(stored.as_uri(),)}
    assert "the same character" in result.output and cometapi_simulator.stats["created"] == 4
