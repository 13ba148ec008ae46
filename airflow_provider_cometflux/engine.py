"""What the operators and the sensor share, as one object each of them holds (``self.engine``).

:class:`Engine` is the hook of the task's connection, where its images go, the deferral to the triggerer, and the
predictions the task ran (for OpenLineage). The operators' sequence (create, record, wait or defer, complete) is
:class:`~airflow_provider_cometflux.operators.base.CometFluxBaseOperator`; the sensor uses the engine as it is.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, NoReturn

from airflow_provider_cometflux._compat import TRIGGER_ON_KILL
from airflow_provider_cometflux.checks import check_count, check_queue, check_seconds
from airflow_provider_cometflux.completion import Outputs

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator, ObjectStoragePath
    from airflow.triggers.base import BaseTrigger

    from airflow_provider_cometflux.cost import Price
    from airflow_provider_cometflux.hooks.cometapi import CometAPIHook
    from airflow_provider_cometflux.triggers.prediction import CometFluxPredictionTrigger

log = logging.getLogger(__name__)

#: Extra time the triggerer gets past ``timeout`` before Airflow itself fails the deferred task; the trigger fires
#: its own ``timeout`` event at ``timeout``, so this only matters when the triggerer is overloaded.
DEFER_GRACE = 60

NO_TRIGGER_ON_KILL = (
    "This Airflow cannot cancel prediction %s if the deferred task is killed (a trigger's on_kill needs 3.3+); "
    "it runs on at CometAPI until it finishes."
)


def defer_timeout(end_time: float) -> timedelta:
    """How long Airflow lets a deferred task wait: to its own deadline, plus :data:`DEFER_GRACE`."""
    return timedelta(seconds=max(0.0, end_time - time.time()) + DEFER_GRACE)


class Engine:
    """
    The parts of a task of this provider that do not depend on how it waits.

    :param cometapi_conn_id: the Airflow connection of type ``cometapi``.
    :param max_output_bytes: the largest image copied to ``output_path``.
    :param download_timeout: seconds the copy of one image may take.
    :param download_concurrency: predictions whose images are copied at once.
    :param trigger_queue: the triggerer queue the task's triggers go to (Airflow 3.2+ with
        ``[triggerer] queues_enabled``); ``None``: the task's own ``queue``, as Airflow does.
    :raises CometFluxInputError: when an argument is not allowed.
    """

    def __init__(
        self,
        cometapi_conn_id: str,
        *,
        max_output_bytes: object,
        download_timeout: object,
        download_concurrency: object = 8,
        trigger_queue: object = None,
    ) -> None:
        self.cometapi_conn_id = cometapi_conn_id
        self.trigger_queue = check_queue("trigger_queue", trigger_queue)
        self.max_output_bytes = check_count("max_output_bytes", max_output_bytes)
        self.download_timeout = check_seconds("download_timeout", download_timeout)
        self.download_concurrency = check_count("download_concurrency", download_concurrency)
        #: The predictions the task made or watched, for OpenLineage.
        self.prediction_ids: list[str] = []
        #: XCom ``cost`` of the task once its predictions are recorded, for OpenLineage.
        self.cost: dict[str, Any] | None = None

    def record_cost(self, cost: dict[str, Any]) -> None:
        """Keep the task's XCom ``cost`` (the completion's ``on_cost``)."""
        self.cost = dict(cost)

    @cached_property
    def hook(self) -> CometAPIHook:
        from airflow_provider_cometflux.hooks.cometapi import CometAPIHook

        return CometAPIHook(self.cometapi_conn_id)

    def outputs(
        self,
        output_path: str | ObjectStoragePath | None,
        model_input: object = None,
        *,
        reuse_path: str | ObjectStoragePath | None = None,
        prices: Mapping[str, Price] | None = None,
    ) -> Outputs:
        """
        Where and how the task keeps its images.

        :param output_path: the rendered ``output_path``.
        :param model_input: the rendered ``input``, whose ``output_format`` the delivered files must match.
        :param reuse_path: the reuse index a new success is added to, if any.
        :param prices: the price table costs are recorded with (``None``: the default table).
        """
        output_format = model_input.get("output_format") if isinstance(model_input, Mapping) else None
        return Outputs(
            output_path,
            output_format,
            self.max_output_bytes,
            self.download_timeout,
            self.download_concurrency,
            reuse_path=reuse_path,
            prices=prices,
        )

    def price_table(self, task_prices: Mapping[str, Price] | None = None, *, strict: bool = False) -> dict[str, Price]:
        """
        The prices a task records and budgets with: the default table, then the connection extra ``prices``, then
        the task's. A connection that cannot be read raises with ``strict`` (before any create), else is logged and
        skipped (after a paid success, recording must not fail on it).
        """
        from airflow_provider_cometflux.cost import price_table

        try:
            account = self.hook.prices
        except Exception as exc:
            if strict:
                raise
            log.warning("The connection's prices could not be read (%s); using the others.", exc)
            account = {}
        return price_table(account, task_prices or {})

    def prediction_trigger(
        self, prediction_id: str, *, poll_interval: float, end_time: float, log: logging.Logger | Any
    ) -> CometFluxPredictionTrigger:
        """The trigger that watches one prediction (and a note when this Airflow cannot cancel it on a kill)."""
        from airflow_provider_cometflux.triggers.prediction import CometFluxPredictionTrigger

        if not TRIGGER_ON_KILL:
            log.info(NO_TRIGGER_ON_KILL, prediction_id)
        return CometFluxPredictionTrigger(
            prediction_id=prediction_id,
            cometapi_conn_id=self.cometapi_conn_id,
            poll_interval=poll_interval,
            end_time=end_time,
        )

    def defer(self, task: BaseOperator, trigger: BaseTrigger, end_time: float) -> NoReturn:
        """
        Hand the wait to the triggerer; the task resumes in its ``execute_complete``.

        With queues enabled (``[triggerer] queues_enabled``, Airflow 3.2+) Airflow gives a deferring task's trigger
        the task's ``queue``; a ``trigger_queue`` takes its place for this deferral only (the task already runs,
        so its executor queue no longer matters), and only triggerers started with ``--queues`` naming it run it.
        """
        if self.trigger_queue is not None:
            task.queue = self.trigger_queue
        task.defer(trigger=trigger, method_name="execute_complete", timeout=defer_timeout(end_time))

    def lineage(self, model: str, output_path: str | ObjectStoragePath | None, *, failed: bool) -> Any:
        """OpenLineage: the output folder as one dataset, and the prediction ids (see ``lineage.py``)."""
        from airflow_provider_cometflux.lineage import operator_lineage

        folders = [str(output_path)] if output_path else []
        return operator_lineage(
            model=model, prediction_ids=list(self.prediction_ids), output_folders=folders, failed=failed, cost=self.cost
        )
