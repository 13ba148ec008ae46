"""What finished predictions become in a task: durable copies, sidecars, XComs, asset events, the return value.

One path for every face: :func:`finish_prediction` turns one event into a :class:`Finished` prediction (or raises);
:func:`complete_one` (the operator, the sensor) and :func:`complete_batch` (the batch operator) run it and record
the outcome. Whatever waited (trigger, inline, sensor poke), the same events end here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_cometflux.contract import (
    FAILURE_FIELDS,
    METRIC_IMAGES_ASKED,
    METRIC_IMAGES_RETURNED,
    RECORD_COST,
    RECORD_REUSED_FROM,
    XCOM_COST,
    XCOM_FAILURES,
    XCOM_IMAGES,
    XCOM_PREDICTION,
    XCOM_PREDICTION_ID,
    XCOM_PREDICTION_IDS,
    XCOM_PREDICTIONS,
    XCOM_RETURN_VALUE,
    manifest_name,
)
from airflow_provider_cometflux.cost import BUDGET_STOP
from airflow_provider_cometflux.events import TIMEOUT, raise_for_event
from airflow_provider_cometflux.exceptions import (
    CometAPIError,
    CometFluxBatchFailedError,
    CometFluxBudgetError,
    CometFluxError,
    CometFluxInputError,
    OutputStorageError,
    PredictionTimeoutError,
)
from airflow_provider_cometflux.hooks.cometapi import DOWNLOAD_TIMEOUT, MAX_OUTPUT_BYTES
from airflow_provider_cometflux.models import public_input, safe_text

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath

    from airflow_provider_cometflux.cost import Price
    from airflow_provider_cometflux.hooks.cometapi import CometAPIHook

#: Called with XCom ``cost`` once a task's predictions are recorded (the operators keep it for OpenLineage).
CostSink = Callable[[dict[str, Any]], None]

log = logging.getLogger(__name__)

__all__ = [  # the XCom keys are the contract's; importable from here as they always were
    "XCOM_FAILURES",
    "XCOM_IMAGES",
    "XCOM_PREDICTION",
    "XCOM_PREDICTIONS",
    "XCOM_PREDICTION_ID",
    "XCOM_PREDICTION_IDS",
    "Finished",
    "Outputs",
    "complete_batch",
    "complete_one",
    "finish_prediction",
]

#: Failures listed in a batch task's error message (all of them are in XCom ``failures``).
FAILURES_LISTED = 10
#: The most characters of a prompt a warning or an error message quotes (the whole prompt is in XCom).
PROMPT_QUOTED = 200
#: The status of a prompt whose prediction succeeded but whose images could not be stored.
NOT_STORED = "not_stored"


@dataclass(frozen=True)
class Outputs:
    """
    Where and how a task keeps its images.

    :param output_path: the folder for durable copies, or ``None`` to return the delivery URLs.
    :param output_format: the requested ``output_format``, which delivered files must match.
    :param max_bytes: the largest output copied.
    :param timeout: seconds one output's copy may take.
    :param download_concurrency: predictions of a batch copied at once.
    :param reuse_path: the folder of the reuse index a new success is added to, if any.
    :param prices: the price table each prediction's cost is recorded with (``None``: the default table).
    """

    output_path: str | ObjectStoragePath | None = None
    output_format: str | None = None
    max_bytes: int = MAX_OUTPUT_BYTES
    timeout: float = DOWNLOAD_TIMEOUT
    download_concurrency: int = 8
    reuse_path: str | ObjectStoragePath | None = None
    prices: Mapping[str, Price] | None = None

    @property
    def stored(self) -> bool:
        return self.output_path is not None and self.output_path != ""


@dataclass
class Finished:
    """
    One succeeded prediction, recorded.

    :param record: the XCom ``prediction`` value: the prediction's summary with the request's ``input``.
    :param uris: the stored URIs, or the delivery URLs without ``output_path``.
    :param images: the stored images' metadata (XCom ``images``); empty without ``output_path``.
    :param sidecar: the provenance sidecar's URI, when one was written.
    :param provenance: what the sidecar holds (the batch's manifest repeats it per prompt).
    """

    record: dict[str, Any]
    uris: list[str]
    images: list[dict[str, Any]] = field(default_factory=list)
    sidecar: str | None = None
    provenance: dict[str, Any] | None = None

    @property
    def prediction_id(self) -> str:
        return str(self.record.get("id") or "")

    @property
    def reused(self) -> bool:
        return bool(self.record.get(RECORD_REUSED_FROM))


def recordable(model_input: Mapping[str, Any]) -> dict[str, Any]:
    """
    The input as the records downstream keep it: as the task was given it, made JSON-safe (paths as strings), each
    inline image replaced by its size and digest (:func:`~airflow_provider_cometflux.models.public_input`).
    """
    return public_input(json.loads(json.dumps(dict(model_input), default=str)))


def finish_prediction(
    hook: CometAPIHook,
    event: Any,
    outputs: Outputs,
    request_input: Mapping[str, Any] | None = None,
    *,
    sent_input: Mapping[str, Any] | None = None,
    model: str | None = None,
) -> Finished:
    """
    One prediction event to its result: outputs checked, copied (or, for a prediction reused from ``reuse_path``,
    copied from the earlier run's folder) and described with their cost, or an exception. A new success is added
    to the reuse index when the task has one.

    :param hook: the hook that downloads.
    :param event: the prediction's event.
    :param outputs: where to keep the images.
    :param request_input: the input the task sent (kept :func:`recordable`).
    :param sent_input: the input exactly as sent (inline images as data URIs), the reuse index's key;
        ``request_input`` when not given.
    :param model: the model the task asked for (priced when the prediction's record lacks it).
    :raises PredictionTimeoutError, PredictionFailedError, OutputsRemovedError, CometAPIError: see
        :func:`~airflow_provider_cometflux.events.raise_for_event` and the storage errors.
    """
    from airflow_provider_cometflux import cost

    prediction = raise_for_event(event)
    record = dict(event["prediction"])
    if request_input is not None:
        record["input"] = recordable(request_input)
    urls = prediction.require_outputs()
    _count_images(record, urls)
    entry = event.get(RECORD_REUSED_FROM) if isinstance(event.get(RECORD_REUSED_FROM), Mapping) else None
    model = str(record.get("model") or model or "")
    priced_input = request_input if request_input is not None else record.get("input") or {}
    prices = outputs.prices if outputs.prices is not None else cost.DEFAULT_PRICES
    if entry is not None:
        from airflow_provider_cometflux.reuse import reused_from

        record[RECORD_COST] = {"usd": 0.0, "images": len(entry.get("images") or ())}
        record[RECORD_REUSED_FROM] = reused_from(entry)
    else:
        images_made = cost.image_count(record, len(urls))
        record[RECORD_COST] = cost.prediction_cost(model, priced_input, images_made, prices)
        record[RECORD_REUSED_FROM] = None
    folder = outputs.output_path
    if folder is None or folder == "":
        return Finished(record, urls)
    from airflow_provider_cometflux.storage import images_metadata, store_outputs

    try:
        if entry is not None:
            stored = _copy_reused(entry, folder)
        else:
            stored = store_outputs(
                hook,
                urls,
                folder,
                prediction.id,
                output_format=outputs.output_format,
                max_bytes=outputs.max_bytes,
                timeout=outputs.timeout,
            )
        images = images_metadata(stored)
        finished = Finished(record, [image.uri for image in stored], images)
        _write_sidecar(outputs, finished, keep_existing=entry is not None and _same_folder(entry, folder))
    except CometFluxInputError as exc:  # the output folder refused it after a paid success: name the way back
        raise storage_failed(prediction.id, folder, urls, exc) from exc
    except CometFluxError:  # a delivery URL's answer (expired, too large...): its own message says what to do
        raise
    except Exception as exc:  # the store refused (permissions, a full disk, a missing bucket...)
        raise storage_failed(prediction.id, folder, urls, exc) from exc
    if entry is None and outputs.reuse_path:
        _add_to_index(outputs, model, sent_input if sent_input is not None else request_input, finished)
    return finished


def _count_images(record: dict[str, Any], urls: Sequence[str]) -> None:
    """Add to the record's metrics how many images were asked for and how many came back; log a shortfall."""
    model_input = record.get("input")
    asked = model_input.get("num_outputs") if isinstance(model_input, Mapping) else None
    asked = asked if isinstance(asked, int) and not isinstance(asked, bool) and asked > 0 else 1
    metrics = record.get("metrics")
    record["metrics"] = {
        **(metrics if isinstance(metrics, Mapping) else {}),
        METRIC_IMAGES_ASKED: asked,
        METRIC_IMAGES_RETURNED: len(urls),
    }
    if len(urls) < asked:
        log.warning(
            "Prediction %s returned %d of the %d images asked for (the model's safety checker drops the images it "
            "finds unsafe); keeping those it returned.",
            record.get("id"),
            len(urls),
            asked,
        )


def _copy_reused(entry: Mapping[str, Any], folder: str | ObjectStoragePath) -> list[Any]:
    """The images of a reused prediction, copied into ``folder``; they must still match their sha256."""
    from airflow_provider_cometflux.reuse import copy_images

    stored = copy_images(entry, folder)
    if stored is None:
        raise OutputStorageError(
            f"The images of prediction {entry.get('prediction_id')} (reused from {entry.get('stored_in')}) changed or "
            "went away after they were checked; retry the task: it checks them again and creates anew if needed.",
            prediction_id=str(entry.get("prediction_id") or ""),
        )
    return stored


def _add_to_index(outputs: Outputs, model: str, sent: Mapping[str, Any] | None, finished: Finished) -> None:
    """Add a new success to the reuse index; a store that refuses only costs a later run a create (logged)."""
    from airflow_provider_cometflux.reuse import ReuseIndex
    from airflow_provider_cometflux.storage import as_storage_path

    if sent is None or not model:
        return
    try:
        stored_in = str(as_storage_path(outputs.output_path))  # type: ignore[arg-type]
        ReuseIndex(outputs.reuse_path).add(model, sent, finished.record, finished.images, stored_in)  # type: ignore[arg-type]
    except Exception as exc:
        log.warning(
            "Could not add prediction %s to the reuse index %s: %s",
            finished.prediction_id,
            safe_text(str(outputs.reuse_path), limit=300),
            safe_text(exc, limit=300),
        )


def storage_failed(prediction_id: str, folder: object, urls: Sequence[str], exc: BaseException) -> OutputStorageError:
    """
    The error for a prediction that succeeded (and was paid for) whose images could not be stored: which
    prediction, where its images still are, and how to get them.
    """
    return OutputStorageError(
        f"Prediction {prediction_id} succeeded, but its images could not be stored in "
        f"{safe_text(str(folder), limit=300)!r} ({type(exc).__name__}: {safe_text(exc, limit=300)}). They stay at "
        f"their delivery URLs for about an hour after the prediction completed: {', '.join(map(safe_text, urls))}. "
        "To recover, fix the storage, then retry the task: on Airflow 3.3+ a retry reattaches to prediction "
        f"{prediction_id} through the task state store and downloads its images again; before Airflow 3.3 a retry "
        "creates (and pays for) a new prediction, so download the URLs above within the hour instead if that "
        "matters.",
        prediction_id=prediction_id,
    )


def _write_sidecar(outputs: Outputs, finished: Finished, *, keep_existing: bool = False) -> None:
    """
    The provenance sidecar ``<output_path>/<prediction_id>.json``, written after the images; with
    ``keep_existing`` (images reused in the very folder they were made in) the sidecar of the run that paid for
    them is kept as it is, so it still says what they cost.
    """
    from airflow_provider_cometflux.contract import sidecar_name
    from airflow_provider_cometflux.provenance import sidecar_record, write_sidecar
    from airflow_provider_cometflux.storage import as_storage_path

    finished.provenance = sidecar_record(finished.record, finished.images)
    existing = as_storage_path(outputs.output_path) / sidecar_name(finished.prediction_id)  # type: ignore[arg-type]
    if keep_existing and existing.exists():
        finished.sidecar = str(existing)
        return
    finished.sidecar = write_sidecar(outputs.output_path, finished.provenance)  # type: ignore[arg-type]


def _same_folder(entry: Mapping[str, Any], folder: str | ObjectStoragePath) -> bool:
    """Whether a reused entry's images are stored in ``folder`` itself."""
    from airflow_provider_cometflux.storage import as_storage_path

    return str(as_storage_path(str(entry.get("stored_in") or ""))) == str(as_storage_path(folder))


def cancel_timed_out(hook: CometAPIHook, events: Sequence[Any]) -> None:
    """Cancel (best effort) every prediction whose event says the deadline passed while it still ran."""
    for event in events:
        if isinstance(event, dict) and event.get("status") == TIMEOUT and event.get("prediction_id"):
            hook.cancel_prediction(str(event["prediction_id"]))


def complete_one(
    context: Context,
    event: Any,
    *,
    hook: CometAPIHook,
    outputs: Outputs,
    request_input: Mapping[str, Any] | None,
    model: str | None = None,
    sent_input: Mapping[str, Any] | None = None,
    on_cost: CostSink | None = None,
) -> list[str]:
    """
    A single prediction's end: push XCom ``prediction`` (and ``images``), describe the outlet asset events, and
    return the stored URIs or the delivery URLs; or raise (after cancelling a timed-out prediction, and pushing XCom
    ``prediction`` for one that ended failed, canceled, aborted or without images).

    :param context: the task's context.
    :param event: the prediction's event.
    :param hook: the hook to download and cancel with.
    :param outputs: where to keep the images.
    :param request_input: the input the task sent, when it sent one (the sensor did not).
    :param model: the model the task asked for (recorded when the prediction's own record lacks it).
    :param sent_input: the input exactly as sent (the reuse index's key), when it differs from ``request_input``.
    :param on_cost: called with XCom ``cost`` once it is pushed.

    A mapped task that sent its input (``.partial(...).expand(...)`` of the operator) with ``output_path`` also
    writes ``manifest-<map index>.jsonl``: one line, as a batch's manifest has one per prompt, for its success or
    its failure, so a run's folder holds a manifest line for every mapped prediction.
    """
    ti = context["ti"]
    map_index = getattr(ti, "map_index", -1)
    mapped = outputs.stored and request_input is not None and isinstance(map_index, int) and map_index >= 0
    prompt = str((request_input or {}).get("prompt") or "")
    try:
        finished = finish_prediction(hook, event, outputs, request_input, sent_input=sent_input, model=model)
    except (CometAPIError, OutputStorageError) as exc:
        timed_out = isinstance(exc, PredictionTimeoutError)
        if timed_out:
            cancel_timed_out(hook, [event])
        summary = event.get("prediction") if isinstance(event, dict) else None
        if isinstance(summary, dict) and not timed_out:  # ended without stored images: recorded for the UI
            record = dict(summary)
            if request_input is not None:
                record["input"] = recordable(request_input)
            ti.xcom_push(key=XCOM_PREDICTION, value=record)
        if mapped:
            pid = event.get("prediction_id") if isinstance(event, dict) else None
            status = event.get("status") if isinstance(event, dict) else None
            status = NOT_STORED if isinstance(exc, OutputStorageError) else status
            failure = _failure(map_index, prompt, pid, status, exc.message)
            details = {map_index: _failure_details(event, request_input, model)}
            _try_write_manifest(outputs, [(map_index, prompt)], {}, {map_index: failure}, details, map_index)
        raise
    ti.xcom_push(key=XCOM_PREDICTION, value=finished.record)
    _push_cost(ti, [finished], on_cost)
    if outputs.stored:
        ti.xcom_push(key=XCOM_IMAGES, value=finished.images)
        if mapped:
            _write_manifest(outputs, [(map_index, prompt)], {map_index: finished}, {}, {}, manifest_name(map_index))
        describe_outlets(context, {"images": finished.uris, "prediction_id": finished.prediction_id})
    log.info("Prediction %s done: %d image(s): %s", finished.prediction_id, len(finished.uris), finished.uris)
    return finished.uris


def complete_batch(
    context: Context,
    events: Sequence[Any],
    *,
    prompts: Sequence[str],
    payloads: Sequence[Mapping[str, Any]],
    prediction_ids: Sequence[str | None],
    create_errors: Mapping[int, str],
    hook: CometAPIHook,
    outputs: Outputs,
    fail_on_error: bool,
    model: str | None = None,
    on_cost: CostSink | None = None,
) -> list[list[str]]:
    """
    A batch's end: every prompt's prediction through :func:`finish_prediction` (a few at a time), then XComs
    ``prediction_ids``, ``predictions``, ``images`` (with ``output_path``), ``failures``, a manifest, the outlet
    asset events, and the outputs per prompt; with ``fail_on_error`` a failed prompt fails the task (not retried:
    that would pay for the others again) after all of that is recorded.

    :param events: per prompt, its event (``None`` where it has no prediction).
    :param prompts: the prompts, in order.
    :param payloads: each prompt's input as sent.
    :param prediction_ids: each prompt's prediction id.
    :param create_errors: why a prompt has no prediction, by position.
    :param model: the model the batch asked for (recorded on the manifest's failed lines).
    :param on_cost: called with XCom ``cost`` once it is pushed.

    Prompts the budget (``max_cost_usd``) left uncreated are recorded as ``not_created`` like the others, then the
    task fails with :class:`~airflow_provider_cometflux.exceptions.CometFluxBudgetError`, whatever
    ``fail_on_error`` says.
    """
    cancel_timed_out(hook, events)
    finished: dict[int, Finished] = {}
    failures: dict[int, dict[str, Any]] = {}

    def finish(index: int) -> None:
        try:
            finished[index] = finish_prediction(hook, events[index], outputs, payloads[index], model=model)
        except (CometAPIError, OutputStorageError) as exc:
            event = events[index] if isinstance(events[index], dict) else {}
            status = NOT_STORED if isinstance(exc, OutputStorageError) else event.get("status")
            failures[index] = _failure(index, prompts[index], prediction_ids[index], status, exc.message)

    for index, message in create_errors.items():
        failures[index] = _failure(index, prompts[index], None, "not_created", message)
    watched = [i for i in range(len(prompts)) if i not in failures]
    for index in watched:
        if events[index] is None:
            failures[index] = _failure(index, prompts[index], prediction_ids[index], "error", "it was not watched")
    to_finish = [i for i in watched if i not in failures]
    if outputs.stored and len(to_finish) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(outputs.download_concurrency, thread_name_prefix="cometflux-store") as pool:
            list(pool.map(finish, to_finish))  # a config error (not a CometAPIError) still raises here
    else:
        for index in to_finish:
            finish(index)
    results: list[list[str]] = [finished[i].uris if i in finished else [] for i in range(len(prompts))]
    ti = context["ti"]
    ti.xcom_push(key=XCOM_PREDICTION_IDS, value=list(prediction_ids))
    ti.xcom_push(
        key=XCOM_PREDICTIONS, value=[finished[i].record if i in finished else None for i in range(len(prompts))]
    )
    failed = [failures[i] for i in sorted(failures)]
    ti.xcom_push(key=XCOM_FAILURES, value=failed)
    _push_cost(ti, [finished[i] for i in sorted(finished)], on_cost)
    if outputs.stored:
        ti.xcom_push(key=XCOM_IMAGES, value=[finished[i].images if i in finished else [] for i in range(len(prompts))])
        details = {i: _failure_details(events[i], payloads[i], model) for i in failures}
        name = manifest_name(getattr(ti, "map_index", -1))
        try:
            _write_manifest(outputs, list(enumerate(prompts)), finished, failures, details, name)
        except Exception as exc:
            if not failures:
                raise
            log.warning("Could not write %s: %s", name, safe_text(exc, limit=300))  # the failures are raised below
        flat = [uri for uris in results for uri in uris]
        ids = [finished[i].prediction_id for i in sorted(finished)]
        describe_outlets(context, {"images": flat, "prediction_ids": ids})
    log.info(
        "Batch done: %d of %d prompts succeeded, %d images.",
        len(finished),
        len(prompts),
        sum(len(uris) for uris in results),
    )
    budget_stops = [message for message in create_errors.values() if message.startswith(BUDGET_STOP)]
    if budget_stops:
        ti.xcom_push(key=XCOM_RETURN_VALUE, value=results)
        raise CometFluxBudgetError(
            f"{len(budget_stops)} of {len(prompts)} prompts were not created: {budget_stops[0]}\n"
            + _summary(failed, len(prompts))
        )
    if failed:
        summary = _summary(failed, len(prompts))
        if fail_on_error:
            ti.xcom_push(key=XCOM_RETURN_VALUE, value=results)
            raise CometFluxBatchFailedError(summary)
        log.warning("%s", summary)
    return results


def _push_cost(ti: Any, finished: Sequence[Finished], on_cost: CostSink | None) -> None:
    """XCom ``cost`` over the task's recorded predictions (reused ones at 0)."""
    from airflow_provider_cometflux.cost import total

    spent = total([done.record.get(RECORD_COST) for done in finished], reused=[done.reused for done in finished])
    ti.xcom_push(key=XCOM_COST, value=spent)
    if on_cost is not None:
        on_cost(spent)
    if spent["predictions"]:
        usd = "unknown (a model without a price)" if spent["usd"] is None else f"${spent['usd']:.4f}"
        log.info(
            "Cost: %s for %d image(s) of %d prediction(s), %d reused.",
            usd,
            spent["images"],
            spent["predictions"],
            spent["reused"],
        )


def _write_manifest(
    outputs: Outputs,
    prompts: Sequence[tuple[int, str]],
    finished: Mapping[int, Finished],
    failures: Mapping[int, dict[str, Any]],
    details: Mapping[int, Mapping[str, Any]],
    name: str,
) -> None:
    """One line per ``(index, prompt)``: its success (from its sidecar) or its failure (with ``details``)."""
    from airflow_provider_cometflux.provenance import manifest_row, write_manifest

    rows = []
    for index, prompt in prompts:
        done = finished.get(index)
        rows.append(
            manifest_row(
                index,
                prompt,
                record=None if done is None else done.provenance,
                failure=failures.get(index),
                sidecar_uri=None if done is None else done.sidecar,
                details=details.get(index),
            )
        )
    write_manifest(outputs.output_path, rows, name=name)  # type: ignore[arg-type]


def _try_write_manifest(
    outputs: Outputs,
    prompts: Sequence[tuple[int, str]],
    finished: Mapping[int, Finished],
    failures: Mapping[int, dict[str, Any]],
    details: Mapping[int, Mapping[str, Any]],
    map_index: int,
) -> None:
    """:func:`_write_manifest` while the task is already failing: a store that refuses it only adds a warning."""
    try:
        _write_manifest(outputs, prompts, finished, failures, details, manifest_name(map_index))
    except Exception as exc:
        log.warning("Could not write the manifest of map index %d: %s", map_index, safe_text(exc, limit=300))


def _failure_details(event: Any, request_input: Mapping[str, Any] | None, model: str | None) -> dict[str, Any]:
    """What a failed prompt's manifest line records besides its error: the model, the input sent, the times."""
    summary = event.get("prediction") if isinstance(event, Mapping) else None
    summary = summary if isinstance(summary, Mapping) else {}
    return {
        "model": summary.get("model") or model,
        "input": recordable(request_input) if request_input is not None else {},
        "created_at": summary.get("created_at"),
        "completed_at": summary.get("completed_at"),
    }


def describe_outlets(context: Context, extra: Mapping[str, Any]) -> None:
    """Put what the task stored on the events of its outlet assets, for DAGs scheduled on them."""
    task = context.get("task")
    outlets = getattr(task, "outlets", None) or []
    if not outlets:
        return
    from airflow.sdk import Asset

    for outlet in outlets:
        if isinstance(outlet, Asset):
            context["outlet_events"][outlet].extra.update(dict(extra))


def _failure(index: int, prompt: str, prediction_id: str | None, status: Any, message: str) -> dict[str, Any]:
    return dict(
        zip(FAILURE_FIELDS, (index, prompt, prediction_id, str(status or "error"), safe_text(message)), strict=True)
    )


def _summary(failures: Sequence[Mapping[str, Any]], total: int) -> str:
    lines = [
        f"#{f['index']} {quote_prompt(f['prompt'])} ({f['status']}, prediction {f['prediction_id']}): {f['message']}"
        for f in failures[:FAILURES_LISTED]
    ]
    more = f"\n... and {len(failures) - FAILURES_LISTED} more" if len(failures) > FAILURES_LISTED else ""
    return (
        f"{len(failures)} of {total} prompts failed (the others' images are in XCom 'return_value'; "
        f"every failure is in XCom '{XCOM_FAILURES}'):\n" + "\n".join(lines) + more
    )


def quote_prompt(prompt: object, limit: int = PROMPT_QUOTED) -> str:
    """
    A prompt as a warning or an error message quotes it: whole, in quotes, its control characters escaped; only a
    prompt longer than ``limit`` characters is cut there, and the quote says so.
    """
    text = str(prompt)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r} (cut at {limit} characters)"
