"""The sequence every operator of this provider runs: create in the worker, record the ids, wait or defer, complete."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_provider_cometflux._compat import BaseOperator
from airflow_provider_cometflux.checks import check_budget, check_count, check_rate, check_seconds, check_usd
from airflow_provider_cometflux.engine import Engine
from airflow_provider_cometflux.job import PredictionJob
from airflow_provider_cometflux.submission import DEFAULT_CREATES_PER_MINUTE

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath
    from airflow.triggers.base import BaseTrigger

    from airflow_provider_cometflux.completion import Outputs
    from airflow_provider_cometflux.cost import CreateBudget, Price
    from airflow_provider_cometflux.submission import Submitted


class CometFluxBaseOperator(BaseOperator):
    """
    Creates predictions in the worker (resuming those an earlier attempt saved), records their ids at once, waits
    for them in the worker or defers to the triggerer, then completes: the same steps for every operator here.

    A subclass holds its own arguments and gives the steps that differ: :meth:`payloads` (the checked model
    inputs), :meth:`record` (what it pushes once the predictions exist), :meth:`trigger` (what watches them from
    the triggerer) and :meth:`finish` (their events into the task's result); its ``execute_complete`` finishes
    after a deferral.

    :param input: the model inputs (templated in the subclasses).
    :param model: the model id ``owner/name``.
    :param cometapi_conn_id: the Airflow connection of type ``cometapi`` holding the API key.
    :param deferrable: wait in the triggerer instead of the worker.
    :param poll_interval: seconds between polls of one prediction once its first quick polls are done.
    :param timeout: seconds the task may take, from its start; at the deadline running predictions are cancelled.
    :param output_path: a folder URI or ``ObjectStoragePath`` to copy the images into.
    :param defer_after: with ``deferrable=True``, seconds to wait in the worker before deferring.
    :param max_output_bytes: the largest image copied to ``output_path``.
    :param download_timeout: seconds the copy of one image may take.
    :param download_concurrency: predictions whose images are copied at once.
    :param creates_per_minute: the create pace.
    :param prefer_wait: if set (1..60), ``Prefer: wait`` seconds asked on each create.
    :param unchecked_inputs: model inputs sent even when the provider's schema of the model refuses them (its
        rules are Replicate's as last checked, and the service may have changed since): each override is logged
        as a warning naming the input, the value and the rule overridden. The prompt is always checked.
    :param trigger_queue: the triggerer queue of the task's triggers (Airflow 3.2+, ``[triggerer] queues_enabled``);
        ``None``: the task's ``queue``, as Airflow does.
    :param reuse_path: a folder URI or ``ObjectStoragePath`` holding the index of earlier successes (templated in
        the subclasses); needs ``output_path``.
    :param max_cost_usd: the budget of the task in US dollars, if any.
    :param prices: the account's prices, ``{"<owner/name>": <USD per image>}`` (or ``{"usd": x, "per":
        "megapixel"}``), over the connection extra ``prices`` and the default table.
    """

    #: The task state store key holding this kind of task's prediction ids across attempts (Airflow 3.3+).
    state_key: ClassVar[str]
    ui_color = "#f3e8ff"

    def __init__(
        self,
        *,
        input: Mapping[str, Any] | None,
        model: str,
        cometapi_conn_id: str,
        deferrable: bool,
        poll_interval: float,
        timeout: float,
        output_path: str | ObjectStoragePath | None,
        defer_after: float,
        max_output_bytes: int,
        download_timeout: float,
        download_concurrency: int = 8,
        creates_per_minute: float = DEFAULT_CREATES_PER_MINUTE,
        prefer_wait: int | None = None,
        unchecked_inputs: Sequence[str] = (),
        trigger_queue: str | None = None,
        reuse_path: str | ObjectStoragePath | None = None,
        max_cost_usd: float | None = None,
        prices: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        from airflow_provider_cometflux.cost import parse_prices

        self.reuse_path = reuse_path
        self.max_cost_usd = check_usd("max_cost_usd", max_cost_usd)
        self.prices = dict(prices or {})
        self._task_prices = parse_prices(self.prices, "prices")
        if isinstance(unchecked_inputs, str) or not all(isinstance(name, str) for name in unchecked_inputs):
            from airflow_provider_cometflux.exceptions import CometFluxInputError

            raise CometFluxInputError(
                f"unchecked_inputs: {unchecked_inputs!r} is not allowed; expected a list of input names."
            )
        self.unchecked_inputs = list(unchecked_inputs)
        self.input = input
        self.model = model
        self.cometapi_conn_id = cometapi_conn_id
        self.deferrable = deferrable
        self.creates_per_minute = check_rate("creates_per_minute", creates_per_minute)
        self.poll_interval = check_seconds("poll_interval", poll_interval)
        self.timeout = check_seconds("timeout", timeout)
        self.output_path = output_path
        self.prefer_wait = None if prefer_wait is None else check_count("prefer_wait", prefer_wait, high=60)
        self.defer_after = check_seconds("defer_after", defer_after, zero=True)
        self.engine = Engine(
            cometapi_conn_id,
            max_output_bytes=max_output_bytes,
            download_timeout=download_timeout,
            download_concurrency=download_concurrency,
            trigger_queue=trigger_queue,
        )
        self._job: PredictionJob | None = None

    # -- the steps a subclass gives ---------------------------------------------------------------------------

    def payloads(self) -> list[dict[str, Any]]:
        """Every prediction's rendered, validated model input: every check runs before any request is made."""
        raise NotImplementedError

    def record(self, context: Context, submitted: Submitted) -> None:
        """Push what the task records as soon as its predictions exist (their ids), or raise."""
        raise NotImplementedError

    def trigger(self, job: PredictionJob) -> BaseTrigger:
        """The trigger that watches the job's running predictions, by id only."""
        raise NotImplementedError

    def finish(self, context: Context, job: PredictionJob, events: list[dict[str, Any] | None]) -> Any:
        """The task's result from every prediction's event, after a wait in the worker."""
        raise NotImplementedError

    def stores_images(self) -> bool:
        """Whether this run copies images to ``output_path`` (checked writable before any create)."""
        return self.output_path is not None and self.output_path != ""

    # -- the sequence -----------------------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        return self.wait(context, self.start(context))

    def start(self, context: Context) -> PredictionJob:
        """
        Check the inputs and that ``output_path`` can be written to (nothing is paid for before a failure that can
        be foreseen), resume or create the predictions (saving their ids), and record them.
        """
        payloads = self.payloads()
        reuse = self._reuse_index()
        if self.stores_images():
            from airflow_provider_cometflux.storage import check_writable

            check_writable(self.output_path)  # type: ignore[arg-type]
            if reuse is not None:
                check_writable(self.reuse_path)  # type: ignore[arg-type]
        job = self._job = PredictionJob(
            self.engine.hook,
            self.model,
            payloads,
            self.state_key,
            poll_interval=self.poll_interval,
            end_time=time.time() + self.timeout,
            creates_per_minute=self.creates_per_minute,
            prefer_wait=self.prefer_wait,
            reuse=reuse,
        )
        job.prepare(context, self.log)  # the reuse index is read before any request
        submitted = job.start(context, self.log, budget=self._budget(job))
        self.engine.prediction_ids = [pid for pid in submitted.ids if pid]
        self.record(context, submitted)
        return job

    def _reuse_index(self) -> Any:
        """The reuse index of ``reuse_path`` (which needs ``output_path``: delivery URLs expire), or ``None``."""
        if self.reuse_path is None or self.reuse_path == "":
            return None
        if not self.stores_images():
            from airflow_provider_cometflux.exceptions import CometFluxInputError

            raise CometFluxInputError(
                f"reuse_path: {str(self.reuse_path)!r} needs output_path (and a task that waits for its images): "
                "reused images are copied from where an earlier run stored them, and delivery URLs expire."
            )
        from airflow_provider_cometflux.reuse import ReuseIndex

        return ReuseIndex(self.reuse_path)

    def price_table(self, *, strict: bool = False) -> dict[str, Price]:
        """
        The prices this task records and budgets with: the default table, then the connection extra ``prices``,
        then the task's ``prices``. A connection that cannot be read raises with ``strict`` (before any create),
        else is logged and skipped (after a paid success, recording must not fail on it).
        """
        return self.engine.price_table(self._task_prices, strict=strict)

    def _budget(self, job: PredictionJob) -> CreateBudget | None:
        """``max_cost_usd``: refuse before any request when the estimate is above it, else the budget to create by."""
        if self.max_cost_usd is None:
            return None
        from airflow_provider_cometflux.cost import CreateBudget, estimate

        prices = self.price_table(strict=True)
        todo = [payload for i, payload in enumerate(job.payloads) if i not in job.reused]
        estimated = check_budget(
            self.max_cost_usd,
            self.model,
            [estimate(self.model, payload, prices) for payload in todo],
            served=len(job.reused),
        )
        self.log.info(
            "Estimated cost $%.4f for %d prediction(s) (%d reused), within max_cost_usd $%.4f.",
            estimated,
            len(todo),
            len(job.reused),
            self.max_cost_usd,
        )
        return CreateBudget(self.max_cost_usd, self.model, job.payloads, prices)

    def outputs(self, model_input: object = None) -> Outputs:
        """Where and how this task keeps and records its images (and the reuse index and prices it records with)."""
        return self.engine.outputs(
            self.output_path, model_input, reuse_path=self.reuse_path or None, prices=self.price_table()
        )

    def wait(self, context: Context, job: PredictionJob) -> Any:
        """Wait in the worker, or defer (to ``execute_complete``) what still runs after ``defer_after``."""
        waited = job.wait_or_defer(self.cometapi_conn_id, deferrable=self.deferrable, defer_after=self.defer_after)
        if waited.defer:
            self.engine.defer(self, self.trigger(job), job.end_time)
        self._job = None
        return self.finish(context, job, waited.events)

    def on_kill(self) -> None:
        """Cancel (best effort) the predictions still running when the task is killed while it runs in the worker."""
        job = self._job
        running = job.running() if job is not None else []
        if job is not None and running:
            self.log.info("Task killed: cancelling prediction(s) %s.", ", ".join(running))
            job.cancel(running)

    # -- shared by every operator -----------------------------------------------------------------------------

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the output folder as one dataset, and the prediction ids (see ``lineage.py``)."""
        return self.engine.lineage(self.model, self.output_path, failed=False)

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        """OpenLineage on failure: the predictions that were made."""
        return self.engine.lineage(self.model, self.output_path, failed=True)
