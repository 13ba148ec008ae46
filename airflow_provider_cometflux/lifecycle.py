"""What every face of the provider shares between "the task starts" and "the predictions are done".

The operator, the batch operator and the sensor are thin faces over this module, :mod:`.submission` (creating, in
the worker), :mod:`.triggers.watch` (watching, inline or deferred) and :mod:`.completion` (turning events into
XComs, files and asset events). See ``docs/architecture.md``.

Here: argument checks, the request fingerprint, the task state store (Airflow 3.3+) that lets a retried attempt
resume instead of paying again, and :class:`PredictionJob`, which runs the worker's part: resume, create, save,
and wait inline for a while.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow_provider_cometflux.events import prediction_event
from airflow_provider_cometflux.exceptions import CometFluxInputError
from airflow_provider_cometflux.submission import DEFAULT_CREATES_PER_MINUTE, Submitted, submit

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_cometflux.hooks.cometapi import CometAPIHook

#: Seconds a deferrable task first waits in the worker before deferring (see ``defer_after``).
DEFAULT_DEFER_AFTER = 5.0
#: Extra time the triggerer gets past ``timeout`` before Airflow itself fails the deferred task; the trigger fires
#: its own ``timeout`` event at ``timeout``, so this only matters when the triggerer is overloaded.
DEFER_GRACE = 60

NO_TRIGGER_ON_KILL = (
    "This Airflow cannot cancel prediction %s if the deferred task is killed (a trigger's on_kill needs 3.3+); "
    "it runs on at CometAPI until it finishes."
)


def check_seconds(name: str, value: object, *, zero: bool = False) -> float:
    """
    :raises CometFluxInputError: when ``value`` is not a number of seconds above 0 (or >= 0 with ``zero``).
    """
    bad = isinstance(value, bool) or not isinstance(value, (int, float)) or value != value
    if bad or not (value >= 0 if zero else value > 0):  # type: ignore[operator]
        expected = "a number of seconds >= 0" if zero else "a number above 0"
        raise CometFluxInputError(f"{name}: {value!r} is not allowed; expected {expected}.")
    return float(value)  # type: ignore[arg-type]


def check_count(name: str, value: object, *, low: int = 1, high: int | None = None) -> int:
    """
    :raises CometFluxInputError: when ``value`` is not an integer from ``low`` (to ``high``).
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        span = f"{low}..{high}" if high is not None else f">= {low}"
        raise CometFluxInputError(f"{name}: {value!r} is not allowed; expected an integer {span}.")
    return value


def fingerprint(model: str, payloads: Sequence[Mapping[str, Any]]) -> str:
    """Identifies a request, so a retry resumes only predictions made for the same model and inputs."""
    text = json.dumps({"model": model, "inputs": list(payloads)}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class StateStore:
    """
    The task's state store (Airflow 3.3+) as this provider uses it: the ids of the predictions a task created,
    under one key, with the fingerprint of the request they were made for.

    :param context: the task's context.
    :param key: the key to use.
    :param request: the request's :func:`fingerprint`.
    """

    def __init__(self, context: Context, key: str, request: str) -> None:
        self._store = context.get("task_state_store")
        self.key = key
        self.request = request

    @property
    def available(self) -> bool:
        return self._store is not None

    def load(self, count: int) -> list[str | None] | None:
        """The ids saved for this request, if there are ``count`` of them."""
        if self._store is None:
            return None
        saved = self._store.get(self.key)
        if not isinstance(saved, dict) or saved.get("request") != self.request:
            return None
        ids = saved.get("prediction_ids")
        if not isinstance(ids, list) or len(ids) != count:
            return None
        return [pid if isinstance(pid, str) and pid else None for pid in ids]

    def save(self, ids: Sequence[str | None]) -> None:
        if self._store is not None and any(ids):
            self._store.set(self.key, {"request": self.request, "prediction_ids": list(ids)})


@dataclass
class PredictionJob:
    """
    The worker's part of a task: resume or create its predictions (saving their ids), then wait for them inline.

    :param hook: the hook to create and cancel with.
    :param model: the model id.
    :param payloads: each prediction's full, validated model input.
    :param state_key: the task state store key of this kind of task.
    :param poll_interval: the steady delay between polls of one prediction, in seconds.
    :param end_time: epoch seconds at which the task gives up.
    :param creates_per_minute: the create pace.
    :param prefer_wait: ``Prefer: wait=N`` on each create, if set.
    """

    hook: CometAPIHook
    model: str
    payloads: list[dict[str, Any]]
    state_key: str
    poll_interval: float
    end_time: float
    creates_per_minute: float = DEFAULT_CREATES_PER_MINUTE
    prefer_wait: int | None = None
    submitted: Submitted | None = field(default=None, init=False)

    @property
    def request(self) -> str:
        return fingerprint(self.model, self.payloads)

    def start(self, context: Context, log: Any) -> Submitted:
        """
        Resume what an earlier attempt saved, create the rest, and save the ids as they come.

        :param context: the task's context.
        :param log: the task's logger.
        """
        store = StateStore(context, self.state_key, self.request)
        if not store.available and context["ti"].try_number > 1:
            log.info("This Airflow has no task state store (3.3+): a retry creates its predictions anew.")
        saved = store.load(len(self.payloads))
        latest: list[list[str | None]] = [list(saved or [])]

        def created(ids: list[str | None]) -> None:
            # saved before the next create is sent: a worker killed now loses no id it was told (one write per
            # create; at Replicate's 600 creates a minute that is ten small writes a second)
            latest[0] = ids
            store.save(ids)

        async def run() -> Submitted:
            try:
                return await submit(
                    self.hook,
                    self.model,
                    self.payloads,
                    saved=saved,
                    creates_per_minute=self.creates_per_minute,
                    prefer_wait=self.prefer_wait,
                    deadline=self.end_time,
                    on_created=created,
                )
            finally:
                await self.hook.aclose()

        try:
            submitted = self.submitted = asyncio.run(run())
        finally:  # also when creating stopped on an unusable key, or the task was killed: keep what was made
            store.save(self.submitted.ids if self.submitted is not None else latest[0])
        if len(self.payloads) > 1 or submitted.creates > 1:
            log.info(
                "%d predictions (%d created now, %d 429s met), %d prompts without one.",
                sum(pid is not None for pid in submitted.ids),
                submitted.creates - len(submitted.errors),
                submitted.rate_limited,
                len(submitted.errors),
            )
        return submitted

    def known_events(self) -> list[dict[str, Any] | None]:
        """Per prediction, its event when it is already known to be terminal (else ``None``)."""
        submitted = self.submitted
        if submitted is None:
            return [None] * len(self.payloads)
        return [
            prediction_event(submitted.known[i]) if i in submitted.known else None for i in range(len(self.payloads))
        ]

    def wait(
        self, cometapi_conn_id: str, events: list[dict[str, Any] | None], *, seconds: float | None
    ) -> list[dict[str, Any] | None]:
        """
        Wait in the worker, with the same engine as the triggers, for the predictions without an event yet.

        :param cometapi_conn_id: the connection to poll with.
        :param events: what is known so far; ``None`` entries are watched.
        :param seconds: stop after this long, leaving the rest ``None`` (to defer them); ``None``: until every one
            has its event (a ``timeout`` event at ``end_time``).
        :return: the events, in order.
        """
        from airflow_provider_cometflux.watching.watch import watch_events

        ids = self.submitted.ids if self.submitted is not None else [None] * len(events)
        watching = [pid if events[i] is None else None for i, pid in enumerate(ids)]
        if not any(watching):
            return events
        found = asyncio.run(
            watch_events(
                cometapi_conn_id,
                watching,
                poll_interval=self.poll_interval,
                end_time=self.end_time,
                stop_after=seconds,
            )
        )
        return [event if event is not None else found[i] for i, event in enumerate(events)]

    def cancel(self, prediction_ids: Sequence[str | None]) -> None:
        """Cancel these predictions, best effort (a killed task, a deadline)."""
        for pid in prediction_ids:
            if pid:
                self.hook.cancel_prediction(pid)


def pending(job: PredictionJob, events: Sequence[dict[str, Any] | None]) -> bool:
    """Whether a prediction of the job has no event yet."""
    ids = job.submitted.ids if job.submitted is not None else []
    return any(event is None and pid for event, pid in zip(events, ids, strict=False))


def settle(
    job: PredictionJob,
    cometapi_conn_id: str,
    events: list[dict[str, Any] | None],
    *,
    deferrable: bool,
    defer_after: float,
) -> list[dict[str, Any] | None] | None:
    """
    Wait in the worker as the task asks: to the end (``deferrable=False``), or for ``defer_after`` seconds first.

    :return: every prediction's event, or ``None`` when some still run and the task should defer.
    """
    if not pending(job, events):
        return events
    remaining = job.end_time - time.time()
    if not deferrable or remaining <= defer_after:
        return job.wait(cometapi_conn_id, events, seconds=None)
    if defer_after > 0:
        events = job.wait(cometapi_conn_id, events, seconds=defer_after)
        if not pending(job, events):
            return events
    return None


def defer_timeout(end_time: float) -> timedelta:
    """How long Airflow lets a deferred task wait: to its own deadline, plus :data:`DEFER_GRACE`."""
    return timedelta(seconds=max(0.0, end_time - time.time()) + DEFER_GRACE)


def recordable(model_input: Mapping[str, Any]) -> dict[str, Any]:
    """The input as the task was given it, made JSON-safe (paths as strings) for the records downstream."""
    return json.loads(json.dumps(dict(model_input), default=str))
