"""Spend in real ``airflow dags test`` runs against the simulator: reuse across runs, cost records, the budget."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from airflow_provider_cometflux.provenance import load_manifests, load_record
from tests.integration.conftest import recorded

pytestmark = pytest.mark.integration


def local(uri: str) -> Path:
    assert uri.startswith("file://"), uri
    return Path(urlsplit(uri).path)


def index_entries(tmp_path: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted((tmp_path / "images" / "reuse-index").glob("*.json"))]


def test_the_same_dag_run_twice_creates_once_and_returns_byte_identical_images(dags_test, cometapi_simulator, tmp_path):
    first = dags_test("it_reuse", COMETFLUX_IT_RUN="first")
    assert first.states == {"generate": "success", "record": "success"}, first.output[-4000:]
    one = recorded(tmp_path, "it_reuse")
    assert cometapi_simulator.stats["creates"] == 1
    assert one["cost"] == {"usd": 0.006, "images": 2, "predictions": 1, "reused": 0}  # flux-schnell, $0.003 each
    assert one["prediction"]["cost"] == {"usd": 0.006, "images": 2} and one["prediction"]["reused_from"] is None
    (entry,) = index_entries(tmp_path)
    assert entry["prediction_id"] == one["prediction"]["id"]

    requests_before = cometapi_simulator.stats["requests"]
    second = dags_test("it_reuse", COMETFLUX_IT_RUN="second")
    assert second.states == {"generate": "success", "record": "success"}, second.output[-4000:]
    two = recorded(tmp_path, "it_reuse")
    assert cometapi_simulator.stats["creates"] == 1  # no second create
    assert cometapi_simulator.stats["requests"] == requests_before  # no request at all: no poll, no download
    assert "new_state=deferred" not in second.logs()
    assert [local(u).parent.name for u in two["return_value"]] == ["second", "second"]
    assert [local(u).read_bytes() for u in two["return_value"]] == [local(u).read_bytes() for u in one["return_value"]]
    assert two["cost"] == {"usd": 0.0, "images": 2, "predictions": 1, "reused": 1}
    stored_in = (tmp_path / "images" / "first").as_uri()
    reused_from = {"prediction_id": entry["prediction_id"], "stored_in": stored_in}
    assert two["prediction"]["reused_from"] == reused_from
    sidecar = load_record(two["return_value"][0])  # the sidecar in this run's folder says where they came from
    assert sidecar.reused_from == reused_from and sidecar.cost == {"usd": 0.0, "images": 2}

    third = dags_test("it_reuse", COMETFLUX_IT_RUN="third", COMETFLUX_IT_SEED="8")  # a changed seed
    assert third.states == {"generate": "success", "record": "success"}, third.output[-4000:]
    assert cometapi_simulator.stats["creates"] == 2  # exactly one new create
    assert recorded(tmp_path, "it_reuse")["cost"]["reused"] == 0
    assert len(index_entries(tmp_path)) == 2


@pytest.mark.any_release  # provider logic; the first test proves the release path
def test_a_batch_reuses_each_prompt_and_records_cost_per_manifest_row(dags_test, cometapi_simulator, tmp_path):
    first = dags_test("it_reuse_batch", COMETFLUX_IT_RUN="first")
    assert first.states == {"generate": "success", "record": "success"}, first.output[-4000:]
    assert cometapi_simulator.stats["creates"] == 3
    assert recorded(tmp_path, "it_reuse_batch")["cost"] == {"usd": 0.009, "images": 3, "predictions": 3, "reused": 0}

    second = dags_test("it_reuse_batch", COMETFLUX_IT_RUN="second")
    assert second.states == {"generate": "success", "record": "success"}, second.output[-4000:]
    assert cometapi_simulator.stats["creates"] == 3
    seen = recorded(tmp_path, "it_reuse_batch")
    assert seen["cost"] == {"usd": 0.0, "images": 3, "predictions": 3, "reused": 3}
    rows = load_manifests(tmp_path / "images" / "second")
    assert [row.reused_from["prediction_id"] for row in rows] == [p["id"] for p in seen["predictions"]]
    assert all(row.cost == {"usd": 0.0, "images": 1} for row in rows)


@pytest.mark.any_release  # provider logic; the first test proves the release path
def test_two_mapped_tasks_with_the_same_input_leave_a_readable_index(dags_test, cometapi_simulator, tmp_path):
    result = dags_test("it_reuse_mapped")
    assert result.states == {"generate": "success", "record": "success"}, result.output[-4000:]
    seen = recorded(tmp_path, "it_reuse_mapped")
    assert 1 <= cometapi_simulator.stats["creates"] <= 2  # at worst both create
    (entry,) = index_entries(tmp_path)  # one key, one whole entry
    assert entry["prediction_id"] in {p["id"] for p in seen["prediction"]}
    first, second = ([local(u).read_bytes() for u in uris] for uris in seen["return_value"])
    assert first == second
    assert not list((tmp_path / "images" / "reuse-index").glob(".*"))  # no partial file left


@pytest.mark.any_release  # provider logic; the first test proves the release path
def test_a_budget_refusal_makes_no_request(dags_test, cometapi_simulator, tmp_path):
    result = dags_test("it_budget", COMETFLUX_IT_BUDGET="0.01")
    assert result.states == {"generate": "failed"}
    logs = result.logs()
    assert "max_cost_usd: the estimate $0.0120 for 1 prediction(s)" in logs and "above the budget $0.0100" in logs
    assert cometapi_simulator.stats["requests"] == 0
    assert "try_number=2" not in logs  # not retried


@pytest.mark.any_release  # provider logic; the first test proves the release path
def test_the_spend_example_pays_once_across_runs(dags_test, cometapi_simulator, tmp_path):
    from tests.integration.conftest import EXAMPLE_DAGS

    first = dags_test("cometflux_spend", folder=EXAMPLE_DAGS)
    assert set(first.states.values()) == {"success"}, first.output[-4000:]
    assert first.xcom("report") == {"usd": 0.009, "images": 3, "predictions": 3, "reused": 0}
    second = dags_test("cometflux_spend", folder=EXAMPLE_DAGS)
    assert set(second.states.values()) == {"success"}, second.output[-4000:]
    assert second.xcom("report") == {"usd": 0.0, "images": 3, "predictions": 3, "reused": 3}
    assert cometapi_simulator.stats["creates"] == 3
    assert len(list((tmp_path / "images" / "catalogue").glob("*/*.png"))) == 6  # each run has its own copies


@pytest.mark.any_release  # provider logic; the first test proves the release path
@pytest.mark.cometapi_simulator(run_seconds=2)
def test_two_mapped_tasks_running_at_once_leave_a_readable_index(tmp_path_factory, cometapi_simulator, tmp_path):
    """
    The two map indexes of one task in two processes at the same time, as two workers run them (each with its own
    metadata database, so only the store and the service are shared): at worst both create; one whole entry.
    """
    import subprocess

    from tests.integration.conftest import AIRFLOW, TEST_DAGS, airflow_env, migrated_home

    conn = {"conn_type": "cometapi", "host": cometapi_simulator.base_url, "password": cometapi_simulator.api_key}
    command = [AIRFLOW, "tasks", "test", "it_reuse_mapped", "generate", "--map-index"]
    procs = []
    for i in (0, 1):
        env = airflow_env(
            migrated_home(tmp_path_factory, f"worker-{i}"),
            AIRFLOW__CORE__DAGS_FOLDER=str(TEST_DAGS),
            AIRFLOW_CONN_COMETAPI_DEFAULT=json.dumps(conn),
            COMETFLUX_IT_OUTPUT=(tmp_path / "images").as_uri(),
            COMETFLUX_IT_RUN="together",
        )
        procs.append(
            subprocess.Popen([*command, str(i)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        )
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=240)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert [proc.returncode for proc in procs] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    assert 1 <= cometapi_simulator.stats["creates"] <= 2  # at worst both create
    (entry,) = index_entries(tmp_path)  # one key, one whole, readable entry
    assert entry["format"] == "cometflux.reuse/1" and len(entry["images"]) == 1
    assert not list((tmp_path / "images" / "reuse-index").glob(".*"))
