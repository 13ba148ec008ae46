"""The "CometFlux images" extra link: the task instance's Images view, stored through XCom, never failing a task."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_cometflux import plugins
from airflow_provider_cometflux.links import CometAPIPredictionLink, images_view_url
from airflow_provider_cometflux.operators.flux import CometFluxPredictionOperator
from airflow_provider_cometflux.sensors.prediction import CometFluxPredictionSensor

RUN = "manual__2026-12-02T10:00:00+00:00"
VIEW = "/dags/flux/runs/manual__2026-12-02T10%3A00%3A00%2B00%3A00/tasks/generate/plugin/cometflux-images"


@pytest.fixture(autouse=True)
def _ui_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """The link as on Airflow 3.1+ (the Images view); ``test_airflow_3_0_links_the_xcom_tab`` checks 3.0's."""
    monkeypatch.setattr(plugins, "ui_plugins_supported", lambda: True)


class FakeTI:
    dag_id, run_id, task_id = "flux", RUN, "generate"

    def __init__(self, map_index: int = -1) -> None:
        self.map_index = map_index
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def test_operator_and_sensor_declare_the_link():
    for cls in (CometFluxPredictionOperator, CometFluxPredictionSensor):
        (link,) = cls.operator_extra_links
        assert isinstance(link, CometAPIPredictionLink)
        assert link.name == "CometFlux images"
        assert link.xcom_key == "_link_CometAPIPredictionLink"


def test_persist_stores_the_images_view_not_the_upstream_page(monkeypatch):
    ti, task = FakeTI(), SimpleNamespace()
    CometAPIPredictionLink.persist({"ti": ti, "task": task}, "https://replicate.com/p/p1abc")  # type: ignore[typeddict-item]
    assert ti.pushed == {"_link_CometAPIPredictionLink": VIEW}

    def no_lookup(**kwargs: Any) -> None:
        raise AssertionError("the URL is known: no XCom lookup")

    monkeypatch.setattr("airflow.sdk.bases.xcom.BaseXCom.get_value", no_lookup)
    assert CometAPIPredictionLink().get_link(task, ti_key=object()) == VIEW


def test_a_mapped_task_links_its_own_map_index():
    ti = FakeTI(map_index=3)
    CometAPIPredictionLink.persist({"ti": ti}, None)  # type: ignore[typeddict-item]
    assert ti.pushed["_link_CometAPIPredictionLink"] == VIEW.replace("/generate/", "/generate/mapped/3/")


def test_after_a_deferral_the_link_is_built_from_the_task_instance_key():
    key = SimpleNamespace(dag_id="flux", run_id=RUN, task_id="generate", map_index=-1, try_number=1)
    assert CometAPIPredictionLink().get_link(SimpleNamespace(), ti_key=key) == VIEW


def test_the_api_base_url_prefixes_the_link(monkeypatch):
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://airflow.example.com/af/")
    assert images_view_url("flux", RUN, "generate") == "https://airflow.example.com/af" + VIEW


def test_airflow_3_0_links_the_xcom_tab(monkeypatch):
    monkeypatch.setattr(plugins, "ui_plugins_supported", lambda: False)
    assert images_view_url("flux", RUN, "generate", 2) == VIEW.replace(
        "/generate/plugin/cometflux-images", "/generate/mapped/2/xcom"
    )


@pytest.mark.parametrize("name", ["../../admin", "a/b", "x?y#z"])
def test_ids_cannot_change_the_links_path(name):
    url = images_view_url(name, RUN, name)
    assert url.count("/") == VIEW.count("/")
    assert "?" not in url and "#" not in url


def test_a_failing_lookup_gives_an_empty_link_instead_of_failing_the_task(monkeypatch, caplog):
    def broken(**kwargs: Any) -> None:
        raise RuntimeError("execution API unreachable")

    monkeypatch.setattr("airflow.sdk.bases.xcom.BaseXCom.get_value", broken)
    assert CometAPIPredictionLink().get_link(SimpleNamespace(), ti_key=object()) == ""
    assert "execution API unreachable" in caplog.text
