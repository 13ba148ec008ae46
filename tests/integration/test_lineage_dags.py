"""Provenance and lineage in real ``airflow dags test`` runs against the simulator, with the OpenLineage provider's
file transport: the emitted events name the output folder and carry the prediction ids; the sidecars and the
manifest the tasks wrote read back and match the files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from airflow_provider_cometflux.lineage import PREDICTION_FACET
from airflow_provider_cometflux.provenance import SIDECAR_FORMAT, load_manifest, load_sidecar
from airflow_provider_cometflux.testing.pytest_plugin import SIMULATOR_API_KEY

pytest.importorskip("airflow.providers.openlineage")

pytestmark = pytest.mark.integration

NAMESPACE = "cometflux-it"


@pytest.fixture
def lineage_run(dags_test, tmp_path: Path):
    """Run a DAG with OpenLineage writing its events to a file; returns the run and its events."""

    def run(dag_id: str) -> tuple[Any, list[dict[str, Any]], Path]:
        events_file = tmp_path / "openlineage.jsonl"
        transport = {"type": "file", "log_file_path": str(events_file), "append": True}
        result = dags_test(
            dag_id,
            AIRFLOW__OPENLINEAGE__TRANSPORT=json.dumps(transport),
            AIRFLOW__OPENLINEAGE__NAMESPACE=NAMESPACE,
            AIRFLOW__OPENLINEAGE__DISABLED="False",
        )
        text = events_file.read_text() if events_file.exists() else ""
        assert SIMULATOR_API_KEY not in text  # the connection's key is nowhere in the events
        events = [json.loads(line) for line in text.splitlines() if line.strip()]
        return result, events, tmp_path / "images" / dag_id

    return run


def task_events(events: list[dict[str, Any]], dag_id: str, task_id: str, kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["eventType"] == kind and e["job"]["name"] == f"{dag_id}.{task_id}"]


def outputs(event: dict[str, Any]) -> list[tuple[str, str]]:
    return [(o["namespace"], o["name"]) for o in event.get("outputs") or []]


def local(uri: str) -> Path:
    assert uri.startswith("file://"), uri
    return Path(urlsplit(uri).path)


def check_sidecar(folder: Path, pid: str) -> None:
    """The sidecar of ``pid`` is in ``folder`` and every image it names is there with its digest and size."""
    sidecar = load_sidecar(folder / f"{pid}.json")
    assert sidecar.format == SIDECAR_FORMAT and sidecar.prediction_id == pid and sidecar.status == "succeeded"
    assert sidecar.images
    for image in sidecar.images:
        data = local(image.uri).read_bytes()
        assert local(image.uri).parent == folder
        assert (hashlib.sha256(data).hexdigest(), len(data)) == (image.sha256, image.bytes)


def test_deferred_operator_complete_event_names_the_folder_and_the_prediction(lineage_run):
    result, events, folder = lineage_run("it_lineage_deferred")
    assert result.returncode == 0, result.output[-4000:]
    assert "new_state=deferred" in result.output  # completed in a fresh worker after the trigger
    pid = result.xcom("generate", "prediction_id")
    (complete,) = task_events(events, "it_lineage_deferred", "generate", "COMPLETE")
    assert complete["job"]["namespace"] == NAMESPACE
    assert outputs(complete) == [("file", str(folder))]  # one dataset for the folder, not one per image
    facets = complete["run"]["facets"]
    assert facets[PREDICTION_FACET]["predictionIds"] == [pid]
    assert facets[PREDICTION_FACET]["model"] == "black-forest-labs/flux-schnell"
    assert facets["externalQuery"] == {**facets["externalQuery"], "externalQueryId": pid, "source": "cometapi"}
    check_sidecar(folder, pid)
    assert load_sidecar(folder / f"{pid}.json").input["seed"] == 3


def test_batch_complete_event_has_one_folder_all_ids_and_a_manifest(lineage_run):
    result, events, folder = lineage_run("it_lineage_batch")
    assert result.returncode == 0, result.output[-4000:]
    ids = result.xcom("generate", "prediction_ids")
    (complete,) = task_events(events, "it_lineage_batch", "generate", "COMPLETE")
    assert outputs(complete) == [("file", str(folder))]
    assert complete["run"]["facets"][PREDICTION_FACET]["predictionIds"] == [pid for pid in ids if pid]
    assert "externalQuery" not in complete["run"]["facets"]
    records = load_manifest(folder / "manifest.jsonl")
    assert [r.status for r in records] == ["succeeded", "failed", "succeeded"]
    assert [r.prediction_id for r in records] == ids
    assert "kite refused" in (records[1].error or "")
    for record in records:
        if record.succeeded:
            check_sidecar(folder, record.prediction_id or "")
            assert local(record.sidecar or "") == folder / f"{record.prediction_id}.json"
    pd = pytest.importorskip("pandas")
    frame = pd.read_json(folder / "manifest.jsonl", lines=True)
    assert list(frame["status"]) == ["succeeded", "failed", "succeeded"]


def test_mapped_tasks_report_the_same_single_folder(lineage_run):
    result, events, folder = lineage_run("it_lineage_mapped")
    assert result.returncode == 0, result.output[-4000:]
    completes = task_events(events, "it_lineage_mapped", "generate", "COMPLETE")
    assert len(completes) == 3
    assert {dataset for event in completes for dataset in outputs(event)} == {("file", str(folder))}
    ids = [pid for event in completes for pid in event["run"]["facets"][PREDICTION_FACET]["predictionIds"]]
    assert len(set(ids)) == 3
    for pid in ids:
        check_sidecar(folder, pid)


def test_sensor_reports_the_watched_prediction_and_its_folder(lineage_run):
    result, events, folder = lineage_run("it_lineage_sensor")
    assert result.returncode == 0, result.output[-4000:]
    pid = result.xcom("submit", "prediction_id")
    (submitted,) = task_events(events, "it_lineage_sensor", "submit", "COMPLETE")
    assert outputs(submitted) == []  # no output_path: only the run facet
    assert submitted["run"]["facets"][PREDICTION_FACET]["predictionIds"] == [pid]
    (waited,) = task_events(events, "it_lineage_sensor", "wait", "COMPLETE")
    assert outputs(waited) == [("file", str(folder))]
    assert waited["run"]["facets"][PREDICTION_FACET]["predictionIds"] == [pid]
    check_sidecar(folder, pid)


def test_a_failed_prediction_is_in_the_fail_event(lineage_run):
    result, events, _ = lineage_run("it_lineage_failed")
    assert result.states == {"generate": "failed"}
    pid = result.xcom("generate", "prediction_id")
    (failed,) = task_events(events, "it_lineage_failed", "generate", "FAIL")
    facet = failed["run"]["facets"][PREDICTION_FACET]
    assert facet["predictionIds"] == [pid] and facet["failed"] is True
    assert "wolf refused" in json.dumps(failed["run"]["facets"].get("errorMessage", {}))
