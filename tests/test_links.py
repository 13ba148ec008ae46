"""The "CometAPI prediction" extra link: stored through XCom, and never failing the task that asks for it."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_cometflux.links import CometAPIPredictionLink
from airflow_provider_cometflux.operators.flux import CometFluxPredictionOperator
from airflow_provider_cometflux.sensors.prediction import CometFluxPredictionSensor

URL = "https://replicate.com/p/p1abc"


class FakeTI:
    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def test_operator_and_sensor_declare_the_link():
    for cls in (CometFluxPredictionOperator, CometFluxPredictionSensor):
        (link,) = cls.operator_extra_links
        assert isinstance(link, CometAPIPredictionLink)
        assert link.name == "CometAPI prediction"
        assert link.xcom_key == "_link_CometAPIPredictionLink"


def test_persist_pushes_the_url_under_the_links_xcom_key_and_get_link_returns_it_without_a_lookup(monkeypatch):
    ti, task = FakeTI(), SimpleNamespace()
    CometAPIPredictionLink.persist({"ti": ti, "task": task}, URL)  # type: ignore[typeddict-item]
    assert ti.pushed == {"_link_CometAPIPredictionLink": URL}

    def no_lookup(**kwargs: Any) -> None:
        raise AssertionError("the URL is known: no XCom lookup")

    monkeypatch.setattr("airflow.sdk.bases.xcom.BaseXCom.get_value", no_lookup)
    assert CometAPIPredictionLink().get_link(task, ti_key=object()) == URL


def test_no_prediction_page_stores_an_empty_link():
    ti = FakeTI()
    CometAPIPredictionLink.persist({"ti": ti}, None)  # type: ignore[typeddict-item]
    assert ti.pushed == {"_link_CometAPIPredictionLink": ""}


@pytest.mark.parametrize(("stored", "expected"), [(URL, URL), (None, "")])
def test_after_a_deferral_the_link_is_read_back_from_xcom(monkeypatch, stored, expected):
    asked: list[dict[str, Any]] = []

    def get_value(**kwargs: Any) -> str | None:
        asked.append(kwargs)
        return stored

    monkeypatch.setattr("airflow.sdk.bases.xcom.BaseXCom.get_value", get_value)
    key = object()
    assert CometAPIPredictionLink().get_link(SimpleNamespace(), ti_key=key) == expected
    assert asked == [{"ti_key": key, "key": "_link_CometAPIPredictionLink"}]


def test_a_failing_lookup_gives_an_empty_link_instead_of_failing_the_task(monkeypatch, caplog):
    def broken(**kwargs: Any) -> None:
        raise RuntimeError("execution API unreachable")

    monkeypatch.setattr("airflow.sdk.bases.xcom.BaseXCom.get_value", broken)
    assert CometAPIPredictionLink().get_link(SimpleNamespace(), ti_key=object()) == ""
    assert "execution API unreachable" in caplog.text
