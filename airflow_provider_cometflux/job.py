"""The worker's part of a task: resume or create its predictions (saving their ids), then wait for them inline or
decide to defer.

The operators are thin faces over this module, :mod:`.submission` (creating, in the worker), :mod:`.watching.watch`
(watching, inline or deferred) and :mod:`.completion` (turning events into XComs, files and asset events). See
``docs/architecture.md``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_cometflux.events import prediction_event
from airflow_provider_cometflux.state import StateStore, fingerprint
from airflow_provider_cometflux.submission import DEFAULT_CREATES_PER_MINUTE, Submitted, submit

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_cometflux.cost import CreateBudget
    from airflow_provider_cometflux.hooks.cometapi import CometAPIHook
    from airflow_provider_cometflux.reuse import ReuseIndex

#: Seconds a deferrable task first waits in the worker before deferring (see ``defer_after``).
DEFAULT_DEFER_AFTER = 5.0


@dataclass(frozen=True)
class Waited:
    """
    What the wait in the worker ended with.

    :param events: every prediction's event, in order; ``None`` for one still running (or never created).
    :param defer: whether predictions still run and the task should defer them to the triggerer.
    """

    events: list[dict[str, Any] | None]
    defer: bool = False


@dataclass
class PredictionJob:
    """
    The worker's part of a task: resume or create its predictions (saving their ids), then wait for them inline
    (:meth:`wait_or_defer`).

    :param hook: the hook to create and cancel with.
    :param model: the model id.
    :param payloads: each prediction's full, validated model input.
    :param state_key: the task state store key of this kind of task.
    :param poll_interval: the steady delay between polls of one prediction, in seconds.
    :param end_time: epoch seconds at which the task gives up.
    :param creates_per_minute: the create pace.
    :param prefer_wait: ``Prefer: wait=N`` on each create, if set.
    :param reuse: the reuse index to serve predictions from before creating (``reuse_path``), if any.
    """

    hook: CometAPIHook
    model: str
    payloads: list[dict[str, Any]]
    state_key: str
    poll_interval: float
    end_time: float
    creates_per_minute: float = DEFAULT_CREATES_PER_MINUTE
    prefer_wait: int | None = None
    reuse: ReuseIndex | None = None
    submitted: Submitted | None = field(default=None, init=False)
    #: What :meth:`prepare` found: the ids an earlier attempt saved, the reuse index entries served, by position.
    saved: list[str | None] | None = field(default=None, init=False)
    reused: dict[int, dict[str, Any]] = field(default_factory=dict, init=False)
    _store: StateStore | None = field(default=None, init=False, repr=False)

    @property
    def ids(self) -> list[str | None]:
        """Each prediction's id once :meth:`start` ran (``None`` where none was created)."""
        return list(self.submitted.ids) if self.submitted is not None else [None] * len(self.payloads)

    @property
    def request(self) -> str:
        return fingerprint(self.model, self.payloads)

    def prepare(self, context: Context, log: Any) -> None:
        """
        Before any request: read what an earlier attempt saved, and serve from the reuse index every prompt without
        a saved prediction whose earlier success is found there (its images checked); the decision is saved at
        once, so a retry copies the same images instead of paying.

        :param context: the task's context.
        :param log: the task's logger.
        """
        store = self._store = StateStore(context, self.state_key, self.request)
        if not store.available and context["ti"].try_number > 1:
            log.info("This Airflow has no task state store (3.3+): a retry creates its predictions anew.")
        self.saved = store.load(len(self.payloads))
        if self.reuse is None:
            return
        from airflow_provider_cometflux.reuse import images_hold

        for index, entry in store.load_reused().items():  # an earlier attempt's decision, if its images still hold
            if index < len(self.payloads) and images_hold(entry):
                self.reused[index] = entry
        for index, payload in enumerate(self.payloads):
            if index in self.reused or (self.saved is not None and self.saved[index]):
                continue
            found = self.reuse.lookup(self.model, payload)
            if found is not None:
                self.reused[index] = found
        if self.reused:
            store.save(self.saved or [None] * len(self.payloads), self.reused)
            log.info(
                "%d of %d prompt(s) served from reuse_path: no request for them.", len(self.reused), len(self.payloads)
            )

    def start(self, context: Context, log: Any, budget: CreateBudget | None = None) -> Submitted:
        """
        Resume what an earlier attempt saved, create the rest (but what the reuse index serves), and save the ids as
        they come.

        :param context: the task's context.
        :param log: the task's logger.
        :param budget: ``max_cost_usd`` while creating, if set.
        """
        if self._store is None:
            self.prepare(context, log)
        store, saved, reused = self._store, self.saved, self.reused
        assert store is not None
        latest: list[list[str | None]] = [list(saved or [])]

        def created(ids: list[str | None]) -> None:
            # saved before the next create is sent: a worker killed now loses no id it was told (one write per
            # create; at Replicate's 600 creates a minute that is ten small writes a second)
            latest[0] = ids
            store.save(ids, reused)

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
                    skip=set(reused),
                    budget=budget,
                )
            finally:
                await self.hook.aclose()

        if len(reused) == len(self.payloads):  # all served from the index: no request at all
            submitted = self.submitted = Submitted(ids=[None] * len(self.payloads), reused=dict(reused))
            return submitted
        try:
            submitted = self.submitted = asyncio.run(run())
            submitted.reused = dict(reused)
        finally:  # also when creating stopped on an unusable key, or the task was killed: keep what was made
            store.save(self.submitted.ids if self.submitted is not None else latest[0], reused)
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
        from airflow_provider_cometflux.reuse import reused_event

        submitted = self.submitted
        if submitted is None:
            return [None] * len(self.payloads)
        return [
            reused_event(submitted.reused[i])
            if i in submitted.reused
            else prediction_event(submitted.known[i])
            if i in submitted.known
            else None
            for i in range(len(self.payloads))
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

        watching = [pid if events[i] is None else None for i, pid in enumerate(self.ids)]
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

    def running(self) -> list[str]:
        """The predictions created or resumed and not known to be finished: what a kill cancels."""
        known = self.submitted.known if self.submitted is not None else {}
        return [pid for i, pid in enumerate(self.ids) if pid and i not in known]

    def _pending(self, events: Sequence[dict[str, Any] | None]) -> bool:
        """Whether a prediction of the job has no event yet."""
        return any(event is None and pid for event, pid in zip(events, self.ids, strict=True))

    def wait_or_defer(self, cometapi_conn_id: str, *, deferrable: bool, defer_after: float) -> Waited:
        """
        Wait in the worker as the task asks: to the end (``deferrable=False``, or when the deadline is nearer than
        ``defer_after``), else for ``defer_after`` seconds first, then defer what still runs.

        :param cometapi_conn_id: the connection to poll with.
        :param deferrable: whether the task may defer.
        :param defer_after: seconds to wait in the worker before deferring.
        """
        events = self.known_events()
        if not self._pending(events):
            return Waited(events)
        if not deferrable or self.end_time - time.time() <= defer_after:
            return Waited(self.wait(cometapi_conn_id, events, seconds=None))
        if defer_after > 0:
            events = self.wait(cometapi_conn_id, events, seconds=defer_after)
        return Waited(events, defer=self._pending(events))
