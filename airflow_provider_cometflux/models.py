"""What a prediction is: statuses, output normalising, model ids and per-model input validation.

Pure data handling: nothing here speaks HTTP or touches Airflow, so it is cheap to import and easy to test.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import logging
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_cometflux import schema
from airflow_provider_cometflux.exceptions import CometFluxInputError, OutputsRemovedError, PredictionFailedError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "black-forest-labs/flux-schnell"
#: The FLUX models CometAPI serves (``owner/name``); a 404 on a create suggests the nearest of them.
KNOWN_MODELS: tuple[str, ...] = tuple(name for name, rules in schema.MODELS.items() if rules.served_by_cometapi)

IN_FLIGHT_STATUSES = frozenset({"starting", "processing"})
FAILED_STATUSES = frozenset({"failed", "canceled", "aborted"})
SUCCESS_STATUS = "succeeded"
TERMINAL_STATUSES = FAILED_STATUSES | {SUCCESS_STATUS}

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def safe_text(text: object, *, limit: int = 2000) -> str:
    """
    Service-provided text made safe to log or raise: control characters (ANSI escapes, newlines that could forge
    a log line) are shown escaped (``\\x1b``, ``\\n``), and the text is cut at ``limit`` characters.

    :param text: what the service said.
    :param limit: the most characters kept.
    """
    value = str(text)
    if len(value) > limit:
        value = value[:limit] + "..."
    return _CONTROL.sub(lambda m: _NAMED_ESCAPES.get(m.group(), f"\\x{ord(m.group()):02x}"), value)


#: What to do after a prediction that did not succeed, per status.
_AFTER_FAILURE = {
    "failed": "Change the prompt or input the service refused (or safety_tolerance), then run the task again.",
    "canceled": "It was cancelled (by a user, the task's timeout or Cancel-After); run the task again if still wanted.",
    "aborted": "The service dropped it before it started; run the task again (retries create a new prediction).",
}
_AFTER_OTHER = "Run the task again; if it repeats, report the prediction id to CometAPI."

_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_PREDICTION_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def split_model(model: object) -> tuple[str, str]:
    """
    Check a model id of the form ``owner/name`` and split it.

    :param model: the model id, e.g. ``black-forest-labs/flux-schnell``.
    :return: ``(owner, name)``.
    :raises CometFluxInputError: when the id is not ``owner/name``.
    """
    if not isinstance(model, str) or not _MODEL_ID.match(model):
        raise CometFluxInputError(
            f"model: {model!r} is not a model id; expected 'owner/name' "
            f"such as {DEFAULT_MODEL!r} (letters, digits, '.', '_', '-')."
        )
    owner, name = model.split("/")
    return owner, name


def check_prediction_id(prediction_id: object) -> str:
    """
    Check that a prediction id is a non-empty token that is safe to put in a URL path.

    :param prediction_id: the id as given by the user or the service.
    :raises CometFluxInputError: when it is empty or holds characters other than letters, digits, ``_``, ``-``.
    """
    if not isinstance(prediction_id, str) or not _PREDICTION_ID.match(prediction_id):
        raise CometFluxInputError(
            f"prediction_id: {prediction_id!r} is not a prediction id; expected letters, digits, '_' or '-'."
        )
    return prediction_id


def normalize_output(output: object) -> list[str]:
    """
    Turn a prediction's ``output`` into a list of http(s) URLs.

    FLUX schnell and dev answer a list, FLUX 1.1 pro and the kontext models one string; ``None`` means none yet.

    :param output: the ``output`` field of a prediction.
    :raises ValueError: on a value that is not a URL string or a list of them, or a URL that is not http(s).
    """
    if output is None:
        return []
    items = [output] if isinstance(output, str) else output
    if not isinstance(items, list):
        raise ValueError(f"unexpected output {type(output).__name__}: expected a URL or a list of URLs")
    urls: list[str] = []
    for item in items:
        if not isinstance(item, str) or urlsplit(item).scheme not in ("http", "https"):
            raise ValueError(f"refusing output {str(item)[:100]!r}: only http(s) URLs are accepted")
        urls.append(item)
    return urls


_FRACTION_RE = re.compile(r"(?<=:\d\d)\.(\d+)")


def parse_time(value: Any) -> datetime | None:
    """
    A service timestamp as an aware datetime: ISO 8601 with ``Z`` or an offset (a naive one is read as UTC).

    :param value: the timestamp (a string, or a datetime already).
    :return: the time, or ``None`` when ``value`` is empty or not a timestamp.
    """
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if not isinstance(value, str) or not value:
        return None
    # Python 3.10 reads 0, 3 or 6 digits of a second's fraction only: make it 6
    text = _FRACTION_RE.sub(lambda m: "." + m.group(1)[:6].ljust(6, "0"), value.replace("Z", "+00:00"), count=1)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class Prediction:
    """
    A read-only view of a prediction as the service answered it.

    :param raw: the prediction JSON.
    """

    raw: Mapping[str, Any] = field(repr=False)

    @property
    def id(self) -> str:
        return str(self.raw.get("id") or "")

    @property
    def status(self) -> str:
        return str(self.raw.get("status") or "")

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def succeeded(self) -> bool:
        return self.status == SUCCESS_STATUS

    @property
    def error(self) -> str | None:
        err = self.raw.get("error")
        if err in (None, ""):
            return None
        if isinstance(err, Mapping):
            return safe_text(err.get("message") or err.get("detail") or json.dumps(dict(err)))
        return safe_text(err)

    def epoch(self, key: str) -> float | None:
        """
        One of the prediction's timestamps in Unix seconds, or ``None`` when it is missing or unreadable.

        :param key: ``created_at``, ``started_at`` or ``completed_at``.
        """
        when = parse_time(self.raw.get(key))
        return None if when is None else when.timestamp()

    @property
    def output_urls(self) -> list[str]:
        return normalize_output(self.raw.get("output"))

    @property
    def data_removed(self) -> bool:
        return self.raw.get("data_removed") is True

    def require_outputs(self) -> list[str]:
        """
        The output URLs of a succeeded prediction; a success without any is a loss, never an empty result.

        :raises OutputsRemovedError: the service removed the outputs (``data_removed``): not retried.
        :raises PredictionFailedError: no output, or an output that is not an http(s) URL.
        """
        try:
            urls = self.output_urls
        except ValueError as exc:
            raise PredictionFailedError(
                f"Prediction {self.id} succeeded with an unusable output: {safe_text(exc)}", prediction_id=self.id
            ) from None
        if urls:
            return urls
        if self.data_removed:
            raise OutputsRemovedError(
                f"Prediction {self.id} succeeded, but the service has removed its outputs (data_removed: it deletes "
                "them about an hour after a prediction ends); they will not come back. Set output_path so images "
                "are copied as soon as they are ready.",
                prediction_id=self.id,
            )
        raise PredictionFailedError(
            f"Prediction {self.id} succeeded without any output (output: {safe_text(repr(self.raw.get('output')))})"
            ": there are no images to return.",
            prediction_id=self.id,
        )

    @property
    def web_url(self) -> str | None:
        """The page for people (``urls.web``); never used for API calls."""
        urls = self.raw.get("urls")
        web = urls.get("web") if isinstance(urls, Mapping) else None
        return web if isinstance(web, str) and web.startswith(("http://", "https://")) else None

    def failure_message(self) -> str:
        """A message for a prediction that did not succeed, with the service's error text and the id."""
        reason = self.error or "the service gave no error message"
        text = f"Prediction {self.id} ended with status '{self.status}': {reason}"
        return f"{text}{'' if text.endswith(('.', '!', '?')) else '.'} {_AFTER_FAILURE.get(self.status, _AFTER_OTHER)}"

    def summary(self) -> dict[str, Any]:
        """
        The parts worth keeping downstream (XCom ``prediction``, events): no logs, nothing secret, inline input
        images only as their size and sha256 (:func:`public_input`).
        """
        keys = (
            "id",
            "model",
            "version",
            "status",
            "error",
            "created_at",
            "started_at",
            "completed_at",
            "metrics",
            "data_removed",
        )
        out = {k: self.raw.get(k) for k in keys if k in self.raw}
        out["output"] = self.raw.get("output")
        if isinstance(self.raw.get("input"), Mapping):
            out["input"] = public_input(self.raw["input"])
        web = self.web_url
        if web:
            out["web_url"] = web
        return out


def note_status(prediction: Prediction) -> None:
    """Log a status the provider does not know; such a prediction is treated as still in flight."""
    if prediction.status not in TERMINAL_STATUSES | IN_FLIGHT_STATUSES:
        log.warning(
            "Prediction %s has unknown status %s; treating it as still running.",
            prediction.id,
            safe_text(repr(prediction.status), limit=80),
        )


# ----------------------------------------------------------------------------------------------------------
# Input validation
# ----------------------------------------------------------------------------------------------------------

#: Inputs that carry an image: an http(s) URL or a data URI (the operator inlines local and storage paths).
IMAGE_INPUTS = schema.IMAGE_INPUTS


def build_input(prompt: str | None, input: Mapping[str, Any] | None) -> dict[str, Any]:
    """
    Merge ``prompt`` into ``input`` (``prompt`` wins) and check that the result can be sent as JSON.

    :param prompt: the prompt, or ``None`` to use ``input["prompt"]``.
    :param input: the other model inputs.
    :raises CometFluxInputError: when ``input`` is not a mapping or cannot be serialised as JSON.
    """
    if input is not None and not isinstance(input, Mapping):
        raise CometFluxInputError(f"input: {input!r} is not allowed; expected a mapping of model inputs.")
    merged = dict(input or {})
    if prompt is not None:
        merged["prompt"] = prompt
    try:
        json.dumps(merged, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise CometFluxInputError(f"input: cannot be sent as JSON ({err}); use strings, numbers and booleans.") from err
    return merged


def validate_input(model: str, input: Mapping[str, Any], *, unchecked: Collection[str] = ()) -> None:
    """
    Validate model inputs before any request is made.

    Every model needs a non-empty string ``prompt``. For the FLUX models in :data:`~airflow_provider_cometflux.schema.
    MODELS`, whatever their schema refuses fails (:func:`~airflow_provider_cometflux.schema.problems`: types,
    enumerations, ranges, images, array limits, cross-field rules), and unknown keys are logged as a warning, as
    are inputs the service ignores (``resolution`` with a ``custom`` aspect ratio).

    The schema is Replicate's as last checked (:attr:`~airflow_provider_cometflux.schema.ModelSchema.checked`) and
    the service may have changed since: a refusal of an input named in ``unchecked`` is logged as a warning naming
    what is overridden, and the input is sent as it is.

    :param model: the model id (already checked with :func:`split_model`).
    :param input: the merged model inputs.
    :param unchecked: the inputs whose schema rules are overridden (the operators' ``unchecked_inputs``); a rule
        about an array's item or a cross-field rule is overridden by the name of the input it is reported on.
    :raises CometFluxInputError: naming the field, the bad value and what is allowed.
    """
    prompt = input.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise CometFluxInputError(f"input.prompt: {prompt!r} is not allowed; expected a non-empty string.")
    model_schema = schema.MODELS.get(model)
    if model_schema is None:
        return
    for name in input:
        if name not in model_schema.inputs:
            log.warning(
                "input.%s is not a known input of %s; sending it anyway (known: %s).",
                name,
                model,
                ", ".join(sorted(model_schema.inputs)),
            )
    for note in schema.ignored(model, input):
        log.warning("%s by %s; it is sent anyway.", note, model)
    found = []
    for problem in schema.problems(model, input):
        if problem.field.partition(".")[0] in unchecked:
            log.warning(
                "%s; sent anyway: unchecked_inputs overrides the rule of %s last checked on %s (%s).",
                input_problem_message(problem, model_schema),
                model,
                model_schema.checked,
                model_schema.source,
            )
        else:
            found.append(problem)
    if found:
        raise CometFluxInputError(input_problem_message(found[0], model_schema))


def input_problem_message(problem: schema.Problem, model_schema: schema.ModelSchema) -> str:
    """
    :param problem: what a model's schema refuses.
    :param model_schema: the model's schema (a cross-field rule's message says what its other inputs allow).
    :return: the message naming the field, the bad value and what is allowed.
    """
    rule = problem.rule
    problem = dataclasses.replace(problem, value=_public(problem.value))  # an inline image as its size and digest
    if isinstance(rule, schema.Needs):
        needed = " and ".join(f"input.{name} ({model_schema.inputs[name].describe()})" for name in rule.needs)
        return f"{problem.where}: {problem.value!r} needs {needed}; give them, or another {problem.field}."
    if isinstance(rule, schema.Limit):
        return f"{problem.where}: {problem.value!r} is out of range; expected {rule.describe()}."
    if rule is None:
        return f"{problem.where}: missing; it is required."
    verdict = "is out of range" if problem.kind in (schema.MINIMUM, schema.MAXIMUM) else "is not allowed"
    return f"{problem.where}: {problem.value!r} {verdict}; expected {rule.describe()}."


def public_input(model_input: Mapping[str, Any] | None) -> dict[str, Any]:
    """
    The model input as it may be kept downstream (XCom, events, sidecars, manifests, OpenLineage, the UI): every
    inline image (a ``data:`` URI), a single input's or each item of a list (``input_images``), however deeply
    nested, is replaced by ``{"data_uri": True, "bytes": N, "sha256": "..."}``; nothing else of the input is secret.

    :param model_input: the input sent to the service.
    """
    return {str(key): _public(value) for key, value in (model_input or {}).items()}


def _public(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("data:"):
        payload = value.partition(",")[2].encode()
        try:
            raw = base64.b64decode(payload, validate=False)
        except ValueError:
            raw = payload
        return {"data_uri": True, "bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
    if isinstance(value, Mapping):
        return {str(key): _public(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_public(item) for item in value]
    return value
