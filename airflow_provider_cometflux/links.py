"""The operator extra link "CometFlux images": the task instance's Images view in the Airflow UI.

On Airflow 3.1+ it opens the provider's Images tab of the task instance (see
:mod:`airflow_provider_cometflux.plugins`); Airflow 3.0 has no plugin UI, so there it opens the task instance's XCom
tab. The service's own page of a prediction (``urls.web``) is not linked: it belongs to the account that ran the
model upstream, which a CometAPI customer cannot open.

The URL is pushed to XCom (under the link's ``xcom_key``) as soon as the prediction exists, so the link works while
the task waits. The Airflow 3 API server reads the link from that XCom only, so it runs no provider code; the worker
calls :meth:`CometAPIPredictionLink.get_link` when the task finishes and stores what it returns under the same key.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import Context

log = logging.getLogger(__name__)

#: Where :meth:`CometAPIPredictionLink.persist` also keeps the URL on the running task, saving a lookup at the end.
_URL_ATTR = "_cometapi_prediction_url"


def _base_url() -> str:
    """:return: ``[api] base_url`` without its trailing slash, or ``""`` (the link is then relative to the UI)."""
    try:
        from airflow.configuration import conf

        return (conf.get("api", "base_url", fallback="") or "").rstrip("/")
    except Exception:  # a link must never fail a task
        return ""


def images_view_url(dag_id: str, run_id: str, task_id: str, map_index: int | None = -1) -> str:
    """
    :param dag_id: the DAG.
    :param run_id: the run.
    :param task_id: the task.
    :param map_index: its map index (``-1`` or ``None`` unmapped).
    :return: the UI address of the task instance's Images view (its XCom tab on Airflow 3.0).
    """
    from airflow_provider_cometflux.plugins import TASK_INSTANCE_ROUTE, ui_plugins_supported

    path = f"/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}/tasks/{quote(task_id, safe='')}"
    if map_index is not None and map_index >= 0:
        path += f"/mapped/{map_index}"
    path += f"/plugin/{TASK_INSTANCE_ROUTE}" if ui_plugins_supported() else "/xcom"
    return _base_url() + path


class CometAPIPredictionLink(BaseOperatorLink):
    """Link from a task to the images it recorded, in the Airflow UI."""

    name = "CometFlux images"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        """
        :return: the task instance's Images view. Never raises: Airflow 3.0 does not guard this call, and a failure
            here would fail a finished task.
        """
        url = getattr(operator, _URL_ATTR, None)
        if url:
            return url
        try:
            return images_view_url(ti_key.dag_id, ti_key.run_id, ti_key.task_id, getattr(ti_key, "map_index", -1))
        except Exception as exc:
            log.warning("Could not build the CometFlux images link: %s", exc)
        try:
            from airflow.sdk.bases.xcom import BaseXCom

            return BaseXCom.get_value(ti_key=ti_key, key=self.xcom_key) or ""
        except Exception as exc:
            log.warning("Could not read the CometFlux images link: %s", exc)
            return ""

    @classmethod
    def persist(cls, context: Context, url: str | None) -> None:
        """
        Store the link for the running task: its Images view, so the link works while the task waits.

        :param context: the task's context.
        :param url: the prediction's upstream page (``urls.web``); not linked (CometAPI users cannot open it), kept
            so the operators' calls stay as they are.
        """
        ti = context["ti"]
        try:
            link = images_view_url(ti.dag_id, ti.run_id, ti.task_id, getattr(ti, "map_index", -1))
        except Exception as exc:
            log.warning("Could not build the CometFlux images link: %s", exc)
            link = ""
        ti.xcom_push(key=cls().xcom_key, value=link)
        task = context.get("task")
        if task is not None:
            setattr(task, _URL_ATTR, link)
