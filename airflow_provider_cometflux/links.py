"""The operator extra link "CometAPI prediction", pointing at the prediction's web page.

The URL is pushed to XCom as soon as the prediction exists (so the link works while the task waits); the
Airflow 3 UI reads it from XCom, so the API server runs no provider code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

try:
    from airflow.sdk import BaseOperatorLink
except ImportError:  # Airflow 3.0
    from airflow.models.baseoperatorlink import BaseOperatorLink  # type: ignore[no-redef]

if TYPE_CHECKING:
    from airflow.sdk import Context


class CometAPIPredictionLink(BaseOperatorLink):
    """Link from a task to the page of the prediction it created or watched."""

    name = "CometAPI prediction"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        """:return: the stored page URL, or ``""`` when the task has not reached a prediction yet."""
        from airflow.sdk.bases.xcom import BaseXCom

        return BaseXCom.get_value(ti_key=ti_key, key=self.xcom_key) or ""

    @classmethod
    def persist(cls, context: Context, url: str | None) -> None:
        """
        Store the link's URL for the running task.

        :param context: the task's context.
        :param url: the prediction's page (``urls.web``); ``None`` stores an empty link.
        """
        context["ti"].xcom_push(key=cls().xcom_key, value=url or "")
