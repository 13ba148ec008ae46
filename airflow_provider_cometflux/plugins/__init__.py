"""The provider's Airflow UI plugin (Airflow 3.1+): an Images view per task instance and a gallery per DAG run.

Registered through the ``airflow.plugins`` entry point, so installing the package is enough. The API server mounts
the FastAPI app (:mod:`airflow_provider_cometflux.plugins.app`) at :data:`URL_PREFIX`; the two external views put it
in the task instance and DAG run pages. Workers load plugins too: this module imports only the
provider's ``_compat`` (the Airflow classes a worker loads anyway), and the app is built only when the API server
asks for it. Airflow 3.0 has no plugin UI: there the plugin registers nothing.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_cometflux._compat import AirflowPlugin, ui_plugins_supported

#: Where the API server mounts the app.
URL_PREFIX = "/cometflux"
#: The UI routes of the two views (``/plugin/<url_route>`` under a task instance or a DAG run).
TASK_INSTANCE_ROUTE = "cometflux-images"
DAG_RUN_ROUTE = "cometflux-gallery"


def task_instance_view_href() -> str:
    """:return: the external view's ``href``; the UI fills the placeholders (not ``{MAP_INDEX}`` when unmapped)."""
    return URL_PREFIX + "/ti/{DAG_ID}/{RUN_ID}/{TASK_ID}?map_index={MAP_INDEX}"


class CometFluxUIPlugin(AirflowPlugin):
    """The CometFlux Images view and gallery."""

    name = "cometflux"
    external_views: list[Any] = (
        [
            {
                "name": "Images",
                "href": task_instance_view_href(),
                "destination": "task_instance",
                "url_route": TASK_INSTANCE_ROUTE,
            },
            {
                "name": "Image gallery",
                "href": URL_PREFIX + "/run/{DAG_ID}/{RUN_ID}",
                "destination": "dag_run",
                "url_route": DAG_RUN_ROUTE,
            },
        ]
        if ui_plugins_supported()
        else []
    )

    _apps: list[Any] | None = None

    @property
    def fastapi_apps(self) -> list[Any]:  # type: ignore[override]
        """The app, built on first use (by the API server only)."""
        if not ui_plugins_supported():
            return []
        if self._apps is None:
            from airflow_provider_cometflux.plugins.app import create_app

            self._apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "CometFlux images"}]
        return self._apps
