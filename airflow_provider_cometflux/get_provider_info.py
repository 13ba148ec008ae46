"""Provider metadata, read by Airflow through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from airflow_provider_cometflux import __version__

#: The service's address, shown as the "Base URL" placeholder (the hook's default).
DEFAULT_BASE_URL = "https://api.cometapi.com"
#: The connection extra holding the optional request ceiling.
REQUESTS_PER_MINUTE = "requests_per_minute"
#: The connection extra saying how many triggerers poll the account at once (they split the ceiling).
TRIGGERERS = "triggerers"
#: The connection extra of the account's prices, ``{"<owner/name>": <USD per image>}`` (set in the extra's JSON).
PRICES = "prices"


def get_provider_info() -> dict[str, Any]:
    """:return: the provider info dict (it validates against Airflow's ``provider_info.schema.json``)."""
    return {
        "package-name": "airflow-provider-cometflux",
        "name": "CometAPI FLUX",
        "description": "Generate images with FLUX models through CometAPI's Replicate-format API.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "CometAPI FLUX",
                "external-doc-url": DEFAULT_BASE_URL,
                "tags": ["service"],
            }
        ],
        "hooks": [
            {
                "integration-name": "CometAPI FLUX",
                "python-modules": ["airflow_provider_cometflux.hooks.cometapi"],
            }
        ],
        "operators": [
            {
                "integration-name": "CometAPI FLUX",
                "python-modules": [
                    "airflow_provider_cometflux.operators.flux",
                    "airflow_provider_cometflux.operators.batch",
                ],
            }
        ],
        "sensors": [
            {
                "integration-name": "CometAPI FLUX",
                "python-modules": ["airflow_provider_cometflux.sensors.prediction"],
            }
        ],
        "triggers": [
            {
                "integration-name": "CometAPI FLUX",
                "python-modules": [
                    "airflow_provider_cometflux.triggers.prediction",
                    "airflow_provider_cometflux.triggers.batch",
                ],
            }
        ],
        "connection-types": [
            {
                "hook-class-name": "airflow_provider_cometflux.hooks.cometapi.CometAPIHook",
                "hook-name": "CometAPI",
                "connection-type": "cometapi",
                # Read by Airflow 3.2+ without importing the hook; older releases ask the hook's
                # get_ui_field_behaviour(), which returns the same form.
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "login", "port", "extra"],
                    "relabeling": {"password": "API key", "host": "Base URL"},
                    "placeholders": {"host": DEFAULT_BASE_URL, "password": "sk-..."},
                },
                # The key and the base URL live in standard fields; ``extra`` holds only the optional ceiling
                # and how many triggerers share it.
                "conn-fields": {
                    REQUESTS_PER_MINUTE: {
                        "label": "Requests per minute",
                        "description": "Optional: the most requests per minute this account may make (polls of "
                        "every trigger on one triggerer share it). Leave empty to adapt to the service's 429s.",
                        "schema": {"type": ["integer", "null"], "minimum": 1},
                    },
                    TRIGGERERS: {
                        "label": "Triggerers",
                        "description": "Optional: how many triggerers run this account's triggers at once; each "
                        "polls at most its share of Requests per minute. 1 when empty (one dedicated triggerer).",
                        "schema": {"type": ["integer", "null"], "minimum": 1},
                    },
                },
            }
        ],
        "extra-links": ["airflow_provider_cometflux.links.CometAPIPredictionLink"],
        "task-decorators": [
            {"name": "cometflux", "class-name": "airflow_provider_cometflux.decorators.cometflux.cometflux_task"}
        ],
    }
