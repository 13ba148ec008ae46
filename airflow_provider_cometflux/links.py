"""The operator extra link "CometAPI prediction", pointing at the prediction's web page.

The URL is pushed to XCom (under the link's ``xcom_key``) as soon as the prediction exists, so the link works while
the task waits. The Airflow 3 API server reads the link from that XCom only, so it runs no provider code; the worker
calls :meth:`CometAPIPredictionLink.get_link` when the task finishes and stores what it returns under the same key.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import Context

log = logging.getLogger(__name__)

#: Where :meth:`CometAPIPredictionLink.persist` also keeps the URL on the running task, saving a lookup at the end.
_URL_ATTR = "_cometapi_prediction_url"


class CometAPIPredictionLink(BaseOperatorLink):
    """Link from a task to the page of the prediction it created or watched."""

    name = "CometAPI prediction"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        """
        :return: the stored page URL, or ``""`` when the task has not reached a prediction yet. Never raises:
            Airflow 3.0 does not guard this call, and a failure here would fail a finished task.
        """
        url = getattr(operator, _URL_ATTR, None)
        if url is not None:
            return url
        try:
            from airflow.sdk.bases.xcom import BaseXCom

            return BaseXCom.get_value(ti_key=ti_key, key=self.xcom_key) or ""
        except Exception as exc:
            log.warning("Could not read the CometAPI prediction link: %s", exc)
            return ""

    @classmethod
    def persist(cls, context: Context, url: str | None) -> None:
        """
        Store the link's URL for the running task.

        :param context: the task's context.
        :param url: the prediction's page (``urls.web``); ``None`` stores an empty link.
        """
        context["ti"].xcom_push(key=cls().xcom_key, value=url or "")
        task = context.get("task")
        if task is not None:
            setattr(task, _URL_ATTR, url or "")
