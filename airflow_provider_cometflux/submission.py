"""Creating predictions: the only place that spends money, run in the worker, never in a trigger.

:func:`submit` first decides what to do with the predictions an earlier attempt of the task saved (the vocabulary of
Airflow's ``ResumableJobMixin``: *reconnect* to one still running, keep one *already succeeded*, *submit anew* one
that ended failed, canceled, aborted, empty or gone), then creates every prompt that has no prediction, spaced at
``creates_per_minute`` (:class:`~airflow_provider_cometflux.pacing.Pacer`: a 429 pauses every create for its
``Retry-After`` and slows the pace), and reports each new id at once so the caller can save it before anything else
happens. Should the worker die, a retry of the task
resumes from the saved ids and creates only the prompts that have none.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_cometflux.exceptions import (
    CometAPIAuthError,
    CometAPIConnectionConfigError,
    CometAPIError,
    PredictionMayExistError,
)
from airflow_provider_cometflux.models import FAILED_STATUSES, Prediction, check_prediction_id
from airflow_provider_cometflux.pacing import Pacer

if TYPE_CHECKING:
    from airflow_provider_cometflux.cost import CreateBudget
    from airflow_provider_cometflux.hooks.cometapi import CometAPIHook

log = logging.getLogger(__name__)

#: Replicate allows 600 creates per minute.
DEFAULT_CREATES_PER_MINUTE = 600.0
#: The longest a resume read of one saved prediction may take (the task's deadline bounds it too).
RESUME_READ_SECONDS = 60.0
#: Creates (or resume reads) open at once.
CREATE_CONCURRENCY = 8


@dataclass
class Submitted:
    """
    Where the creates left a task. Every list is in prompt order.

    :param ids: each prompt's prediction id (``None`` where none was made).
    :param read: every prediction as last read (a create's answer, or a resumed one), by position.
    :param errors: why a prompt has no prediction, by position.
    :param creates: how many creates were sent.
    :param rate_limited: how many 429s the creates met.
    :param reused: the reuse index entries served instead of a create, by position (no id, no error).
    """

    ids: list[str | None]
    read: dict[int, Prediction] = field(default_factory=dict)
    errors: dict[int, CometAPIError] = field(default_factory=dict)
    creates: int = 0
    rate_limited: int = 0
    reused: dict[int, dict[str, Any]] = field(default_factory=dict)

    @property
    def known(self) -> dict[int, Prediction]:
        """The predictions already read in a terminal status (a resumed success, a create answered finished)."""
        return {i: p for i, p in self.read.items() if p.is_terminal}


async def submit(
    hook: CometAPIHook,
    model: str,
    payloads: Sequence[Mapping[str, Any]],
    *,
    saved: Sequence[str | None] | None = None,
    creates_per_minute: float = DEFAULT_CREATES_PER_MINUTE,
    prefer_wait: int | None = None,
    deadline: float | None = None,
    on_created: Callable[[list[str | None]], None] | None = None,
    skip: Collection[int] = (),
    budget: CreateBudget | None = None,
) -> Submitted:
    """
    Resume what an earlier attempt saved, then create every prompt that has no prediction.

    :param hook: the hook to create with (the caller closes its async session).
    :param model: the model id.
    :param payloads: each prompt's full model input, validated.
    :param saved: the ids an earlier attempt of the task saved, in prompt order.
    :param creates_per_minute: the create pace.
    :param prefer_wait: ``Prefer: wait=N`` on each create (1..60), if set.
    :param deadline: epoch seconds after which no create starts; the prompts left get an error.
    :param on_created: called with the ids so far after each new prediction (before any other create is
        answered), so the caller can save them.
    :param skip: positions served otherwise (reused from ``reuse_path``): never created.
    :param budget: ``max_cost_usd``: creating stops before spent plus in flight would pass it, and the prompts
        left get an error beginning with :data:`~airflow_provider_cometflux.cost.BUDGET_STOP`.
    :raises CometAPIConnectionConfigError: the connection is unusable (nothing more is created).
    :raises CometAPIAuthError: the key was refused (nothing more is created).
    """
    result = Submitted(ids=[None] * len(payloads))
    if saved is not None and len(saved) == len(payloads):
        await _resume(hook, saved, result, deadline)
    todo = deque(i for i in range(len(payloads)) if result.ids[i] is None and i not in result.errors and i not in skip)
    if budget is not None:  # what an earlier attempt created is spent, or in flight
        for index, pid in enumerate(result.ids):
            if pid is not None:
                budget.commit(index, result.read[index].raw if index in result.read else None)
    over_budget: list[int] = []
    pacer = Pacer(creates_per_minute)
    limit = asyncio.Semaphore(CREATE_CONCURRENCY)
    fatal: list[BaseException] = []

    def retried(error: CometAPIError, delay: float) -> None:
        if error.http_status == 429:
            pause = pacer.limited(error.retry_after)
            log.warning("The service limits the create rate (429); pausing creates for %.1fs.", pause)

    async def create(index: int) -> None:
        try:
            result.creates += 1
            raw = await hook.acreate_prediction(model, payloads[index], wait=prefer_wait, on_retry=retried)
            prediction = Prediction(raw)
            pid = check_prediction_id(prediction.id)
        except (CometAPIAuthError, CometAPIConnectionConfigError) as exc:
            fatal.append(exc)
            result.errors[index] = _as_api_error(exc)
            if budget is not None:
                budget.release(index)
        except CometAPIError as exc:
            if exc.http_status == 429 and (deadline is None or time.time() < deadline):
                # refused, so nothing was made or paid for: the prompt waits its turn again, after the pause (a
                # spent limit without Retry-After resets only after ~30 s, longer than the hook's own retries)
                pause = pacer.limited(exc.retry_after)
                log.warning("Creates are still refused (429); prompt %d is tried again in %.1fs.", index, pause)
                if budget is not None:
                    budget.release(index)
                todo.append(index)
            else:
                result.errors[index] = exc
                if budget is not None and not isinstance(exc, PredictionMayExistError):
                    budget.release(index)
        else:
            pacer.answered()
            result.ids[index] = pid
            result.read[index] = prediction
            if budget is not None:
                budget.commit(index, prediction.raw)
            if on_created is not None:
                on_created(list(result.ids))
        finally:
            limit.release()

    if todo:
        try:  # the connection is read once before the first create, so the creates start in prompt order
            await hook.arequests_per_minute()
        except CometAPIConnectionConfigError as exc:
            fatal.append(exc)
    tasks: set[asyncio.Task[None]] = set()
    try:
        while not fatal:
            if not todo:  # every prompt is sent; one refused with a 429 comes back here
                if not tasks:
                    break
                await asyncio.wait(set(tasks), return_when=asyncio.FIRST_COMPLETED)
                continue
            if deadline is not None and time.time() >= deadline:
                break
            await pacer.wait()
            await limit.acquire()
            if fatal:  # a create answered meanwhile that the key or connection is unusable
                limit.release()
                break
            if budget is not None:
                if not budget.allows(todo[0]):
                    limit.release()
                    over_budget.append(todo[0])
                    break
                budget.commit(todo[0])  # in flight from now on
            task = asyncio.ensure_future(create(todo.popleft()))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
    finally:
        # cancelled (the task is being killed): let creates already sent answer, so none goes unrecorded
        if tasks:
            await asyncio.wait(set(tasks), timeout=30)
    result.rate_limited = pacer.rate_limited
    if over_budget and budget is not None:
        log.warning("Creating stopped: %s; %d prompt(s) left uncreated.", budget.stop_message(todo[0]), len(todo))
        for index in todo:
            result.errors[index] = CometAPIError(budget.stop_message(index))
    for index in todo:
        if index not in result.errors:
            result.errors[index] = CometAPIError(
                f"prompt {index} was not submitted: "
                + ("the key or connection is unusable" if fatal else "the task's timeout passed first")
            )
    if fatal:
        raise fatal[0]
    return result


async def _resume(hook: CometAPIHook, saved: Sequence[str | None], result: Submitted, deadline: float | None) -> None:
    """Read each saved prediction once and decide: reconnect, already succeeded, or submit anew."""
    limit = asyncio.Semaphore(CREATE_CONCURRENCY)
    decisions = {"reconnect": 0, "already_succeeded": 0, "submit_anew": 0}

    async def decide(index: int, pid: str) -> None:
        async with limit:
            try:
                bound = RESUME_READ_SECONDS if deadline is None else min(RESUME_READ_SECONDS, deadline - time.time())
                prediction = Prediction(await hook.aget_prediction(pid, timeout=max(0.1, bound)))
            except (CometAPIAuthError, CometAPIConnectionConfigError):
                raise
            except CometAPIError as exc:
                if exc.http_status != 404 and exc.transient:
                    result.ids[index] = pid  # unknown for now: watch it rather than pay again
                    decisions["reconnect"] += 1
                    return
                log.warning("Prediction %s of an earlier attempt cannot be read (%s); creating anew.", pid, exc)
                decisions["submit_anew"] += 1
                return
        if prediction.status in FAILED_STATUSES or (prediction.succeeded and not _has_outputs(prediction)):
            log.info(
                "Prediction %s of an earlier attempt ended %s%s; creating anew.",
                pid,
                prediction.status,
                "" if prediction.status in FAILED_STATUSES else " without outputs",
            )
            decisions["submit_anew"] += 1
            return
        result.ids[index] = pid
        result.read[index] = prediction
        if prediction.is_terminal:
            decisions["already_succeeded"] += 1
        else:
            decisions["reconnect"] += 1

    await asyncio.gather(*(decide(i, pid) for i, pid in enumerate(saved) if isinstance(pid, str) and pid))
    if any(decisions.values()):
        log.info(
            "Predictions of an earlier attempt: %d reconnected, %d already succeeded, %d to submit anew.",
            decisions["reconnect"],
            decisions["already_succeeded"],
            decisions["submit_anew"],
        )


def _has_outputs(prediction: Prediction) -> bool:
    try:
        return bool(prediction.output_urls)
    except ValueError:
        return False


def _as_api_error(exc: BaseException) -> CometAPIError:
    return exc if isinstance(exc, CometAPIError) else CometAPIError(str(exc))
