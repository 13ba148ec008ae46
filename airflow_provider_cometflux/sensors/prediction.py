"""The sensor: wait for an existing prediction (poke, reschedule or deferrable) and return its images."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_cometflux._compat import AirflowSensorTimeout, BaseSensorOperator, PokeReturnValue, conf
from airflow_provider_cometflux.completion import complete_one
from airflow_provider_cometflux.engine import Engine
from airflow_provider_cometflux.events import prediction_event
from airflow_provider_cometflux.exceptions import PredictionTimeoutError
from airflow_provider_cometflux.hooks.cometapi import DOWNLOAD_TIMEOUT, MAX_OUTPUT_BYTES
from airflow_provider_cometflux.links import CometAPIPredictionLink
from airflow_provider_cometflux.models import Prediction, check_prediction_id, note_status

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath


class CometFluxPredictionSensor(BaseSensorOperator):
    """
    Waits for a prediction created elsewhere (e.g. by ``CometFluxPredictionOperator(wait_for_completion=False)``)
    and returns the same ``list[str]`` as the operator: stored URIs with ``output_path``, else delivery URLs.

    Fails when the prediction ends ``failed``, ``canceled`` or ``aborted``, with the service's error text, and
    when it succeeded without images (without retries when the service removed them). At ``timeout`` it cancels
    the prediction (best effort) and raises ``AirflowSensorTimeout`` in every mode (poke, reschedule, deferrable).

    :param prediction_id: the prediction to wait for (templated), e.g.
        ``"{{ ti.xcom_pull(task_ids='submit', key='prediction_id') }}"``.
    :param cometapi_conn_id: the Airflow connection of type ``cometapi``.
    :param output_path: a folder URI or ``ObjectStoragePath`` to copy the images into (templated).
    :param deferrable: wait in the triggerer. Defaults to ``[operators] default_deferrable``.
    :param poke_interval: seconds between polls (also the trigger's poll interval).
    :param timeout: seconds to wait before failing (the usual sensor ``timeout``); 600 by default.
    :param max_output_bytes: the largest image copied to ``output_path``.
    :param download_timeout: seconds the copy of one image may take.
    :param trigger_queue: the triggerer queue of the sensor's trigger (Airflow 3.2+, ``[triggerer] queues_enabled``);
        ``None``: the task's ``queue``, as Airflow does.
    """

    template_fields: Sequence[str] = ("prediction_id", "output_path")
    operator_extra_links = (CometAPIPredictionLink(),)
    ui_color = "#f3e8ff"

    def __init__(
        self,
        *,
        prediction_id: str,
        cometapi_conn_id: str = "cometapi_default",
        output_path: str | ObjectStoragePath | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poke_interval: float = 2.0,
        timeout: float = 600,
        max_output_bytes: int = MAX_OUTPUT_BYTES,
        download_timeout: float = DOWNLOAD_TIMEOUT,
        trigger_queue: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, timeout=timeout, **kwargs)
        self.prediction_id = prediction_id
        self.cometapi_conn_id = cometapi_conn_id
        self.output_path = output_path
        self.deferrable = deferrable
        self.engine = Engine(
            cometapi_conn_id,
            max_output_bytes=max_output_bytes,
            download_timeout=download_timeout,
            trigger_queue=trigger_queue,
        )
        #: The model, once a prediction told it (for OpenLineage: the sensor is not told the model).
        self.model = ""
        self._link_stored = False
        self._last_status = "unknown"

    def execute(self, context: Context) -> Any:
        check_prediction_id(self.prediction_id)
        self.engine.prediction_ids = [self.prediction_id]
        if not self.deferrable:
            try:
                return super().execute(context)
            except AirflowSensorTimeout as exc:  # poke and reschedule modes: the deadline cancels, as elsewhere
                self.engine.hook.cancel_prediction(self.prediction_id)
                text = f"Prediction {self.prediction_id}: gave up after {self.timeout:g}s; last status"
                raise AirflowSensorTimeout(f"{text} '{self._last_status}'; cancelled (best effort).") from exc
        first = self.poke(context)  # check once: a finished prediction needs no trip to the triggerer
        if first.is_done:
            return first.xcom_value
        end_time = time.time() + self.timeout
        trigger = self.engine.prediction_trigger(
            self.prediction_id, poll_interval=self.poke_interval, end_time=end_time, log=self.log
        )
        self.engine.defer(self, trigger, end_time)

    def poke(self, context: Context) -> PokeReturnValue:
        prediction = Prediction(self.engine.hook.get_prediction(self.prediction_id))
        self._last_status = prediction.status
        if not self._link_stored:
            CometAPIPredictionLink.persist(context, prediction.web_url)
            self._link_stored = True
        if not prediction.is_terminal:
            note_status(prediction)
            self.log.info("Prediction %s is %s.", self.prediction_id, prediction.status)
            return PokeReturnValue(is_done=False)
        return PokeReturnValue(is_done=True, xcom_value=self._complete(context, prediction_event(prediction)))

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> list[str]:
        """
        Finish after a deferred wait: raise on every event but a success with images.

        :param context: the task's context.
        :param event: a prediction event from the trigger.
        """
        self.engine.prediction_ids = [self.prediction_id]
        try:
            return self._complete(context, event)
        except PredictionTimeoutError as exc:  # the same outcome as in poke and reschedule modes (it was cancelled)
            raise AirflowSensorTimeout(f"{exc.message}; cancelled (best effort).") from exc

    def _complete(self, context: Context, event: dict[str, Any] | None) -> list[str]:
        summary = event.get("prediction") if isinstance(event, dict) else None
        if isinstance(summary, dict) and summary.get("model"):
            self.model = str(summary["model"])  # for lineage: the sensor is not told the model
        outputs = self.engine.outputs(self.output_path, prices=self.engine.price_table())
        return complete_one(context, event, hook=self.engine.hook, outputs=outputs, request_input=None)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the output folder as one dataset, and the prediction id (see ``lineage.py``)."""
        return self.engine.lineage(self.model, self.output_path, failed=False)

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        """OpenLineage on failure: the prediction watched."""
        return self.engine.lineage(self.model, self.output_path, failed=True)
