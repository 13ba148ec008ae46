"""What the three faces (operator, batch operator, sensor) share beyond the engine: hook, outputs, lineage."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_provider_cometflux.completion import Outputs
from airflow_provider_cometflux.lifecycle import check_count, check_seconds

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_cometflux.hooks.cometapi import CometAPIHook


class CometFluxFace:
    """
    Mixed into the operators and the sensor: the attributes below are set by their ``__init__``.

    ``_lineage_ids`` holds the predictions the task made or watched, for OpenLineage.
    """

    cometapi_conn_id: str
    output_path: str | ObjectStoragePath | None
    input: Mapping[str, Any] | None = None
    model: str = ""
    max_output_bytes: int
    download_timeout: float
    download_concurrency: int = 8
    _lineage_ids: list[str]

    def _set_outputs(self, max_output_bytes: object, download_timeout: object) -> None:
        self.max_output_bytes = check_count("max_output_bytes", max_output_bytes)
        self.download_timeout = check_seconds("download_timeout", download_timeout)
        self._lineage_ids = []

    @cached_property
    def hook(self) -> CometAPIHook:
        from airflow_provider_cometflux.hooks.cometapi import CometAPIHook

        return CometAPIHook(self.cometapi_conn_id)

    def _outputs(self) -> Outputs:
        output_format = self.input.get("output_format") if isinstance(self.input, Mapping) else None
        return Outputs(
            self.output_path, output_format, self.max_output_bytes, self.download_timeout, self.download_concurrency
        )

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the output folder as one dataset, and the prediction ids (see ``lineage.py``)."""
        return self._lineage(failed=False)

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        """OpenLineage on failure: the predictions that were made."""
        return self._lineage(failed=True)

    def _lineage(self, *, failed: bool) -> Any:
        from airflow_provider_cometflux.lineage import operator_lineage

        folders = [str(self.output_path)] if self.output_path else []
        return operator_lineage(
            model=self.model, prediction_ids=list(self._lineage_ids), output_folders=folders, failed=failed
        )
