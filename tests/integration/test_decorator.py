"""Real ``airflow dags test`` runs of ``@task.cometflux`` against the simulator: a TaskFlow pipeline mapped over rows
of data, inline and deferred, a refused return value, and the TaskFlow example DAG."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.integration.conftest import EXAMPLE_DAGS, recorded

pytestmark = pytest.mark.integration

ROWS = [("Lisbon", "sunny", 1), ("Oslo", "snowy", 2), ("Kyoto", "rainy", 3)]


def local(uri: str) -> Path:
    assert uri.startswith("file://"), uri
    return Path(urlsplit(uri).path)


@pytest.mark.parametrize("path", ["inline", "deferred"])
def test_mapped_pipeline_stores_images_and_downstream_reads_them(dags_test, cometapi_simulator, tmp_path, path):
    dag_id = f"it_decorator_{path}"
    result = dags_test(dag_id)
    assert result.returncode == 0, result.output[-4000:]
    assert result.states == {"rows": "success", "draw": "success", "read_images": "success"}
    assert ("new_state=deferred" in result.output) == (path == "deferred")
    seen = recorded(tmp_path, dag_id)

    assert len(seen["return_value"]) == len(ROWS)
    for index, (city, mood, seed) in enumerate(ROWS):
        pid = seen["prediction_id"][index]
        (uri,) = seen["return_value"][index]
        assert local(uri) == tmp_path / "images" / dag_id / str(index) / f"{pid}-0.png"
        expected = {
            "aspect_ratio": "1:1",
            "output_format": "png",
            "prompt": f"{city} on a {mood} morning, gouache",
            "seed": seed,
        }
        assert seen["model_input"][index] == expected
        assert seen["prediction"][index]["input"] == expected  # recorded after the deferral too
        assert seen["prediction"][index]["status"] == "succeeded"
        assert cometapi_simulator.predictions[pid]["input"] == expected
        (meta,) = seen["images"][index]
        assert meta["uri"] == uri

    assert [s["uri"] for s in seen["stored"]] == [uris[0] for uris in seen["return_value"]]
    for stored, meta in zip(seen["stored"], [m[0] for m in seen["images"]], strict=True):
        assert stored["png"] and stored["bytes"] == meta["bytes"] and stored["sha256"] == meta["sha256"]
    assert cometapi_simulator.stats["created"] == len(ROWS)


def test_a_refused_return_value_fails_without_retries_and_creates_nothing(dags_test, cometapi_simulator):
    result = dags_test("it_decorator_bad_return")
    assert result.returncode != 0
    assert result.states["draw"] == "failed" and result.states["read_images"] == "upstream_failed"
    logs = result.logs()
    assert "CometFluxInputError" in logs
    assert (
        "@task.cometflux function 'draw' returned ['Lisbon'] (list); expected a prompt (a non-empty str) or a "
        "model input (a dict with a 'prompt' key)." in logs
    )
    assert "up_for_retry" not in logs  # retries=2, yet no retry
    assert cometapi_simulator.stats["creates"] == 0
    assert cometapi_simulator.predictions == {}


def test_taskflow_example_dag(dags_test, cometapi_simulator, tmp_path):
    result = dags_test("cometflux_taskflow", folder=EXAMPLE_DAGS)
    assert result.returncode == 0, result.output[-4000:]
    assert set(result.states.values()) == {"success"}, result.states
    stored = sorted(p for p in (tmp_path / "images").rglob("*.png"))
    assert len(stored) == cometapi_simulator.stats["created"] == 3
    assert all(p.parent.parent.name == "taskflow" for p in stored)  # <output_path>/taskflow/<run id>/
