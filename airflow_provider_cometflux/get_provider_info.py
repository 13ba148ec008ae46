"""Provider metadata, read by Airflow through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from airflow_provider_cometflux import __version__


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
                "external-doc-url": "https://api.cometapi.com",
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
                "python-modules": ["airflow_provider_cometflux.operators.flux"],
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
                "python-modules": ["airflow_provider_cometflux.triggers.prediction"],
            }
        ],
        "connection-types": [
            {
                "hook-class-name": "airflow_provider_cometflux.hooks.cometapi.CometAPIHook",
                "connection-type": "cometapi",
            }
        ],
        "extra-links": ["airflow_provider_cometflux.links.CometAPIPredictionLink"],
    }
