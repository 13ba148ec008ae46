"""The review operator (Airflow 3.1+): a person keeps, rejects or redoes images before they flow on.

Built on Airflow's own Human-in-the-loop operator, so *Required Actions*, the HITL REST API, notifiers, assigned
users and ``response_timeout`` work as for any HITL task. Importing this module on Airflow 3.0 fails with
"needs Airflow 3.1+" (see ``_compat.hitl_classes``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from airflow_provider_cometflux._compat import conf, hitl_classes
from airflow_provider_cometflux.checks import check_count, check_seconds
from airflow_provider_cometflux.contract import (
    KEPT,
    PENDING,
    REJECTED,
    XCOM_REVIEW,
    parse_stored_image_name,
)
from airflow_provider_cometflux.exceptions import CometFluxInputError
from airflow_provider_cometflux.hooks.cometapi import DOWNLOAD_TIMEOUT, MAX_OUTPUT_BYTES
from airflow_provider_cometflux.models import safe_text

if TYPE_CHECKING:
    from airflow.providers.standard.operators.hitl import HITLOperator
    from airflow.providers.standard.utils.skipmixin import SkipMixin
    from airflow.sdk import Context
else:
    HITLOperator, SkipMixin = hitl_classes()

#: The most images one review shows (one option and one form field each).
MAX_REVIEW_IMAGES = 100
#: The task state store key of a redo round's predictions (``<key>_<round>``, Airflow 3.3+).
STATE_KEY = "cometflux_review"
#: The form field asking for new versions of the images not kept.
REDO_PARAM = "redo"
#: The characters of a prompt an option label quotes.
LABEL_PROMPT = 60


def option_label(slot: int, prompt: str) -> str:
    """:return: the option of the image at ``slot`` (0-based): ``"1: <prompt, shortened>"``, unique by its number."""
    text = " ".join(str(prompt).split())
    if len(text) > LABEL_PROMPT:
        text = text[: LABEL_PROMPT - 1] + "…"
    return f"{slot + 1}: {text}" if text else f"{slot + 1}"


def prompt_param(slot: int) -> str:
    """:return: the form field amending the prompt of the image at ``slot`` for a redo."""
    return f"prompt_{slot + 1}"


def flatten_images(value: Any) -> list[str]:
    """
    The image URIs of an upstream output, in order: a ``list[str]`` (the prediction operator), a
    ``list[list[str]]`` (the batch operator, per prompt), or mapped outputs of either (a lazy sequence of them).

    :raises CometFluxInputError: naming ``images``, the bad value and what is allowed.
    """
    found: list[str] = []

    def walk(item: Any, depth: int) -> None:
        if isinstance(item, str):
            if not item.strip():
                raise CometFluxInputError("images: an empty URI is not allowed; expected stored image URIs.")
            found.append(item)
        elif item is None and depth > 0:  # a batch prompt, or a mapped task, without images
            return
        elif depth < 3 and isinstance(item, Iterable) and not isinstance(item, (bytes, Mapping)):
            for sub in item:
                walk(sub, depth + 1)
        else:
            raise CometFluxInputError(
                f"images: {safe_text(repr(item), limit=200)} is not allowed; expected an upstream task's output: "
                "a list of image URIs, a list of lists of them (a batch), or mapped outputs of either."
            )

    walk(value, 0)
    return found


class CometFluxReviewOperator(HITLOperator, SkipMixin):
    """
    Shows images to a person in *Required Actions*, one option per image; returns the URIs of the images kept.

    Every image is shown as a thumbnail served by the provider's UI plugin (behind Airflow's authentication), with
    its prompt. The reviewer ticks the images to keep (``multiple=True``); the task returns their URIs in image
    order, so downstream tasks get only those. Keeping none skips the downstream tasks (as ``ApprovalOperator``
    does on a reject). With ``max_rounds`` > 1 the reviewer may tick *redo*: the images not kept are made again
    (a new seed, or the prompt typed in the form) in the worker, through the provider's one create path, and the
    reviewer is asked again; images kept in an earlier round stay kept. Every round and every verdict is recorded
    in XCom ``review``, in the images' sidecars and in the manifests of their folder.

    :param images: the images: an upstream task's output (the operator's ``list[str]``, the batch's
        ``list[list[str]]``, mapped outputs). Stored images only (the upstream task needs ``output_path``): each
        needs its sidecar for its prompt and, for a redo, its model and input. Templated.
    :param subject: the headline in *Required Actions*. Templated.
    :param body: Markdown shown above the images. Templated.
    :param max_rounds: how many times the reviewer may be asked (1: no redo).
    :param cometapi_conn_id: the connection redo predictions are created with.
    :param poll_interval: seconds between polls of a redo prediction.
    :param timeout: seconds one redo round may take to create, wait for and store its images.
    :param max_output_bytes: the largest redo image stored.
    :param download_timeout: seconds the copy of one redo image may take.
    :param ignore_downstream_trigger_rules: when none is kept, skip every downstream task, not only the direct ones.
    :param kwargs: Airflow's HITL arguments (``notifiers``, ``assigned_users``, ``response_timeout``, ``params``
        other than the review's own) and ``BaseOperator``'s. ``options``, ``multiple`` and ``defaults`` are the
        review's own.
    """

    template_fields = ("images", "subject", "body")
    inherits_from_skipmixin = True
    ui_color = "#fde68a"

    def __init__(
        self,
        *,
        images: Any,
        subject: str = "Review the images",
        body: str | None = None,
        max_rounds: int = 1,
        cometapi_conn_id: str = "cometapi_default",
        poll_interval: float = 2.0,
        timeout: float = 1800.0,
        max_output_bytes: int = MAX_OUTPUT_BYTES,
        download_timeout: float = DOWNLOAD_TIMEOUT,
        ignore_downstream_trigger_rules: bool = False,
        **kwargs: Any,
    ) -> None:
        for name in ("options", "multiple", "defaults"):
            if name in kwargs:
                raise CometFluxInputError(
                    f"{name}: not allowed; the review offers one option per image (multiple), known at run time."
                )
        super().__init__(subject=subject, body=body, options=[], multiple=True, **kwargs)
        self.images = images
        self.max_rounds = check_count("max_rounds", max_rounds, high=20)
        self.cometapi_conn_id = cometapi_conn_id
        self.poll_interval = check_seconds("poll_interval", poll_interval)
        self.redo_timeout = check_seconds("timeout", timeout)
        self.max_output_bytes = max_output_bytes
        self.download_timeout = check_seconds("download_timeout", download_timeout)
        self.ignore_downstream_trigger_rules = ignore_downstream_trigger_rules
        self._own_params = {name: self.params.get_param(name) for name in self.params}
        taken = sorted(name for name in self._own_params if name == REDO_PARAM or name.startswith("prompt_"))
        if taken:
            raise CometFluxInputError(
                f"params: {', '.join(taken)} is not allowed; the review's form uses {REDO_PARAM!r} and 'prompt_<n>'."
            )

    def validate_options(self) -> None:
        """The options are the images, known only at run time (:meth:`resolve`)."""

    # -- the run ----------------------------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        """Read the images' records, offer one option per image, then wait for the reviewer."""
        return self._ask(context, self.prepare())

    def prepare(self) -> dict[str, Any]:
        """:return: the first round's state (XCom ``review``): every image with its prompt, from its sidecar."""
        uris = flatten_images(self.images)
        if not uris:
            raise CometFluxInputError("images: no image to review; expected at least one stored image URI.")
        if len(uris) > MAX_REVIEW_IMAGES:
            raise CometFluxInputError(
                f"images: {len(uris)} images is too many for one review; at most {MAX_REVIEW_IMAGES} "
                "(map the review over smaller groups)."
            )
        images = [self._image(slot, uri) for slot, uri in enumerate(uris)]
        state = {
            "round": 1,
            "max_rounds": self.max_rounds,
            "options": [option_label(image["slot"], image["prompt"]) for image in images],
            "images": images,
            "rounds": [],
        }
        return state

    def _ask(self, context: Context, state: dict[str, Any]) -> Any:
        """Record the round (XCom ``review``), set the options, form and text for it, then wait (Airflow's HITL)."""
        context["ti"].xcom_push(key=XCOM_REVIEW, value=state)
        self.resolve(state)
        self.body = self.review_body(context, state, intro=self.body)
        return HITLOperator.execute(self, context)

    def resolve(self, state: Mapping[str, Any]) -> None:
        """
        The options and form of a review, from its recorded state: set before the HITL request is written, and
        again when the answer arrives (a resumed task is a fresh copy of the operator). The options keep their
        first round's labels: Airflow keeps one request per task instance and a new round reuses it.
        """
        from airflow.sdk.definitions.param import Param, ParamsDict

        images = state["images"]
        self.options = list(state["options"])
        self.multiple = True
        params: dict[str, Any] = dict(self._own_params)
        if self.max_rounds > 1:
            params[REDO_PARAM] = Param(
                False,
                type="boolean",
                title="Make new versions of the images not kept",
                description=f"At most {self.max_rounds} rounds; images kept stay kept.",
            )
            for image in images:
                params[prompt_param(image["slot"])] = Param(
                    "",
                    type="string",
                    title=f"New prompt for image {image['slot'] + 1} (empty: same prompt, new seed)",
                )
        self.params = ParamsDict(params)

    def review_body(self, context: Context, state: Mapping[str, Any], *, intro: str | None = None) -> str:
        """
        The Markdown of the request: each image's thumbnail (through the plugin's authenticated routes, addressed
        by task instance and position, so a new round shows its new image) with its prompt.
        """
        ti = context["ti"]
        base = urlsplit(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")
        parts = [quote(str(part), safe="") for part in (ti.dag_id, ti.run_id, ti.task_id, ti.map_index)]
        lines = [intro.strip(), ""] if intro else []
        lines.append(
            "Tick the images to keep. "
            + (
                f"To make new versions of the others, tick *redo* (round {state['round']} of {self.max_rounds}); "
                "after a redo the pictures below show the new versions."
                if self.max_rounds > 1
                else "The others are dropped."
            )
        )
        for image in state["images"]:
            src = f"{base}/cometflux/thumb/{'/'.join(parts)}/{image['slot']}"
            prompt = _markdown_text(image["prompt"]) or "(prompt not recorded)"
            lines += ["", f"**{image['slot'] + 1}.** {prompt}", "", f"![image {image['slot'] + 1}]({src})"]
        return "\n".join(lines)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """The reviewer answered: record the verdicts, then make a new round or return the kept images."""
        ti = context["ti"]
        state = ti.xcom_pull(task_ids=self.task_id, key=XCOM_REVIEW, map_indexes=ti.map_index)
        if not isinstance(state, Mapping) or not state.get("images"):
            raise CometFluxInputError(
                f"XCom {XCOM_REVIEW!r} of this task is missing: the review cannot tell which images it showed."
            )
        state = dict(state)
        self.resolve(state)
        answer = super().execute_complete(context=context, event=event)
        chosen = set(answer["chosen_options"])
        params_input = answer["params_input"] or {}
        by = _user_name(answer.get("responded_by_user"))
        at = _iso(answer.get("responded_at"))
        images = [dict(image) for image in state["images"]]
        decided = [image for image in images if image["verdict"] != KEPT]  # kept in an earlier round stays kept
        for image in decided:
            verdict = KEPT if state["options"][image["slot"]] in chosen else REJECTED
            image.update(verdict=verdict, by=by, at=at)
        redo = bool(params_input.get(REDO_PARAM)) and state["round"] < self.max_rounds
        rejected = [image for image in images if image["verdict"] == REJECTED]
        state["rounds"] = [
            *state["rounds"],
            {
                "round": state["round"],
                "by": by,
                "at": at,
                "kept": [image["slot"] for image in images if image["verdict"] == KEPT],
                "redo": redo and bool(rejected),
                "images": [dict(image) for image in images],
            },
        ]
        state["images"] = images
        self._record(context, decided)
        if redo and rejected:
            state["round"] += 1
            new = self.redo(context, state["round"], rejected, params_input)
            state["images"] = [new.get(image["slot"], image) for image in images]
            return self._ask(context, state)
        ti.xcom_push(key=XCOM_REVIEW, value=state)
        kept = [image["uri"] for image in images if image["verdict"] == KEPT]
        self.log.info("Kept %d of %d images after %d round(s).", len(kept), len(images), state["round"])
        if not kept:
            self._skip_downstream(context)
        return kept

    # -- the parts --------------------------------------------------------------------------------------------

    def _image(self, slot: int, uri: str) -> dict[str, Any]:
        """An image under review, from its sidecar (its prompt, prediction, model and digest)."""
        from airflow_provider_cometflux.provenance import load_record

        if parse_stored_image_name(uri.rstrip("/").rpartition("/")[2]) is None:
            raise CometFluxInputError(
                f"images[{slot}]: {safe_text(uri, limit=200)!r} is not allowed; expected a stored image URI "
                "(<prediction id>-<n>.<ext>): give the upstream task an output_path."
            )
        record = load_record(uri)
        found = next((image for image in record.images if image.uri == uri), None)
        return {
            "slot": slot,
            "uri": uri,
            "prompt": str(record.input.get("prompt") or ""),
            "prediction_id": record.prediction_id,
            "model": record.model or "",
            "sha256": found.sha256 if found else "",
            "bytes": found.bytes if found else None,
            "content_type": found.content_type if found else "",
            "round": 1,
            "verdict": PENDING,
            "by": None,
            "at": None,
        }

    def _record(self, context: Context, images: Sequence[Mapping[str, Any]]) -> None:
        """This round's verdicts into the sidecars and manifests beside the images."""
        from airflow_provider_cometflux.provenance import record_verdicts
        from airflow_provider_cometflux.storage import as_storage_path

        ti = context["ti"]
        folders: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for image in images:
            if image["verdict"] == PENDING:
                continue
            folder = str(as_storage_path(image["uri"]).parent)
            verdict = {
                "uri": image["uri"],
                "verdict": image["verdict"],
                "by": image["by"],
                "at": image["at"],
                "round": image["round"],
                "task_id": ti.task_id,
                "run_id": ti.run_id,
            }
            folders.setdefault(folder, {}).setdefault(image["prediction_id"], []).append(verdict)
        for folder, verdicts in folders.items():
            record_verdicts(folder, verdicts)

    def redo(
        self, context: Context, round_number: int, images: Sequence[Mapping[str, Any]], params_input: Mapping[str, Any]
    ) -> dict[int, dict[str, Any]]:
        """
        New versions of ``images`` (one prediction each, same model and input, a new seed or the amended prompt),
        created in the worker through :class:`~airflow_provider_cometflux.job.PredictionJob` (ids saved before
        anything else), waited for and stored beside the originals.

        :return: per slot, the new image under review.
        """
        from airflow_provider_cometflux.completion import Outputs, finish_prediction
        from airflow_provider_cometflux.hooks.cometapi import CometAPIHook
        from airflow_provider_cometflux.job import PredictionJob
        from airflow_provider_cometflux.models import validate_input
        from airflow_provider_cometflux.provenance import load_record
        from airflow_provider_cometflux.storage import as_storage_path

        ti = context["ti"]
        by_model: dict[str, list[tuple[Mapping[str, Any], dict[str, Any]]]] = {}
        for image in images:
            record = load_record(image["uri"])
            payload = {k: v for k, v in record.input.items() if not isinstance(v, Mapping)}
            if len(payload) != len(record.input):
                raise CometFluxInputError(
                    f"redo of image {image['slot'] + 1}: its input had an inline image, which records keep only as "
                    "a digest; it cannot be sent again."
                )
            amended = str(params_input.get(prompt_param(image["slot"])) or "").strip()
            if amended:
                payload["prompt"] = amended
            seed_text = f"{ti.dag_id}/{ti.run_id}/{ti.task_id}/{ti.map_index}/{image['slot']}/{round_number}"
            payload["seed"] = int.from_bytes(hashlib.sha256(seed_text.encode()).digest()[:4], "big") % 2**31
            model = record.model or image["model"]
            validate_input(model, payload)
            by_model.setdefault(model, []).append((image, payload))
        hook = CometAPIHook(self.cometapi_conn_id)
        new: dict[int, dict[str, Any]] = {}
        for model, entries in by_model.items():
            job = PredictionJob(
                hook,
                model,
                [payload for _, payload in entries],
                f"{STATE_KEY}_{round_number}",
                poll_interval=self.poll_interval,
                end_time=time.time() + self.redo_timeout,
            )
            job.start(context, self.log)  # ids saved to the task state store as each is created
            ti.xcom_push(key=f"{XCOM_REVIEW}_round_{round_number}_ids", value=job.ids)
            events = job.wait_or_defer(self.cometapi_conn_id, deferrable=False, defer_after=0).events
            for (image, payload), event in zip(entries, events, strict=True):
                folder = as_storage_path(image["uri"]).parent
                outputs = Outputs(output_path=folder, max_bytes=self.max_output_bytes, timeout=self.download_timeout)
                finished = finish_prediction(hook, event, outputs, request_input=payload)
                stored = finished.images[0] if finished.images else {}
                new[image["slot"]] = {
                    **dict(image),
                    "uri": finished.uris[0],
                    "prompt": payload["prompt"],
                    "prediction_id": finished.prediction_id,
                    "model": model,
                    "sha256": stored.get("sha256", ""),
                    "bytes": stored.get("bytes"),
                    "content_type": stored.get("content_type", ""),
                    "round": round_number,
                    "verdict": PENDING,
                    "by": None,
                    "at": None,
                }
        self.log.info("Round %d: %d new image(s) to review.", round_number, len(new))
        return new

    def _skip_downstream(self, context: Context) -> None:
        """No image kept: skip the downstream tasks, as ``ApprovalOperator`` does on a reject."""
        if not self.downstream_task_ids:
            return
        task = context["task"]
        tasks = (
            task.get_flat_relatives(upstream=False)
            if self.ignore_downstream_trigger_rules
            else task.get_direct_relatives(upstream=False)
        )
        self.log.info("No image kept: skipping the downstream tasks.")
        self.skip(ti=context["ti"], tasks=[t for t in tasks if not t.is_teardown])


def _markdown_text(text: str) -> str:
    """A prompt as Markdown shows it literally: one line, markup characters escaped."""
    line = " ".join(str(text).split())
    return "".join("\\" + ch if ch in "\\`*_{}[]()<>#+-.!|~" else ch for ch in line)


def _user_name(user: Any) -> str | None:
    if isinstance(user, Mapping):
        return str(user.get("name") or user.get("id") or "") or None
    return None if user is None else str(user)


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value) if value else datetime.now(timezone.utc).isoformat()
