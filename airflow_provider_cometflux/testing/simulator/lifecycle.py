"""
Prediction records: what a create stores, the status it has at any moment, and the JSON a GET answers.

A prediction's status is computed from the time since it was created: ``starting`` for the first 10% of its
run time, then ``processing`` (with ``started_at`` and growing ``logs``), then, at its run time, its outcome
(``succeeded`` by default) with ``completed_at``. Like Replicate, ``version`` reads ``"hidden"`` (official
models), and only a terminal prediction has ``metrics``: ``total_time`` (creation to completion),
``predict_time`` (start to completion, when it started) and, on success, ``image_count``.
"""

from __future__ import annotations

import asyncio
import base64
import math
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from airflow_provider_cometflux.schema import LIST_OUTPUT_MODELS, MODELS, default_output_format
from airflow_provider_cometflux.testing.simulator.faults import DIRECTIVE_RE, FaultRule, parse_fault_directives
from airflow_provider_cometflux.testing.simulator.images import flux_size, normalise_format

__all__ = [
    "ALL_FILTERED_MESSAGE",
    "DEFAULT_FAILURE_MESSAGE",
    "LIST_OUTPUT_MODELS",
    "OUTPUT_KINDS",
    "TERMINAL_STATUSES",
    "Record",
    "build_record",
    "parse_duration",
    "parse_prefer_wait",
    "render",
    "status_of",
]

#: The error text of a prediction failed with ``[sim:failed]``.
DEFAULT_FAILURE_MESSAGE = "NSFW content detected. Try running it again, or try a different prompt."
#: The error text of a flux-schnell or flux-dev prediction whose every image the safety checker filtered.
ALL_FILTERED_MESSAGE = "All generated images contained NSFW content. Try running it again with a different prompt."
#: The models whose safety checker drops images from the output (they have ``disable_safety_checker``).
FILTERING_MODELS = frozenset(name for name, rules in MODELS.items() if "disable_safety_checker" in rules.inputs)
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "canceled", "aborted"})
#: ``[sim:output=...]`` values: the output's shape, or a success without images (``empty``: ``[]``, ``null``).
OUTPUT_KINDS = ("list", "string", "empty", "null")
START_FRACTION = 0.1
#: Any model's predictions read ``version: "hidden"``, as official models' do on Replicate.
HIDDEN_VERSION = "hidden"

_PREFER_WAIT_RE = re.compile(r"(?:^|[\s,;])wait(?:\s*=\s*(-?\d+))?(?=$|[\s,;])", re.IGNORECASE)
_DURATION_PART_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


def iso(timestamp: float) -> str:
    """Format a Unix time like Replicate does: ``2024-05-01T12:00:00.123456Z``."""
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_prediction_id() -> str:
    """Return a Replicate-looking id: 26 lowercase base32 characters."""
    return base64.b32encode(secrets.token_bytes(16)).decode("ascii").rstrip("=").lower()


def parse_duration(value: str) -> float | None:
    """Parse a ``Cancel-After`` duration (``90``, ``30s``, ``5m``, ``1h30m``, ``250ms``) into seconds."""
    text = value.strip().lower()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    total = 0.0
    position = 0
    for match in _DURATION_PART_RE.finditer(text):
        if match.start() != position:
            return None
        total += float(match.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[match.group(2)]
        position = match.end()
    return total if position == len(text) else None


def parse_prefer_wait(value: str | None) -> float | None:
    """Return the seconds asked for by a ``Prefer: wait[=N]`` header, clamped to 1..60."""
    if not value:
        return None
    match = _PREFER_WAIT_RE.search(value)
    if match is None:
        return None
    seconds = int(match.group(1)) if match.group(1) is not None else 60
    return float(min(60, max(1, seconds)))


@dataclass
class Record:
    """A stored prediction: everything needed to compute its state at any moment."""

    id: str
    model: str
    input: dict[str, Any]
    created_wall: float
    created_mono: float
    run_seconds: float
    outcome: str  # succeeded, failed, canceled, aborted or stuck
    error_message: str | None
    output_kind: str  # list, string, empty or null
    image_count: int
    fmt: str
    width: int
    height: int
    quality: int | None
    log_seed: int
    steps: int
    deadline: float | None = None  # seconds after creation (Cancel-After)
    canceled_after: float | None = None  # seconds after creation (cancel request)
    changed: asyncio.Event | None = None
    faults: list[FaultRule] = field(default_factory=list)  # this prediction's own get/cancel/file rules
    requested: int = 0  # images asked for (image_count is what the safety checker let through)

    @property
    def start_offset(self) -> float:
        return self.run_seconds * START_FRACTION

    def terminal(self) -> tuple[float, str] | None:
        """Return ``(seconds after creation, status)`` of the end, or ``None`` if it never ends."""
        candidates: list[tuple[float, str]] = []
        if self.outcome != "stuck":
            candidates.append((self.run_seconds, self.outcome))
        if self.deadline is not None:
            before_start = self.deadline < self.start_offset or self.outcome == "aborted"
            candidates.append((self.deadline, "aborted" if before_start else "canceled"))
        if self.canceled_after is not None:
            candidates.append((self.canceled_after, "canceled"))
        return min(candidates, key=lambda item: item[0]) if candidates else None


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def build_record(
    model: str,
    model_input: dict[str, Any],
    *,
    run_seconds: float,
    output_kind: str,
    deadline: float | None,
    long_side: int | None,
) -> Record:
    """
    Make the record of a new prediction, reading the prompt's ``[sim:...]`` directives.

    :param model: ``owner/name``.
    :param model_input: the create request's ``input``.
    :param run_seconds: the simulator's run time (``[sim:slow=S]`` overrides it).
    :param output_kind: ``auto``, ``list`` or ``string`` (``[sim:output=...]`` overrides it).
    :param deadline: seconds after creation when ``Cancel-After`` cancels it.
    :param long_side: if set, images are scaled down to at most this many pixels on their longer side.
    :raises ValueError: for a malformed ``[sim:fault=...]`` directive.
    """
    prompt = model_input.get("prompt")
    outcome = "succeeded"
    error_message: str | None = None
    filtered = 0
    if isinstance(prompt, str):
        for match in DIRECTIVE_RE.finditer(prompt):
            name, value = match.group(1).lower(), match.group(2)
            if name == "failed":
                outcome = "failed"
                error_message = value if value and value.strip() else DEFAULT_FAILURE_MESSAGE
            elif name in ("canceled", "aborted", "stuck"):
                outcome = name
            elif name == "slow" and value is not None:
                try:
                    seconds = float(value)
                except ValueError:
                    continue
                if math.isfinite(seconds) and seconds >= 0:
                    run_seconds = seconds
            elif name == "output" and value is not None and value.strip().lower() in OUTPUT_KINDS:
                output_kind = value.strip().lower()
            elif name == "nsfw":
                filtered = _filtered(value)
    if output_kind == "auto":
        output_kind = "list" if model in LIST_OUTPUT_MODELS else "string"
    image_count = 1
    num_outputs = _int_or_none(model_input.get("num_outputs"))
    if output_kind in ("list", "empty") and num_outputs is not None:
        image_count = max(1, min(num_outputs, 16))
    requested = image_count
    if model in FILTERING_MODELS and model_input.get("disable_safety_checker") is not True and filtered:
        image_count = max(0, image_count - filtered)
        if image_count == 0 and outcome == "succeeded":
            outcome, error_message = "failed", ALL_FILTERED_MESSAGE
    fmt_input = model_input.get("output_format")
    try:
        fmt = normalise_format(fmt_input) if isinstance(fmt_input, str) else ""
    except ValueError:
        fmt = ""
    if not fmt:
        fmt = default_output_format(model)
    width, height = flux_size(
        model_input.get("aspect_ratio", "custom" if "width" in model_input else None),
        model_input.get("megapixels"),
        width=_int_or_none(model_input.get("width")),
        height=_int_or_none(model_input.get("height")),
        long_side=long_side,
        resolution=model_input.get("resolution"),
        step=_size_step(model),
    )
    seed = _int_or_none(model_input.get("seed"))
    steps = _int_or_none(model_input.get("num_inference_steps"))
    return Record(
        id=new_prediction_id(),
        model=model,
        input=model_input,
        created_wall=time.time(),
        created_mono=time.monotonic(),
        run_seconds=run_seconds,
        outcome=outcome,
        error_message=error_message,
        output_kind=output_kind,
        image_count=image_count,
        fmt=fmt,
        width=width,
        height=height,
        quality=_int_or_none(model_input.get("output_quality")),
        log_seed=seed if seed is not None else secrets.randbelow(1 << 31),
        steps=steps if steps is not None and 1 <= steps <= 50 else 4,
        deadline=deadline,
        requested=requested,
        changed=asyncio.Event(),
        faults=[rule for rule in parse_fault_directives(prompt) if rule.route != "create"]
        if isinstance(prompt, str)
        else [],
    )


def _filtered(value: str | None) -> int:
    """``[sim:nsfw]`` filters every image; ``[sim:nsfw=N]`` N of them."""
    if value is None or value.strip().lower() in ("", "all"):
        return 1 << 16
    try:
        return max(0, int(value))
    except ValueError:
        return 0


def _size_step(model: str) -> int:
    """The multiple a model rounds a custom ``width`` to (the schema's ``step``; 32 for a model without one)."""
    table = MODELS.get(model)
    rule = table.inputs.get("width") if table is not None else None
    return rule.step if rule is not None and rule.step is not None else 32


def status_of(record: Record, now: float) -> tuple[str, float | None, float | None]:
    """Return ``(status, started offset, completed offset)`` at monotonic time ``now``."""
    elapsed = now - record.created_mono
    end = record.terminal()
    if end is not None and elapsed >= end[0]:
        end_at, status = end
        started = record.start_offset if status != "aborted" and end_at >= record.start_offset else None
        return status, started, end_at
    if elapsed >= record.start_offset and record.outcome != "aborted":
        return "processing", record.start_offset, None
    return "starting", None, None


def _logs(record: Record, status: str, started: float | None, completed: float | None, now: float) -> str:
    if started is None:
        return ""
    lines = [f"Using seed: {record.log_seed}", "Running prediction"]
    span = max(record.run_seconds - record.start_offset, 1e-9)
    until = (completed if completed is not None else now - record.created_mono) - started
    fraction = 1.0 if status == "succeeded" else min(max(until / span, 0.0), 0.99)
    done = math.floor(record.steps * fraction)
    for step in range(done + 1):
        percent = round(100 * step / record.steps)
        bar = ("#" * round(10 * step / record.steps)).ljust(10)
        lines.append(f"{percent:3d}%|{bar}| {step}/{record.steps}")
    if status == "succeeded":
        lines.append(f"Total safe images: {record.image_count} out of {record.requested or record.image_count}")
    elif status == "failed":
        lines.append(f"Error: {record.error_message}")
    return "\n".join(lines) + "\n"


def expired(record: Record, completed: float | None, now: float, expire_after: float | None) -> bool:
    """Whether a finished prediction's data has been removed (``expire_after`` seconds after completion)."""
    if expire_after is None or completed is None:
        return False
    return now - record.created_mono - completed >= expire_after


def file_url(base_url: str, record: Record, index: int) -> str:
    """The delivery URL of one output file."""
    return f"{base_url}/files/{record.id}/{index}.{record.fmt}"


def render(record: Record, now: float, *, base_url: str, expire_after: float | None) -> dict[str, Any]:
    """
    Return the prediction as the service answers it at monotonic time ``now``.

    After data removal (``expire_after`` seconds after completion) the prediction still reads ``succeeded``,
    with ``output: null``, ``data_removed: true`` and no ``input`` or ``logs``.
    """
    status, started, completed = status_of(record, now)
    api = f"https://api.replicate.com/v1/predictions/{record.id}"
    prediction: dict[str, Any] = {
        "id": record.id,
        "model": record.model,
        "version": HIDDEN_VERSION,
        "input": record.input,
        "logs": _logs(record, status, started, completed, now),
        "output": None,
        "data_removed": False,
        "error": None,
        "source": "api",
        "status": status,
        "created_at": iso(record.created_wall),
        "urls": {
            "cancel": f"{api}/cancel",
            "get": api,
            "stream": f"https://stream.replicate.com/v1/files/{record.id}",
            "web": f"https://replicate.com/p/{record.id}",
        },
    }
    if started is not None:
        prediction["started_at"] = iso(record.created_wall + started)
    if completed is not None:
        prediction["completed_at"] = iso(record.created_wall + completed)
        metrics: dict[str, Any] = {"total_time": round(completed, 6)}
        if started is not None:
            metrics["predict_time"] = round(completed - started, 6)
        prediction["metrics"] = metrics
    if status == "succeeded" and completed is not None:
        urls = [file_url(base_url, record, i) for i in range(record.image_count)]
        shapes: dict[str, Any] = {"list": urls, "string": urls[0], "empty": [], "null": None}
        prediction["output"] = shapes[record.output_kind]
        prediction["metrics"]["image_count"] = 0 if record.output_kind in ("empty", "null") else record.image_count
        if expired(record, completed, now, expire_after):
            prediction.update(data_removed=True, output=None)
            del prediction["input"], prediction["logs"]
    elif status == "failed":
        prediction["error"] = record.error_message
    return prediction
