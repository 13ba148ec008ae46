"""The provider as Airflow sees it: metadata schema, entry point, connection type and the connection form."""

from __future__ import annotations

import importlib.util
import json
import warnings
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import airflow
import jsonschema
import pytest

from airflow_provider_cometflux import __version__
from airflow_provider_cometflux.get_provider_info import get_provider_info
from airflow_provider_cometflux.hooks.cometapi import CometAPIHook

AIRFLOW_DIR = Path(airflow.__file__).parent
HOOK = "airflow_provider_cometflux.hooks.cometapi.CometAPIHook"
ENTRY_POINT = "airflow_provider_cometflux.get_provider_info:get_provider_info"


def connection_type(info: dict[str, Any]) -> dict[str, Any]:
    (conn,) = [c for c in info["connection-types"] if c["connection-type"] == "cometapi"]
    return conn


def test_provider_info_validates_against_airflows_schema():
    schema = json.loads((AIRFLOW_DIR / "provider_info.schema.json").read_text())
    info = get_provider_info()
    jsonschema.validate(info, schema)
    assert info["package-name"] == "airflow-provider-cometflux"
    assert info["versions"] == [__version__]
    assert connection_type(info)["hook-class-name"] == HOOK
    assert info["extra-links"] == ["airflow_provider_cometflux.links.CometAPIPredictionLink"]


def test_connection_form_validates_against_the_provider_yaml_schema():
    """Airflow 3.2+ documents ``ui-field-behaviour`` and ``conn-fields`` strictly in its provider.yaml schema."""
    if not declares_forms_in_provider_info():
        pytest.skip(f"Airflow {airflow.__version__} has no declarative connection form (3.2+)")
    schema = json.loads((AIRFLOW_DIR / "provider.yaml.schema.json").read_text())
    conn_schema = schema["properties"]["connection-types"]
    jsonschema.validate(get_provider_info()["connection-types"], conn_schema)


def test_declared_form_matches_the_hooks_own_for_older_airflow():
    """Airflow 3.0 and 3.1 ask the hook; 3.2+ read the provider info without importing the hook."""
    declared = connection_type(get_provider_info())["ui-field-behaviour"]
    from_hook = CometAPIHook.get_ui_field_behaviour()
    assert {
        "hidden_fields": declared["hidden-fields"],
        "relabeling": declared["relabeling"],
        "placeholders": declared["placeholders"],
    } == from_hook
    assert declared["relabeling"] == {"password": "API key", "host": "Base URL"}
    assert declared["placeholders"]["host"] == "https://api.cometapi.com"
    assert {"schema", "login", "port", "extra"} == set(declared["hidden-fields"])


def test_entry_point_is_registered():
    (ep,) = [ep for ep in entry_points(group="apache_airflow_provider") if ep.value == ENTRY_POINT]
    assert ep.load()() == get_provider_info()


def test_providers_manager_knows_the_connection_type():
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert "airflow-provider-cometflux" in manager.providers
    assert manager.providers["airflow-provider-cometflux"].version == __version__
    with warnings.catch_warnings():  # 3.2+ point task code at the task SDK's registry; the API server uses this one
        warnings.simplefilter("ignore")
        hook = manager.hooks["cometapi"]
    assert hook is not None
    assert hook.hook_class_name == HOOK
    assert hook.connection_id_attribute_name == "cometapi_conn_id"
    assert hook.hook_name == "CometAPI"
    assert "airflow_provider_cometflux.links.CometAPIPredictionLink" in manager.extra_links_class_names


def declares_forms_in_provider_info() -> bool:
    """Whether this Airflow reads ``ui-field-behaviour`` from provider info (3.2+) instead of the hook."""
    schema = json.loads((AIRFLOW_DIR / "provider.yaml.schema.json").read_text())
    return "ui-field-behaviour" in schema["properties"]["connection-types"]["items"]["properties"]


def test_connection_form_as_the_ui_receives_it():
    """What ``GET /ui/connections/hook_meta`` answers for ``cometapi``: the React UI renders the form from it."""
    from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService

    if not declares_forms_in_provider_info() and importlib.util.find_spec("wtforms") is None:
        pytest.skip(
            f"Airflow {airflow.__version__} builds connection forms from hooks only when wtforms is installed "
            "(it comes with the FAB provider); without it every form is the generic one"
        )

    (meta,) = [m for m in HookMetaService.hook_meta_data() if m.connection_type == "cometapi"]
    assert meta.hook_class_name == HOOK
    assert meta.hook_name == "CometAPI"
    fields = meta.standard_fields
    assert fields is not None
    assert fields.password is not None and fields.host is not None
    assert (fields.password.title, fields.password.hidden) == ("API key", False)
    assert (fields.host.title, fields.host.placeholder, fields.host.hidden) == (
        "Base URL",
        "https://api.cometapi.com",
        False,
    )
    for hidden in (fields.login, fields.port, fields.url_schema):
        assert hidden is not None and hidden.hidden
    extra = meta.extra_fields or {}
    if not declares_forms_in_provider_info():
        return  # 3.0-3.1 build extra fields from the hook's wtforms widgets, which only their FAB UI renders
    # the extra fields: the optional request ceiling, and how many triggerers split it
    ceiling, triggerers = sorted(extra, key=lambda name: not name.endswith("requests_per_minute"))
    assert ceiling.endswith("requests_per_minute") and triggerers.endswith("triggerers")
    assert "Requests per minute" in json.dumps(extra[ceiling]) and "Triggerers" in json.dumps(extra[triggerers])
