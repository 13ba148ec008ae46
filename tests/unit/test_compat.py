"""``_compat.py`` answers the same on every supported Airflow release."""

from __future__ import annotations

import asyncio

import airflow
from packaging.version import Version

from airflow_provider_cometflux import _compat


def test_ui_plugins_exist_from_airflow_3_1() -> None:
    assert _compat.ui_plugins_supported() is (Version(airflow.__version__).release[:2] >= (3, 1))


def test_the_plugin_base_class_is_airflows() -> None:
    assert _compat.AirflowPlugin.__name__ == "AirflowPlugin"


def test_redact_hides_values_under_sensitive_names() -> None:
    try:
        redacted = _compat.redact({"api_key": "k-123", "seed": 1})
    except (ImportError, RuntimeError):  # no masker set up here: the callers fall back to names
        return
    assert redacted["api_key"] != "k-123" and redacted["seed"] == 1


def test_amask_secret_is_a_coroutine_function() -> None:
    asyncio.run(_compat.amask_secret_function()("sim-secret-value"))


def test_the_review_operator_needs_airflow_3_1_and_says_so_at_parse_time() -> None:
    import importlib
    import sys

    import pytest

    if _compat.hitl_supported():
        hitl, skip = _compat.hitl_classes()
        assert hitl.__name__ == "HITLOperator" and skip.__name__ == "SkipMixin"
        return
    sys.modules.pop("airflow_provider_cometflux.operators.review", None)
    with pytest.raises(ImportError, match=r"CometFluxReviewOperator needs Airflow 3\.1\+"):
        importlib.import_module("airflow_provider_cometflux.operators.review")
