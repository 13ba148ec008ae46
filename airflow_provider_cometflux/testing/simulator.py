"""
A local simulator of CometAPI's Replicate-format API for FLUX image models.

It is a real HTTP server (``aiohttp.web``) on its own event loop in a background thread, so synchronous
tests, asynchronous tests and separate processes can all talk to it over loopback. One event loop serves
every connection, so thousands of slow, concurrent requests cost no threads.

Start it from Python::

    with CometAPISimulator(run_seconds=0.5, api_key="sim-test-key") as sim:
        hook_base_url = sim.base_url  # e.g. "http://127.0.0.1:43121"
        ...
        assert sim.stats["creates"] == 1

or as a process (prints ``CometAPI simulator listening on http://127.0.0.1:PORT`` and serves until
SIGINT/SIGTERM)::

    python -m airflow_provider_cometflux.testing.simulator --port 8765 --run-seconds 2

Routes
------

* ``POST /replicate/v1/models/{owner}/{name}/predictions`` with ``{"input": {...}}``: 201 and a new
  prediction (``status`` ``starting``). ``Prefer: wait=N`` (or bare ``wait``, meaning 60; N is clamped to
  1..60) holds the answer until the prediction is terminal or N seconds pass. ``Cancel-After`` (``30s``,
  ``5m``, ``1h30m``, or plain seconds) sets a deadline: the prediction is canceled when it is reached
  (``aborted`` if it had not started yet).
* ``GET /replicate/v1/predictions/{id}``: the current prediction; unknown id -> 404 problem+json.
* ``POST /replicate/v1/predictions/{id}/cancel``: 200 with the prediction, ``canceled`` if it was in flight
  (terminal ones are unchanged). With ``cancel_supported=False`` the route does not exist (HTML 404).
* ``GET /files/{id}/{index}.{ext}``: the image bytes of a succeeded prediction (no auth, like delivery URLs).
* ``GET /_sim/stats``, ``GET /_sim/predictions``, ``GET|POST /_sim/faults``, ``POST /_sim/reset``: control
  routes for a simulator running in another process. They need no auth and are not counted in the stats.
* Anything else: 404 with an HTML body.

The ``/replicate/v1`` routes need ``Authorization: Bearer <key>``: with ``api_key`` set the key must match,
without it any non-empty bearer token is accepted. Failures are 401 in CometAPI's error shape
``{"error": {"message", "type", "param", "code"}}``. The key never appears in a response or a log, unless
``echo_key=True``: then a refused key is quoted in the 401 message ("Incorrect API key provided: ..."), as
some services do, to test that a client keeps it out of its own errors and logs.

Lifecycle
---------

A prediction's status is computed from the time since it was created: ``starting`` for the first 10% of
its run time, then ``processing`` (with ``started_at`` and growing ``logs``), then, at ``run_seconds``,
``succeeded`` with ``completed_at``, ``metrics`` (``predict_time``, ``image_count``) and ``output``.

Output is a list of URLs for ``black-forest-labs/flux-schnell`` and ``black-forest-labs/flux-dev``
(``input.num_outputs`` long, default 1) and a single URL string for every other model (``flux-1.1-pro``,
the kontext models, ...); ``output_kind="list"``/``"string"`` forces one shape. URLs are
``{base_url}/files/{id}/{index}.{ext}``; ``ext`` is ``input.output_format`` (``jpeg`` becomes ``jpg``),
defaulting to ``webp``, or ``png`` for models whose name contains ``kontext`` (as the real ones do).
``urls`` in a prediction point at api.replicate.com and replicate.com, as the real service's do.

For the known FLUX models a few inputs are checked as Replicate does, answering 422 problem+json:
``prompt`` must be a non-empty string, ``output_format`` one the model supports, ``num_outputs`` an
integer 1..4 (schnell, dev). ``validate_input=False`` turns this off.

Prompt directives
-----------------

Put these anywhere in ``input.prompt`` to steer one prediction; they pass through any operator unchanged:

* ``[sim:failed]`` ends ``failed`` with ``error`` "NSFW content detected. Try running it again, or try a
  different prompt."; ``[sim:failed=some message]`` uses that message instead.
* ``[sim:canceled]`` ends ``canceled``; ``[sim:aborted]`` ends ``aborted`` without ever starting.
* ``[sim:stuck]`` stays ``processing`` forever (until canceled).
* ``[sim:slow=SECONDS]`` this prediction takes SECONDS instead of ``run_seconds``.
* ``[sim:output=string]`` / ``[sim:output=list]`` forces the output shape.
* ``[sim:fault=ROUTE,KIND,key=value,...]`` a fault rule (see below) for this prediction only, e.g.
  ``[sim:fault=get,status,status=503,times=2]`` or ``[sim:fault=create,status,status=429,retry_after=1]``.
  ``ROUTE`` and ``KIND`` are those of :meth:`CometAPISimulator.add_fault`; the keys are its ``times``
  (a number or ``all``), ``status``, ``retry_after``, ``delay``, ``code`` and ``message``. A ``create``
  rule applies to create requests carrying this prompt (so retries of one create share its ``times``);
  ``get``, ``cancel`` and ``file`` rules apply to the prediction the create made. Several may be given;
  they apply oldest first, after the server-wide rules. A malformed one answers 400, naming it.

Unknown directives are ignored.

Fault injection
---------------

``sim.add_fault(route, kind, times=1, status=None, retry_after=None, delay=None, code=None, message=None)``
(or ``POST /_sim/faults`` with the same fields as JSON) makes the next ``times`` requests to ``route``
(``create``, ``get``, ``cancel`` or ``file``) misbehave; ``times=None`` means every request. Rules are
checked before authentication, oldest first. Kinds:

* ``status``: answer ``status`` (default 500) with a CometAPI-shaped JSON error (``code`` and ``message``
  override its fields, e.g. ``code="invalid_request"``).
* ``html``: answer ``status`` (default 502) with an HTML error page.
* ``drop``: close the connection without an answer.
* ``slow``: wait ``delay`` seconds (default 1) then answer normally.
* ``malformed``: 200 with a body that is not valid JSON (for ``file``: an HTML page instead of an image).
* ``truncate`` (``file`` only): send the full Content-Length but only half the bytes, then close.
* ``expired`` (``file`` only): answer ``status`` (default 404; 403 and 410 also fit) like an expired URL.
* ``drop_after_create`` (``create`` only): create the prediction, then close the connection unanswered.

``retry_after`` adds a ``Retry-After`` header to any answer; ``delay`` (for kinds other than ``slow``)
waits that long before misbehaving. Rules given with :meth:`CometAPISimulator.add_fault` apply to every
prediction; a ``[sim:fault=...]`` prompt directive scopes one to a single prediction. Service-wide behaviour
comes from constructor arguments: ``expire_after`` (file URLs answer 404 that many seconds after completion
and ``data_removed`` turns true), ``rate_limit_per_minute`` (creates over the limit in a sliding window
answer 429 with ``Retry-After``), ``poll_delay`` (every prediction GET takes that long, like CometAPI's slow
polls).

:attr:`CometAPISimulator.create_requests` lists every create request (prompt, answered status or ``None``
when the connection was dropped, and the id of the prediction it made, if any), so a test running many
predictions at once can count the creates of each; :attr:`CometAPISimulator.cancel_requests` lists the
prediction id of every cancel request. :meth:`CometAPISimulator.finish` ends in-flight predictions at
once (a ``[sim:stuck]`` one succeeds), so a test decides when they finish.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import math
import os
import re
import secrets
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from http import HTTPStatus
from types import TracebackType
from typing import Any

from aiohttp import web

from airflow_provider_cometflux.testing.images import (
    content_type_for,
    image_size_for,
    normalise_format,
    render_image,
)

__all__ = [
    "DEFAULT_FAILURE_MESSAGE",
    "FAULT_KINDS",
    "FAULT_ROUTES",
    "CometAPISimulator",
    "FaultRule",
    "main",
    "parse_fault_directives",
]

log = logging.getLogger(__name__)

#: Routes a fault rule can target.
FAULT_ROUTES: tuple[str, ...] = ("create", "get", "cancel", "file")
#: Fault kinds, each with the routes it applies to.
FAULT_KINDS: dict[str, tuple[str, ...]] = {
    "status": FAULT_ROUTES,
    "html": FAULT_ROUTES,
    "drop": FAULT_ROUTES,
    "slow": FAULT_ROUTES,
    "malformed": FAULT_ROUTES,
    "truncate": ("file",),
    "expired": ("file",),
    "drop_after_create": ("create",),
}
#: The error text of a prediction failed with ``[sim:failed]``.
DEFAULT_FAILURE_MESSAGE = "NSFW content detected. Try running it again, or try a different prompt."

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "canceled", "aborted"})
LIST_OUTPUT_MODELS = frozenset({"black-forest-labs/flux-schnell", "black-forest-labs/flux-dev"})
_KNOWN_FORMATS: dict[str, tuple[str, ...]] = {
    "black-forest-labs/flux-schnell": ("webp", "jpg", "png"),
    "black-forest-labs/flux-dev": ("webp", "jpg", "png"),
    "black-forest-labs/flux-1.1-pro": ("webp", "jpg", "png"),
    "black-forest-labs/flux-kontext-pro": ("jpg", "png"),
    "black-forest-labs/flux-kontext-max": ("jpg", "png"),
}
_DEFAULT_STATUS_FOR_KIND = {"status": 500, "html": 502, "expired": 404}
_START_FRACTION = 0.1
_DIRECTIVE_RE = re.compile(r"\[sim:([a-z_]+)(?:=([^\]]*))?\]", re.IGNORECASE)
_PREFER_WAIT_RE = re.compile(r"(?:^|[\s,;])wait(?:\s*=\s*(-?\d+))?(?=$|[\s,;])", re.IGNORECASE)
_DURATION_PART_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")

# (type, code, message) of the CometAPI-shaped error body for a status.
_ERROR_TEMPLATES: dict[int, tuple[str, str, str]] = {
    400: ("invalid_request_error", "invalid_request", "Bad request"),
    401: ("invalid_request_error", "invalid_api_key", "Invalid token"),
    403: ("invalid_request_error", "forbidden", "Access to this resource is forbidden"),
    404: ("invalid_request_error", "not_found", "Resource not found"),
    408: ("server_error", "request_timeout", "Request timed out"),
    409: ("invalid_request_error", "conflict", "Conflict"),
    422: ("invalid_request_error", "invalid_request", "Input validation failed"),
    429: ("rate_limit_error", "rate_limit_exceeded", "Rate limit reached, please try again later"),
    500: ("server_error", "internal_error", "Internal server error"),
    502: ("upstream_error", "bad_gateway", "Bad gateway: the upstream provider returned an invalid response"),
    503: ("server_error", "service_unavailable", "Service temporarily unavailable, please try again later"),
    504: ("server_error", "gateway_timeout", "The upstream provider did not answer in time"),
    524: ("server_error", "timeout", "A timeout occurred while waiting for the upstream provider"),
}

_HTML_404 = (
    "<!DOCTYPE html>\n<html>\n<head><title>404 Not Found</title></head>\n<body>\n"
    "<center><h1>404 Not Found</h1></center>\n<hr><center>nginx</center>\n</body>\n</html>\n"
)


_EXTRA_REASONS = {
    520: "Web Server Returned an Unknown Error",
    521: "Web Server Is Down",
    522: "Connection Timed Out",
    523: "Origin Is Unreachable",
    524: "A Timeout Occurred",
}


def _reason(status: int) -> str:
    """Return the reason phrase of a status, including Cloudflare's 52x ones."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return _EXTRA_REASONS.get(status, "Error")


class _DroppedResponse(web.Response):
    """Stands for a connection closed without an answer; it is never sent."""


class _TruncatedResponse(web.StreamResponse):
    """A file response whose body was cut short."""


def _html_page(status: int) -> str:
    reason = _reason(status)
    return (
        f"<!DOCTYPE html>\n<html>\n<head><title>{status} {reason}</title></head>\n<body>\n"
        f"<center><h1>{status} {reason}</h1></center>\n<hr><center>cloudflare</center>\n</body>\n</html>\n"
    )


def _iso(timestamp: float) -> str:
    """Format a Unix time like Replicate does: ``2024-05-01T12:00:00.123456Z``."""
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _new_prediction_id() -> str:
    """Return a Replicate-looking id: 26 lowercase base32 characters."""
    return base64.b32encode(secrets.token_bytes(16)).decode("ascii").rstrip("=").lower()


def _request_id() -> str:
    return datetime.now(tz=timezone.utc).strftime("%Y%m%d%H%M%S") + secrets.token_hex(8)


def _parse_duration(value: str) -> float | None:
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
        number = float(match.group(1))
        total += number * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[match.group(2)]
        position = match.end()
    return total if position == len(text) else None


def _parse_prefer_wait(value: str | None) -> float | None:
    """Return the seconds asked for by a ``Prefer: wait[=N]`` header, clamped to 1..60."""
    if not value:
        return None
    match = _PREFER_WAIT_RE.search(value)
    if match is None:
        return None
    seconds = int(match.group(1)) if match.group(1) is not None else 60
    return float(min(60, max(1, seconds)))


def _error_body(
    status: int, *, message: str | None = None, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """Build a CometAPI-shaped error body."""
    error_type, default_code, default_message = _ERROR_TEMPLATES.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", "error", "Request failed")
    )
    return {
        "error": {
            "message": f"{message or default_message} (request id: {_request_id()})",
            "type": error_type,
            "param": param,
            "code": code or default_code,
        }
    }


def _format_retry_after(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


_DIRECTIVE_FAULT_FIELDS: dict[str, Callable[[str], Any]] = {
    "times": lambda value: None if value.lower() in ("all", "none") else int(value),
    "status": int,
    "retry_after": float,
    "delay": float,
    "code": str,
    "message": str,
}


@dataclass
class FaultRule:
    """
    One fault injection rule; see the module docstring for the kinds.

    :param route: ``create``, ``get``, ``cancel`` or ``file``.
    :param kind: one of :data:`FAULT_KINDS`.
    :param times: how many matching requests it still applies to; ``None`` for all of them.
    :param status: the HTTP status for ``status``, ``html`` and ``expired``.
    :param retry_after: if set, the ``Retry-After`` header value in seconds.
    :param delay: seconds to wait (the whole effect of ``slow``; a pause before the others).
    :param code: overrides ``error.code`` of a ``status`` body.
    :param message: overrides ``error.message`` of a ``status`` body.
    """

    route: str
    kind: str
    times: int | None = 1
    status: int | None = None
    retry_after: float | None = None
    delay: float | None = None
    code: str | None = None
    message: str | None = None
    applied: int = field(default=0)

    def __post_init__(self) -> None:
        if self.route not in FAULT_ROUTES:
            raise ValueError(f"unknown fault route {self.route!r}; expected one of {', '.join(FAULT_ROUTES)}")
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {', '.join(FAULT_KINDS)}")
        if self.route not in FAULT_KINDS[self.kind]:
            raise ValueError(f"fault kind {self.kind!r} does not apply to route {self.route!r}")
        if self.times is not None and (isinstance(self.times, bool) or not isinstance(self.times, int)):
            raise ValueError("times must be a positive integer or None")
        if self.times is not None and self.times < 1:
            raise ValueError("times must be a positive integer or None")
        if self.status is None:
            self.status = _DEFAULT_STATUS_FOR_KIND.get(self.kind)
        elif isinstance(self.status, bool) or not isinstance(self.status, int) or not 100 <= self.status <= 599:
            raise ValueError("status must be an integer HTTP status (100..599)")
        for name in ("retry_after", "delay"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
                raise ValueError(f"{name} must be a non-negative number")

    @property
    def remaining(self) -> int | None:
        """How many more requests this rule applies to (``None``: unlimited)."""
        return None if self.times is None else max(0, self.times - self.applied)

    def to_dict(self) -> dict[str, Any]:
        """Return the rule as a JSON-serialisable dict."""
        data = asdict(self)
        data["remaining"] = self.remaining
        return data


def parse_fault_directives(prompt: str) -> list[FaultRule]:
    """
    Read the ``[sim:fault=ROUTE,KIND,key=value,...]`` directives of a prompt, in order.

    :param prompt: a prediction's ``input.prompt``.
    :return: one fault rule per directive (each with its own count).
    :raises ValueError: naming the first malformed directive.
    """
    rules: list[FaultRule] = []
    for match in _DIRECTIVE_RE.finditer(prompt):
        if match.group(1).lower() != "fault":
            continue
        parts = [part.strip() for part in (match.group(2) or "").split(",")]
        if len(parts) < 2 or not parts[0] or not parts[1]:
            raise ValueError(f"{match.group(0)}: expected [sim:fault=ROUTE,KIND,key=value,...]")
        options: dict[str, Any] = {}
        try:
            for part in parts[2:]:
                key, sep, value = part.partition("=")
                key = key.strip().lower()
                if not sep or key not in _DIRECTIVE_FAULT_FIELDS:
                    raise ValueError(f"{part!r} is not one of {', '.join(f'{k}=...' for k in _DIRECTIVE_FAULT_FIELDS)}")
                options[key] = _DIRECTIVE_FAULT_FIELDS[key](value.strip())
            rules.append(FaultRule(route=parts[0].lower(), kind=parts[1].lower(), **options))
        except ValueError as exc:
            raise ValueError(f"{match.group(0)}: {exc}") from None
    return rules


@dataclass
class _Record:
    """A stored prediction: everything needed to compute its state at any moment."""

    id: str
    model: str
    version: str
    input: dict[str, Any]
    created_wall: float
    created_mono: float
    run_seconds: float
    outcome: str  # succeeded, failed, canceled, aborted or stuck
    error_message: str | None
    output_kind: str  # list or string
    image_count: int
    fmt: str
    width: int
    height: int
    log_seed: int
    steps: int
    deadline: float | None = None  # seconds after creation (Cancel-After)
    canceled_after: float | None = None  # seconds after creation (cancel request)
    changed: asyncio.Event | None = None
    faults: list[FaultRule] = field(default_factory=list)  # this prediction's own get/cancel/file rules

    @property
    def start_offset(self) -> float:
        return self.run_seconds * _START_FRACTION

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


class CometAPISimulator:
    """
    A CometAPI (Replicate-format) FLUX service on loopback; see the module docstring for its behaviour.

    :param host: the address to listen on.
    :param port: the port to listen on; 0 picks a free one (read it back from :attr:`port`).
    :param run_seconds: how long a prediction takes from creation to its terminal status.
    :param api_key: the only accepted bearer token; ``None`` accepts any non-empty one.
    :param output_kind: ``auto`` (per model), ``list`` or ``string``.
    :param cancel_supported: serve the cancel route; when false it answers an HTML 404 like CometAPI.
    :param expire_after: seconds after completion when file URLs start answering 404; ``None``: never.
    :param rate_limit_per_minute: maximum creates per ``rate_limit_window`` seconds; over it answer 429.
    :param rate_limit_window: the sliding window of the rate limit, in seconds.
    :param poll_delay: seconds every prediction GET waits before answering.
    :param image_size: the long side of generated images, in pixels.
    :param image_bytes: if set, pad every generated image file to about this many bytes.
    :param validate_input: check a few inputs of the known FLUX models and answer 422 like Replicate.
    :param create_status: the status of a successful create (201, or 202 as CometAPI may answer).
    :param backlog: the listen backlog (raise it for many thousands of concurrent connections).
    :param echo_key: quote a refused bearer token in the 401 message, as some services do.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        run_seconds: float = 1.0,
        api_key: str | None = None,
        output_kind: str = "auto",
        cancel_supported: bool = True,
        expire_after: float | None = None,
        rate_limit_per_minute: int | None = None,
        rate_limit_window: float = 60.0,
        poll_delay: float = 0.0,
        image_size: int = 64,
        image_bytes: int | None = None,
        validate_input: bool = True,
        create_status: int = 201,
        backlog: int = 4096,
        echo_key: bool = False,
    ) -> None:
        if output_kind not in ("auto", "list", "string"):
            raise ValueError("output_kind must be 'auto', 'list' or 'string'")
        if run_seconds < 0:
            raise ValueError("run_seconds must not be negative")
        self.host = host
        self.port = port
        self.run_seconds = float(run_seconds)
        self.api_key = api_key
        self.output_kind = output_kind
        self.cancel_supported = cancel_supported
        self.expire_after = expire_after
        self.rate_limit_per_minute = rate_limit_per_minute
        self.rate_limit_window = float(rate_limit_window)
        self.poll_delay = float(poll_delay)
        self.image_size = int(image_size)
        self.image_bytes = image_bytes
        self.validate_input = validate_input
        self.create_status = create_status
        self.backlog = backlog
        self.echo_key = echo_key

        self._lock = threading.Lock()
        self._records: dict[str, _Record] = {}
        self._faults: list[FaultRule] = []
        self._prompt_faults: dict[str, list[FaultRule]] = {}
        self._create_log: list[dict[str, Any]] = []
        self._cancel_log: list[str] = []
        self._images: dict[tuple[str, int], bytes] = {}
        self._create_times: deque[float] = deque()
        self._counters: dict[str, int] = {}
        self._responses: dict[str, int] = {}
        self._in_flight = 0
        self._reset_counters()

        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    # ----------------------------------------------------------------------------------- lifecycle

    def __repr__(self) -> str:
        where = self.base_url if self.running else "not running"
        return f"<CometAPISimulator {where}>"

    @property
    def running(self) -> bool:
        """Whether the server is serving."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def base_url(self) -> str:
        """The root URL to give the hook, e.g. ``http://127.0.0.1:43121``."""
        if self.port == 0:
            raise RuntimeError("the simulator has not been started")
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def start(self) -> CometAPISimulator:
        """
        Start serving in a background thread; returns once the socket is listening.

        :return: the simulator itself.
        """
        if self._thread is not None:
            raise RuntimeError("the simulator is already running")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]

        loop = asyncio.new_event_loop()
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._serve(sock))
            except BaseException as exc:  # handed to the starting thread
                errors.append(exc)
                ready.set()
                sock.close()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                self._shutdown_loop(loop)

        self._loop = loop
        self._thread = threading.Thread(target=run, name=f"cometapi-simulator-{self.port}", daemon=True)
        self._thread.start()
        ready.wait()
        if errors:
            self._thread.join()
            self._thread = None
            self._loop = None
            raise errors[0]
        log.info("CometAPI simulator listening on %s", self.base_url)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """
        Stop serving and wait for the background thread to finish. Safe to call twice.

        :param timeout: seconds to wait for the thread.
        """
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        if not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        self._thread = None
        self._loop = None

    def __enter__(self) -> CometAPISimulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> CometAPISimulator:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    async def _serve(self, sock: socket.socket) -> None:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_post("/replicate/v1/models/{owner}/{name}/predictions", self._handle_create)
        app.router.add_get("/replicate/v1/predictions/{id}", self._handle_get)
        app.router.add_post("/replicate/v1/predictions/{id}/cancel", self._handle_cancel)
        app.router.add_get(r"/files/{id}/{index:\d+}.{ext:[A-Za-z]+}", self._handle_file)
        app.router.add_get("/_sim/stats", self._handle_sim_stats)
        app.router.add_get("/_sim/predictions", self._handle_sim_predictions)
        app.router.add_get("/_sim/faults", self._handle_sim_faults_list)
        app.router.add_post("/_sim/faults", self._handle_sim_faults_add)
        app.router.add_post("/_sim/reset", self._handle_sim_reset)
        app.router.add_route("*", "/{tail:.*}", self._handle_not_found)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1)
        await runner.setup()
        self._runner = runner
        await web.SockSite(runner, sock, backlog=self.backlog).start()

    def _shutdown_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            if self._runner is not None:
                loop.run_until_complete(self._runner.cleanup())
            pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            self._runner = None
            loop.close()

    # ---------------------------------------------------------------------------------- Python API

    def add_fault(
        self,
        route: str,
        kind: str,
        *,
        times: int | None = 1,
        status: int | None = None,
        retry_after: float | None = None,
        delay: float | None = None,
        code: str | None = None,
        message: str | None = None,
    ) -> FaultRule:
        """
        Make the next ``times`` requests to ``route`` misbehave.

        :param route: ``create``, ``get``, ``cancel`` or ``file``.
        :param kind: ``status``, ``html``, ``drop``, ``slow``, ``malformed``, ``truncate`` (file),
            ``expired`` (file) or ``drop_after_create`` (create).
        :param times: how many requests the rule applies to; ``None`` for all of them.
        :param status: the HTTP status for ``status`` (default 500), ``html`` (502), ``expired`` (404).
        :param retry_after: if set, sent as the ``Retry-After`` header (seconds).
        :param delay: seconds to wait: the whole effect of ``slow`` (default 1), a pause before others.
        :param code: overrides ``error.code`` in a ``status`` body (e.g. ``"invalid_request"``).
        :param message: overrides ``error.message`` in a ``status`` body.
        :return: the rule; its :attr:`FaultRule.remaining` shows how much of it is left.
        :raises ValueError: for an unknown route or kind, or a kind that does not fit the route.
        """
        rule = FaultRule(
            route=route,
            kind=kind,
            times=times,
            status=status,
            retry_after=retry_after,
            delay=delay,
            code=code,
            message=message,
        )
        with self._lock:
            self._faults.append(rule)
        return rule

    def clear_faults(self) -> None:
        """Remove every fault rule."""
        with self._lock:
            self._faults.clear()

    @property
    def faults(self) -> list[FaultRule]:
        """The fault rules that still apply."""
        with self._lock:
            return list(self._faults)

    def reset(self) -> None:
        """Forget all predictions, images, fault rules, rate-limit history and counters."""
        with self._lock:
            self._records.clear()
            self._images.clear()
            self._faults.clear()
            self._prompt_faults.clear()
            self._create_log.clear()
            self._cancel_log.clear()
            self._create_times.clear()
            self._reset_counters()

    @property
    def stats(self) -> dict[str, Any]:
        """
        A snapshot of the request counters.

        ``requests`` counts every request except the ``/_sim`` control routes; ``creates``, ``gets``,
        ``cancels`` and ``downloads`` count requests to those routes whatever the answer; ``not_found``
        counts requests to unknown paths. ``created`` is the number of predictions created;
        ``responses`` maps each answered status (as a string) to its count; ``dropped`` counts
        connections closed without an answer, ``truncated`` partial file bodies; ``faults_applied``,
        ``rate_limited``, ``in_flight`` and ``max_in_flight`` are what they say.
        """
        with self._lock:
            snapshot: dict[str, Any] = dict(self._counters)
            snapshot["responses"] = dict(self._responses)
            snapshot["in_flight"] = self._in_flight
        return snapshot

    @property
    def predictions(self) -> dict[str, dict[str, Any]]:
        """Every stored prediction (id -> the prediction as a GET would answer it right now)."""
        now = time.monotonic()
        with self._lock:
            records = list(self._records.values())
        return {record.id: self._render(record, now) for record in records}

    def finish(self, prediction_ids: Iterable[str] | None = None) -> list[str]:
        """
        End in-flight predictions now, as they were going to end; a ``[sim:stuck]`` one succeeds.

        Lets a test decide when predictions finish (e.g. only after it has restarted a triggerer).

        :param prediction_ids: the predictions to end; ``None`` for every one still in flight.
        :return: the ids of the predictions it ended.
        """
        now = time.monotonic()
        ended: list[str] = []
        with self._lock:
            wanted = list(self._records) if prediction_ids is None else list(prediction_ids)
            for pid in wanted:
                record = self._records[pid]
                if self._status(record, now)[0] in TERMINAL_STATUSES:
                    continue
                if record.outcome == "stuck":
                    record.outcome = "succeeded"
                record.run_seconds = max(1e-6, now - record.created_mono)
                ended.append(pid)
                if record.changed is not None and self._loop is not None and not self._loop.is_closed():
                    self._loop.call_soon_threadsafe(record.changed.set)
        return ended

    def file_bytes(self, prediction_id: str, index: int = 0) -> bytes:
        """
        Return the file an output URL serves (rendering it now if needed).

        :param prediction_id: the prediction id.
        :param index: the output index.
        :raises KeyError: for an unknown prediction.
        """
        with self._lock:
            record = self._records[prediction_id]
        return self._image(record, index)

    # ------------------------------------------------------------------------------------ internals

    def _reset_counters(self) -> None:
        self._counters = {
            "requests": 0,
            "creates": 0,
            "gets": 0,
            "cancels": 0,
            "downloads": 0,
            "not_found": 0,
            "created": 0,
            "dropped": 0,
            "truncated": 0,
            "faults_applied": 0,
            "rate_limited": 0,
            "max_in_flight": self._in_flight,
        }
        self._responses = {}

    def _bump(self, counter: str, amount: int = 1) -> None:
        with self._lock:
            self._counters[counter] = self._counters.get(counter, 0) + amount

    def _take_fault(self, route: str, scoped: list[FaultRule] | None = None) -> FaultRule | None:
        """Take the next rule for ``route``: the server-wide ones first, then ``scoped`` (one prediction's)."""
        with self._lock:
            for rules in (self._faults, scoped or []):
                for rule in rules:
                    if rule.route == route:
                        rule.applied += 1
                        if rule.times is not None and rule.applied >= rule.times:
                            rules.remove(rule)
                        self._counters["faults_applied"] += 1
                        return rule
        return None

    def _create_rules(self, prompt: str | None) -> list[FaultRule] | None:
        """The ``create`` rules of a prompt's fault directives, shared by every create carrying that prompt."""
        if not isinstance(prompt, str) or "[sim:" not in prompt.lower():
            return None
        with self._lock:
            rules = self._prompt_faults.get(prompt)
        if rules is None:
            parsed = [rule for rule in parse_fault_directives(prompt) if rule.route == "create"]
            with self._lock:
                rules = self._prompt_faults.setdefault(prompt, parsed)
        return rules

    @property
    def create_requests(self) -> list[dict[str, Any]]:
        """
        Every create request so far, oldest first: ``{"prompt", "status", "prediction_id"}``.

        ``status`` is the answered HTTP status (``None`` when the connection was closed unanswered) and
        ``prediction_id`` the prediction it made (``None`` when it made none).
        """
        with self._lock:
            return [dict(entry) for entry in self._create_log]

    @property
    def cancel_requests(self) -> list[str]:
        """The prediction id of every cancel request so far, oldest first, whatever the answer."""
        with self._lock:
            return list(self._cancel_log)

    def creates_for(self, text: str) -> tuple[int, int]:
        """
        Count the create requests whose prompt contains ``text``, and the predictions they made.

        :param text: a substring of the prompt, e.g. a tag unique to one task.
        :return: ``(requests, predictions created)``.
        """
        entries = [e for e in self.create_requests if isinstance(e["prompt"], str) and text in e["prompt"]]
        return len(entries), sum(1 for e in entries if e["prediction_id"] is not None)

    def _build_record(self, model: str, model_input: dict[str, Any], deadline: float | None) -> _Record:
        prompt = model_input.get("prompt")
        outcome = "succeeded"
        error_message: str | None = None
        run_seconds = self.run_seconds
        output_kind = self.output_kind
        if isinstance(prompt, str):
            for match in _DIRECTIVE_RE.finditer(prompt):
                name, value = match.group(1).lower(), match.group(2)
                if name == "failed":
                    outcome = "failed"
                    error_message = value.strip() if value and value.strip() else DEFAULT_FAILURE_MESSAGE
                elif name in ("canceled", "aborted", "stuck"):
                    outcome = name
                elif name == "slow" and value is not None:
                    try:
                        seconds = float(value)
                    except ValueError:
                        continue
                    if math.isfinite(seconds) and seconds >= 0:
                        run_seconds = seconds
                elif name == "output" and value is not None and value.strip().lower() in ("list", "string"):
                    output_kind = value.strip().lower()
        if output_kind == "auto":
            output_kind = "list" if model in LIST_OUTPUT_MODELS else "string"
        image_count = 1
        num_outputs = model_input.get("num_outputs")
        if output_kind == "list" and isinstance(num_outputs, int) and not isinstance(num_outputs, bool):
            image_count = max(1, min(num_outputs, 16))
        fmt_input = model_input.get("output_format")
        try:
            fmt = normalise_format(fmt_input) if isinstance(fmt_input, str) else ""
        except ValueError:
            fmt = ""
        if not fmt:
            fmt = "png" if "kontext" in model else "webp"
        custom_w, custom_h = model_input.get("width"), model_input.get("height")
        width, height = image_size_for(
            model_input.get("aspect_ratio") if isinstance(model_input.get("aspect_ratio"), str) else None,
            long_side=self.image_size,
            width=custom_w if isinstance(custom_w, int) else None,
            height=custom_h if isinstance(custom_h, int) else None,
        )
        seed = model_input.get("seed")
        steps = model_input.get("num_inference_steps")
        return _Record(
            id=_new_prediction_id(),
            model=model,
            version=hashlib.sha256(model.encode("utf-8")).hexdigest(),
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
            log_seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else secrets.randbelow(1 << 31),
            steps=steps if isinstance(steps, int) and 1 <= steps <= 50 else 4,
            deadline=deadline,
            changed=asyncio.Event(),
            faults=[rule for rule in parse_fault_directives(prompt) if rule.route != "create"]
            if isinstance(prompt, str)
            else [],
        )

    def _status(self, record: _Record, now: float) -> tuple[str, float | None, float | None]:
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

    def _logs(self, record: _Record, status: str, started: float | None, completed: float | None, now: float) -> str:
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
            lines.append(f"Total safe images: {record.image_count} out of {record.image_count}")
        elif status == "failed":
            lines.append(f"Error: {record.error_message}")
        return "\n".join(lines) + "\n"

    def _expired(self, record: _Record, completed: float | None, now: float) -> bool:
        if self.expire_after is None or completed is None:
            return False
        return now - record.created_mono - completed >= self.expire_after

    def _render(self, record: _Record, now: float) -> dict[str, Any]:
        status, started, completed = self._status(record, now)
        api = f"https://api.replicate.com/v1/predictions/{record.id}"
        prediction: dict[str, Any] = {
            "id": record.id,
            "model": record.model,
            "version": record.version,
            "input": record.input,
            "logs": self._logs(record, status, started, completed, now),
            "output": None,
            "data_removed": False,
            "error": None,
            "source": "api",
            "status": status,
            "created_at": _iso(record.created_wall),
            "urls": {
                "cancel": f"{api}/cancel",
                "get": api,
                "stream": f"https://stream.replicate.com/v1/files/{record.id}",
                "web": f"https://replicate.com/p/{record.id}",
            },
        }
        if started is not None:
            prediction["started_at"] = _iso(record.created_wall + started)
        if completed is not None:
            prediction["completed_at"] = _iso(record.created_wall + completed)
        if status == "succeeded" and completed is not None and started is not None:
            urls = [f"{self.base_url}/files/{record.id}/{i}.{record.fmt}" for i in range(record.image_count)]
            prediction["output"] = urls if record.output_kind == "list" else urls[0]
            prediction["metrics"] = {
                "predict_time": round(completed - started, 6),
                "image_count": record.image_count,
            }
            prediction["data_removed"] = self._expired(record, completed, now)
        elif status == "failed":
            prediction["error"] = record.error_message
        return prediction

    def _image(self, record: _Record, index: int) -> bytes:
        key = (record.id, index)
        with self._lock:
            cached = self._images.get(key)
        if cached is not None:
            return cached
        seed = int.from_bytes(hashlib.sha256(f"{record.id}/{index}".encode()).digest()[:8], "big")
        data = render_image(record.fmt, seed=seed, width=record.width, height=record.height, pad_to=self.image_bytes)
        with self._lock:
            return self._images.setdefault(key, data)

    def _validate(self, model: str, model_input: dict[str, Any]) -> list[dict[str, str]]:
        formats = _KNOWN_FORMATS.get(model)
        if not self.validate_input or formats is None:
            return []
        problems: list[dict[str, str]] = []
        prompt = model_input.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            problems.append({"type": "required", "field": "input.prompt", "description": "prompt is required"})
        fmt = model_input.get("output_format")
        if fmt is not None and fmt not in formats:
            problems.append(
                {
                    "type": "enum",
                    "field": "input.output_format",
                    "description": f"output_format must be one of the following: {', '.join(formats)}",
                }
            )
        if model in LIST_OUTPUT_MODELS and "num_outputs" in model_input:
            count = model_input["num_outputs"]
            if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 4:
                problems.append(
                    {
                        "type": "number_one_of",
                        "field": "input.num_outputs",
                        "description": "num_outputs must be an integer between 1 and 4",
                    }
                )
        return problems

    # ------------------------------------------------------------------------------------ responses

    @staticmethod
    def _json(
        data: Any, status: int = 200, headers: dict[str, str] | None = None, reason: str | None = None
    ) -> web.Response:
        return web.Response(
            text=json.dumps(data),
            status=status,
            reason=reason,
            content_type="application/json",
            headers=headers,
        )

    @staticmethod
    def _problem(status: int, title: str, detail: str, **extra: Any) -> web.Response:
        body = {"title": title, "detail": detail, "status": status, **extra}
        return web.Response(text=json.dumps(body), status=status, content_type="application/problem+json")

    @staticmethod
    def _not_found_html() -> web.Response:
        return web.Response(text=_HTML_404, status=404, content_type="text/html")

    @staticmethod
    def _drop(request: web.Request) -> web.Response:
        """Close the connection without answering; the returned response is never sent."""
        if request.transport is not None:
            request.transport.close()
        return _DroppedResponse(status=500)

    def _unauthorized(self, request: web.Request) -> web.Response | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            message = "Invalid token: no bearer token was provided"
        elif self.api_key is not None and not hmac.compare_digest(token.encode("utf-8"), self.api_key.encode("utf-8")):
            message = f"Incorrect API key provided: {token}" if self.echo_key else "Invalid token"
        else:
            return None
        return self._json(_error_body(401, message=message, code="invalid_api_key"), status=401)

    async def _apply_fault(self, request: web.Request, rule: FaultRule | None) -> web.StreamResponse | None:
        """Carry out the generic part of a fault; ``None`` means "answer normally"."""
        if rule is None:
            return None
        if rule.delay:
            await asyncio.sleep(rule.delay)
        elif rule.kind == "slow":
            await asyncio.sleep(1.0)
        headers = {"Retry-After": _format_retry_after(rule.retry_after)} if rule.retry_after is not None else {}
        status = rule.status or 500
        if rule.kind == "status":
            body = _error_body(status, message=rule.message, code=rule.code)
            return self._json(body, status=status, headers=headers, reason=_reason(status))
        if rule.kind == "html":
            return web.Response(
                text=_html_page(status),
                status=status,
                reason=_reason(status),
                content_type="text/html",
                headers=headers,
            )
        if rule.kind == "drop":
            return self._drop(request)
        if rule.kind == "malformed":
            if rule.route == "file":
                page = "<!DOCTYPE html><html><body><p>Checking your browser...</p></body></html>"
                return web.Response(text=page, content_type="text/html", headers=headers)
            broken = '{"id": "' + _new_prediction_id() + '", "status": "process'
            return web.Response(text=broken, content_type="application/json", headers=headers)
        return None

    # ------------------------------------------------------------------------------------- handlers

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path.startswith("/_sim/"):
            return await handler(request)
        with self._lock:
            self._counters["requests"] += 1
            self._in_flight += 1
            self._counters["max_in_flight"] = max(self._counters["max_in_flight"], self._in_flight)
        response: web.StreamResponse | None = None
        status: int | None = None
        try:
            response = await handler(request)
            status = response.status
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            with self._lock:
                self._in_flight -= 1
                if isinstance(response, _DroppedResponse):
                    self._counters["dropped"] += 1
                elif status is not None:
                    key = str(status)
                    self._responses[key] = self._responses.get(key, 0) + 1
                if isinstance(response, _TruncatedResponse):
                    self._counters["truncated"] += 1
        return response

    async def _handle_create(self, request: web.Request) -> web.StreamResponse:
        self._bump("creates")
        raw = await request.read()
        try:
            payload = json.loads(raw) if raw else None
        except (ValueError, UnicodeDecodeError):
            payload = None
            problem = "the request body is not valid JSON"
        else:
            problem = "the request body must be a JSON object with an 'input' object"
        body_input = payload.get("input") if isinstance(payload, dict) else None
        prompt = body_input.get("prompt") if isinstance(body_input, dict) else None
        entry: dict[str, Any] = {
            "prompt": prompt if isinstance(prompt, str) else None,
            "status": None,
            "prediction_id": None,
        }
        with self._lock:
            self._create_log.append(entry)
        response = await self._create(request, payload, problem, entry)
        with self._lock:
            entry["status"] = None if isinstance(response, _DroppedResponse) else response.status
        return response

    async def _create(
        self, request: web.Request, payload: Any, problem: str, entry: dict[str, Any]
    ) -> web.StreamResponse:
        try:
            scoped = self._create_rules(entry["prompt"])
        except ValueError as exc:
            body = _error_body(400, message=f"bad simulator directive {exc}", param="input.prompt")
            return self._json(body, status=400)
        rule = self._take_fault("create", scoped)
        faulted = await self._apply_fault(request, rule)
        if faulted is not None:
            return faulted
        unauthorized = self._unauthorized(request)
        if unauthorized is not None:
            return unauthorized

        if not isinstance(payload, dict) or not isinstance(payload.get("input"), dict):
            return self._json(_error_body(400, message=problem, param="input"), status=400)
        model_input: dict[str, Any] = payload["input"]
        model = f"{request.match_info['owner']}/{request.match_info['name']}"

        invalid = self._validate(model, model_input)
        if invalid:
            detail = "".join(f"- {item['field']}: {item['description']}\n" for item in invalid)
            return self._problem(422, "Input validation failed", detail, invalid_fields=invalid)

        retry_after = self._rate_limit_slot()
        if retry_after is not None:
            limit = self.rate_limit_per_minute
            message = f"Rate limit reached: {limit} creates per {self.rate_limit_window:g} s"
            body = _error_body(429, message=message)
            return self._json(body, status=429, headers={"Retry-After": str(retry_after)})

        deadline = _parse_duration(request.headers.get("Cancel-After", ""))
        record = self._build_record(model, model_input, deadline)
        with self._lock:
            self._records[record.id] = record
            self._counters["created"] += 1
            entry["prediction_id"] = record.id
        log.debug("created prediction %s for %s", record.id, model)

        if rule is not None and rule.kind == "drop_after_create":
            return self._drop(request)

        wait = _parse_prefer_wait(request.headers.get("Prefer"))
        if wait is not None:
            await self._wait_until_terminal(record, wait)
        return self._json(self._render(record, time.monotonic()), status=self.create_status)

    def _rate_limit_slot(self) -> int | None:
        """Take a slot of the create rate limit; return the Retry-After seconds if there is none."""
        if self.rate_limit_per_minute is None:
            return None
        now = time.monotonic()
        with self._lock:
            window = self._create_times
            while window and now - window[0] >= self.rate_limit_window:
                window.popleft()
            if len(window) < self.rate_limit_per_minute:
                window.append(now)
                return None
            self._counters["rate_limited"] += 1
            return max(1, math.ceil(window[0] + self.rate_limit_window - now)) if window else 1

    async def _wait_until_terminal(self, record: _Record, seconds: float) -> None:
        give_up = time.monotonic() + seconds
        while True:
            now = time.monotonic()
            status, _, _ = self._status(record, now)
            if status in TERMINAL_STATUSES or now >= give_up:
                return
            timeout = give_up - now
            end = record.terminal()
            if end is not None:
                timeout = min(timeout, max(0.0, record.created_mono + end[0] - now) + 0.001)
            assert record.changed is not None
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(record.changed.wait(), timeout=timeout)

    def _lookup(self, prediction_id: str) -> _Record | None:
        with self._lock:
            return self._records.get(prediction_id)

    def _prediction_not_found(self) -> web.Response:
        return self._problem(404, "Prediction not found", "The requested prediction was not found.")

    async def _handle_get(self, request: web.Request) -> web.StreamResponse:
        self._bump("gets")
        record = self._lookup(request.match_info["id"])
        faulted = await self._apply_fault(request, self._take_fault("get", record.faults if record else None))
        if faulted is not None:
            return faulted
        unauthorized = self._unauthorized(request)
        if unauthorized is not None:
            return unauthorized
        if self.poll_delay > 0:
            await asyncio.sleep(self.poll_delay)
        if record is None:
            return self._prediction_not_found()
        return self._json(self._render(record, time.monotonic()))

    async def _handle_cancel(self, request: web.Request) -> web.StreamResponse:
        self._bump("cancels")
        with self._lock:
            self._cancel_log.append(request.match_info["id"])
        if not self.cancel_supported:
            return self._not_found_html()
        record = self._lookup(request.match_info["id"])
        faulted = await self._apply_fault(request, self._take_fault("cancel", record.faults if record else None))
        if faulted is not None:
            return faulted
        unauthorized = self._unauthorized(request)
        if unauthorized is not None:
            return unauthorized
        if record is None:
            return self._prediction_not_found()
        now = time.monotonic()
        status, _, _ = self._status(record, now)
        if status not in TERMINAL_STATUSES:
            with self._lock:
                record.canceled_after = now - record.created_mono
            if record.changed is not None:
                record.changed.set()
        return self._json(self._render(record, now))

    async def _handle_file(self, request: web.Request) -> web.StreamResponse:
        self._bump("downloads")
        record = self._lookup(request.match_info["id"])
        rule = self._take_fault("file", record.faults if record else None)
        faulted = await self._apply_fault(request, rule)
        if faulted is not None:
            return faulted
        if rule is not None and rule.kind == "expired":
            code = rule.status or 404
            headers = {} if rule.retry_after is None else {"Retry-After": _format_retry_after(rule.retry_after)}
            return web.Response(text=f"{code} {_reason(code)}", status=code, reason=_reason(code), headers=headers)
        missing = web.Response(text="404 Not Found", status=404)
        if record is None:
            return missing
        now = time.monotonic()
        status, _, completed = self._status(record, now)
        index = int(request.match_info["index"])
        ext = request.match_info["ext"].lower()
        if status != "succeeded" or index >= record.image_count or ext != record.fmt:
            return missing
        if record.output_kind == "string" and index > 0:
            return missing
        if self._expired(record, completed, now):
            return missing
        data = self._image(record, index)
        content_type = content_type_for(record.fmt)
        if rule is not None and rule.kind == "truncate":
            response = _TruncatedResponse(status=200, headers={"Content-Type": content_type})
            response.content_length = len(data)
            await response.prepare(request)
            await response.write(data[: len(data) // 2])
            if request.transport is not None:
                request.transport.close()
            return response
        cache = {"Cache-Control": "public, max-age=3600"}
        return web.Response(body=data, content_type=content_type, headers=cache)

    async def _handle_not_found(self, request: web.Request) -> web.StreamResponse:
        self._bump("not_found")
        return self._not_found_html()

    async def _handle_sim_stats(self, request: web.Request) -> web.StreamResponse:
        return self._json(self.stats)

    async def _handle_sim_predictions(self, request: web.Request) -> web.StreamResponse:
        return self._json(self.predictions)

    async def _handle_sim_faults_list(self, request: web.Request) -> web.StreamResponse:
        return self._json({"faults": [rule.to_dict() for rule in self.faults]})

    async def _handle_sim_faults_add(self, request: web.Request) -> web.StreamResponse:
        try:
            payload = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            return self._json(_error_body(400, message="the body is not valid JSON"), status=400)
        items: Iterable[Any] = payload if isinstance(payload, list) else [payload]
        allowed = {"route", "kind", "times", "status", "retry_after", "delay", "code", "message"}
        rules: list[FaultRule] = []
        for item in items:
            if not isinstance(item, dict) or not set(item) <= allowed or not {"route", "kind"} <= set(item):
                message = f"a fault is an object with 'route', 'kind' and optionally {sorted(allowed)}"
                return self._json(_error_body(400, message=message), status=400)
            try:
                rules.append(FaultRule(**item))
            except (TypeError, ValueError) as exc:
                return self._json(_error_body(400, message=str(exc)), status=400)
        with self._lock:
            self._faults.extend(rules)
        return self._json({"added": [rule.to_dict() for rule in rules]}, status=201)

    async def _handle_sim_reset(self, request: web.Request) -> web.StreamResponse:
        self.reset()
        return self._json({"reset": True})


def _raise_open_file_limit() -> None:
    """Raise the soft open-file limit to the hard one so many connections can be served."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_cometflux.testing.simulator",
        description="Serve a local simulator of CometAPI's Replicate-format FLUX API.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    parser.add_argument("--run-seconds", type=float, default=1.0, help="time each prediction takes")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("COMETAPI_SIMULATOR_API_KEY"),
        help="the only accepted bearer token (default: $COMETAPI_SIMULATOR_API_KEY, else any token)",
    )
    parser.add_argument("--output-kind", choices=("auto", "list", "string"), default="auto")
    parser.add_argument("--no-cancel", action="store_true", help="answer the cancel route with 404")
    parser.add_argument("--expire-after", type=float, default=None, help="file URLs expire after S seconds")
    parser.add_argument("--rate-limit-per-minute", type=int, default=None, help="answer 429 over this rate")
    parser.add_argument("--poll-delay", type=float, default=0.0, help="every prediction GET takes S seconds")
    parser.add_argument("--image-bytes", type=int, default=None, help="pad image files to about N bytes")
    parser.add_argument("--backlog", type=int, default=4096, help="listen backlog")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each prediction created")
    return parser


def main(argv: list[str] | None = None) -> int:
    """
    Run the simulator until SIGINT or SIGTERM.

    :param argv: command-line arguments (default ``sys.argv[1:]``).
    :return: the process exit status.
    """
    args = _build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(message)s")
    _raise_open_file_limit()
    simulator = CometAPISimulator(
        args.host,
        args.port,
        run_seconds=args.run_seconds,
        api_key=args.api_key or None,
        output_kind=args.output_kind,
        cancel_supported=not args.no_cancel,
        expire_after=args.expire_after,
        rate_limit_per_minute=args.rate_limit_per_minute,
        poll_delay=args.poll_delay,
        image_bytes=args.image_bytes,
        backlog=args.backlog,
    )
    stop = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    simulator.start()
    print(f"CometAPI simulator listening on {simulator.base_url}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        simulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
