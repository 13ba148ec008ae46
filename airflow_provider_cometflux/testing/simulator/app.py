"""
The simulator's server: :class:`CometAPISimulator`, an ``aiohttp.web`` application on its own event loop in a
background thread, so synchronous tests, asynchronous tests and other processes can all talk to it over loopback.
One event loop serves every connection, so thousands of slow, concurrent requests cost no threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import socket
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any

from aiohttp import web

from airflow_provider_cometflux.schema import MAX_REQUEST_BYTES
from airflow_provider_cometflux.testing.simulator.faults import (
    HUGE_SIZE,
    RULE_FIELDS,
    STREAM_SECONDS,
    THROTTLE_SECONDS,
    FaultRule,
    parse_fault_directives,
)
from airflow_provider_cometflux.testing.simulator.images import content_type_for, render_image
from airflow_provider_cometflux.testing.simulator.lifecycle import (
    TERMINAL_STATUSES,
    Record,
    build_record,
    expired,
    new_prediction_id,
    parse_duration,
    parse_prefer_wait,
    render,
    status_of,
)
from airflow_provider_cometflux.testing.simulator.responses import (
    DroppedResponse,
    TruncatedResponse,
    error_body,
    format_retry_after,
    html_page,
    json_response,
    not_found_html,
    problem_response,
    reason,
    throttled_response,
    throttled_without_retry_after,
)
from airflow_provider_cometflux.testing.simulator.validation import (
    DEFAULT_KNOWN_MODELS,
    invalid_fields,
    model_not_found_body,
    validation_problem_body,
)

__all__ = ["CometAPISimulator", "require_pillow"]

log = logging.getLogger("airflow_provider_cometflux.testing.simulator")

#: How many rendered image files are kept (they are deterministic: an evicted one is drawn again if asked for).
IMAGE_CACHE_SIZE = 64


def require_pillow() -> None:
    """
    :raises RuntimeError: when Pillow, which draws every image the simulator serves, is not installed (the
        simulator would otherwise start and answer 500 for every image).
    """
    try:
        import PIL  # noqa: F401
    except ImportError:
        raise RuntimeError(
            "the CometAPI simulator draws its images with Pillow, which is not installed: "
            "pip install 'airflow-provider-cometflux[testing]' (or pip install pillow)"
        ) from None


class CometAPISimulator:
    """
    A CometAPI (Replicate-format) FLUX service on loopback; the README's "The simulator" section describes it.

    :param host: the address to listen on.
    :param port: the port to listen on; 0 picks a free one (read it back from :attr:`port`).
    :param run_seconds: how long a prediction takes from creation to its terminal status.
    :param api_key: the only accepted bearer token (any other answers 401); ``None`` accepts any non-empty one. The
        pytest fixtures and the command line give ``sim-0123456789abcdef`` unless told otherwise.
    :param output_kind: ``auto`` (per model), ``list`` or ``string``.
    :param cancel_supported: serve the cancel route; when false it answers an HTML 404 like CometAPI.
    :param expire_after: seconds after completion when file URLs start answering 404; ``None``: never.
    :param rate_limit_per_minute: maximum creates per ``rate_limit_window`` seconds; over it answer 429.
    :param rate_limit_window: the sliding window of the rate limit, in seconds.
    :param poll_delay: seconds every prediction GET waits before answering.
    :param image_size: if set, scale images down so their longer side is at most this many pixels (default:
        the real FLUX size for the requested ``aspect_ratio`` and ``megapixels``).
    :param image_bytes: if set, pad every generated image file to about this many bytes.
    :param validate_input: check every input of the known FLUX models and answer 422 like Replicate.
    :param known_models: the models a create may name (``owner/name``); others answer 404 as the service does.
        Default: the service's ten FLUX models; ``None`` accepts any model (unvalidated).
    :param requests_per_second: a service-wide limit on API requests (create, get, cancel) per one-second
        window; above it answer 429 with ``Retry-After: 1`` and Replicate's throttle body. ``None``: no limit.
    :param create_status: the status of a successful create (201, or 202 as CometAPI may answer).
    :param backlog: the listen backlog (raise it for many thousands of concurrent connections).
    :param echo_key: quote a refused bearer token in the 401 message, as some services do.
    :param max_request_bytes: the largest request body accepted (413 above it): by default the largest create the
        provider sends (:data:`airflow_provider_cometflux.inputs.MAX_REQUEST_BYTES`, its inline images included).
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
        image_size: int | None = None,
        image_bytes: int | None = None,
        validate_input: bool = True,
        known_models: Iterable[str] | None = DEFAULT_KNOWN_MODELS,
        requests_per_second: int | None = None,
        create_status: int = 201,
        backlog: int = 4096,
        echo_key: bool = False,
        max_request_bytes: int = MAX_REQUEST_BYTES,
    ) -> None:
        if output_kind not in ("auto", "list", "string"):
            raise ValueError("output_kind must be 'auto', 'list' or 'string'")
        if run_seconds < 0:
            raise ValueError("run_seconds must not be negative")
        if requests_per_second is not None and (isinstance(requests_per_second, bool) or requests_per_second < 1):
            raise ValueError("requests_per_second must be a positive integer or None")
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
        self.image_size = None if image_size is None else int(image_size)
        self.image_bytes = image_bytes
        self.validate_input = validate_input
        self.known_models: frozenset[str] | None = None if known_models is None else frozenset(known_models)
        self.requests_per_second = requests_per_second
        self.create_status = create_status
        self.backlog = backlog
        self.echo_key = echo_key
        self.max_request_bytes = int(max_request_bytes)

        self._lock = threading.Lock()
        self._records: dict[str, Record] = {}
        self._faults: list[FaultRule] = []
        self._prompt_faults: dict[str, list[FaultRule]] = {}
        self._create_log: list[dict[str, Any]] = []
        self._cancel_log: list[str] = []
        self._images: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._trickles: dict[int, float] = {}  # id(request) -> seconds between bytes, for requests to trickle
        self._second = -1  # the one-second window of requests_per_second, and the requests counted in it
        self._second_count = 0
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
        require_pillow()
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
        app = web.Application(middlewares=[self._middleware], client_max_size=self.max_request_bytes)
        app.router.add_post("/replicate/v1/models/{owner}/{name}/predictions", self._handle_create, name="create")
        app.router.add_get("/replicate/v1/predictions/{id}", self._handle_get, name="get")
        app.router.add_post("/replicate/v1/predictions/{id}/cancel", self._handle_cancel, name="cancel")
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
        location: str | None = None,
        size: int | None = None,
    ) -> FaultRule:
        """
        Make the next ``times`` requests to ``route`` misbehave.

        :param route: ``create``, ``get``, ``cancel`` or ``file``.
        :param kind: ``status``, ``html``, ``drop``, ``slow``, ``malformed``, ``trickle``, ``truncate`` (file),
            ``expired`` (file), ``huge`` (file), ``endless`` (file), ``drop_after_create`` (create),
            ``redirect`` (create, get, cancel) or ``throttle`` (create, get, cancel: Replicate's 429 without
            ``Retry-After`` for every request of the route during ``delay`` seconds, 30 by default).
        :param times: how many requests the rule applies to; ``None`` for all of them.
        :param status: the HTTP status for ``status`` (default 500), ``html`` (502), ``expired`` (404),
            ``redirect`` (307).
        :param retry_after: if set, sent as the ``Retry-After`` header (seconds).
        :param delay: seconds to wait: the whole effect of ``slow`` (default 1), between two bytes of a
            ``trickle`` (default 1), how long a ``throttle`` lasts (default 30), a pause before others.
        :param code: overrides ``error.code`` in a ``status`` body (e.g. ``"invalid_request"``).
        :param message: overrides ``error.message`` in a ``status`` body.
        :param location: where a ``redirect`` points.
        :param size: the ``Content-Length`` a ``huge`` download declares.
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
            location=location,
            size=size,
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
            self._second, self._second_count = -1, 0
            self._reset_counters()

    @property
    def stats(self) -> dict[str, Any]:
        """
        A snapshot of the request counters.

        ``requests`` counts every request except the ``/_sim`` control routes, ``api_requests`` those to the
        ``/replicate/v1`` routes; ``creates``, ``gets``, ``cancels`` and ``downloads`` count requests to
        those routes whatever the answer; ``not_found`` counts requests to unknown paths. ``created`` is the
        number of predictions created. ``answered`` counts requests given an answer, ``refused`` those
        answered with a status of 400 or more, and ``rate_limited`` the 429s of the simulator's own limits
        (``requests_per_second`` and ``rate_limit_per_minute``). ``responses`` maps each answered status (as a
        string) to its count; ``dropped`` counts connections closed without an answer, ``truncated``
        partial file bodies; ``images_drawn`` counts image files drawn (each is drawn on its first download and
        cached); ``faults_applied``, ``in_flight`` and ``max_in_flight`` are what they say.
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
            "api_requests": 0,
            "answered": 0,
            "refused": 0,
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
            "images_drawn": 0,
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
                for rule in list(rules):
                    if rule.route == route:
                        if rule.kind == "throttle" and not self._throttling(rule):
                            rules.remove(rule)
                            continue
                        rule.applied += 1
                        if rule.times is not None and rule.applied >= rule.times:
                            rules.remove(rule)
                        self._counters["faults_applied"] += 1
                        return rule
        return None

    @staticmethod
    def _throttling(rule: FaultRule) -> bool:
        """Whether a ``throttle`` rule still refuses: for ``delay`` seconds from the first request it met."""
        now = time.monotonic()
        if rule.since is None:
            rule.since = now
        return now - rule.since < (rule.delay if rule.delay is not None else THROTTLE_SECONDS)

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

    def _build_record(self, model: str, model_input: dict[str, Any], deadline: float | None) -> Record:
        return build_record(
            model,
            model_input,
            run_seconds=self.run_seconds,
            output_kind=self.output_kind,
            deadline=deadline,
            long_side=self.image_size,
        )

    def _status(self, record: Record, now: float) -> tuple[str, float | None, float | None]:
        """Return ``(status, started offset, completed offset)`` at monotonic time ``now``."""
        return status_of(record, now)

    def _expired(self, record: Record, completed: float | None, now: float) -> bool:
        return expired(record, completed, now, self.expire_after)

    def _render(self, record: Record, now: float) -> dict[str, Any]:
        return render(record, now, base_url=self.base_url, expire_after=self.expire_after)

    def _draw(self, record: Record, index: int) -> bytes:
        """Draw one output file (deterministic: the same prediction and index give the same bytes)."""
        import hashlib

        seed = int.from_bytes(hashlib.sha256(f"{record.id}/{index}".encode()).digest()[:8], "big")
        prompt = record.input.get("prompt")
        self._bump("images_drawn")
        return render_image(
            record.fmt,
            seed=seed,
            width=record.width,
            height=record.height,
            prompt=prompt if isinstance(prompt, str) else "",
            caption=f"{record.model} {record.id} #{index}",
            quality=record.quality,
            pad_to=self.image_bytes,
        )

    def _cached_image(self, key: tuple[str, int]) -> bytes | None:
        with self._lock:
            data = self._images.get(key)
            if data is not None:
                self._images.move_to_end(key)
            return data

    def _store_image(self, key: tuple[str, int], data: bytes) -> bytes:
        with self._lock:
            data = self._images.setdefault(key, data)
            while len(self._images) > IMAGE_CACHE_SIZE:
                self._images.popitem(last=False)
            return data

    def _image(self, record: Record, index: int) -> bytes:
        key = (record.id, index)
        cached = self._cached_image(key)
        return cached if cached is not None else self._store_image(key, self._draw(record, index))

    async def _aimage(self, record: Record, index: int) -> bytes:
        """:meth:`_image` for the event loop: drawing runs in a worker thread, so other requests go on."""
        key = (record.id, index)
        cached = self._cached_image(key)
        if cached is not None:
            return cached
        data = await asyncio.get_running_loop().run_in_executor(None, self._draw, record, index)
        return self._store_image(key, data)

    def _validate(self, model: str, model_input: dict[str, Any]) -> list[dict[str, str]]:
        return invalid_fields(model, model_input) if self.validate_input else []

    def _known(self, model: str) -> bool:
        return self.known_models is None or model in self.known_models

    @staticmethod
    def _drop(request: web.Request) -> web.Response:
        """Close the connection without answering; the returned response is never sent."""
        if request.transport is not None:
            request.transport.close()
        return DroppedResponse(status=500)

    def _unauthorized(self, request: web.Request) -> web.Response | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            message = "Invalid token: no bearer token was provided"
        elif self.api_key is not None and not hmac.compare_digest(token.encode("utf-8"), self.api_key.encode("utf-8")):
            message = f"Incorrect API key provided: {token}" if self.echo_key else "Invalid token"
        else:
            return None
        return json_response(error_body(401, message=message, code="invalid_api_key"), status=401)

    async def _apply_fault(self, request: web.Request, rule: FaultRule | None) -> web.StreamResponse | None:
        """Carry out the generic part of a fault; ``None`` means "answer normally"."""
        if rule is None:
            return None
        if rule.kind == "trickle":  # the normal answer, one byte every ``delay`` seconds (see the middleware)
            self._trickles[id(request)] = rule.delay or 1.0
            return None
        if rule.kind == "throttle":  # Replicate's spent limit: 429 without Retry-After until the window ends
            window = rule.delay if rule.delay is not None else THROTTLE_SECONDS
            return throttled_without_retry_after(window - (time.monotonic() - (rule.since or time.monotonic())))
        if rule.delay:
            await asyncio.sleep(rule.delay)
        elif rule.kind == "slow":
            await asyncio.sleep(1.0)
        headers = {"Retry-After": format_retry_after(rule.retry_after)} if rule.retry_after is not None else {}
        status = rule.status or 500
        if rule.kind == "status":
            body = error_body(status, message=rule.message, code=rule.code)
            return json_response(body, status=status, headers=headers, reason=reason(status))
        if rule.kind == "html":
            return web.Response(
                text=html_page(status),
                status=status,
                reason=reason(status),
                content_type="text/html",
                headers=headers,
            )
        if rule.kind == "drop":
            return self._drop(request)
        if rule.kind == "redirect":
            return web.Response(
                status=status, reason=reason(status), headers={**headers, "Location": rule.location or ""}
            )
        if rule.kind in ("huge", "endless"):
            return await self._stream_forever(
                request, declared=(rule.size or HUGE_SIZE) if rule.kind == "huge" else None
            )
        if rule.kind == "malformed":
            if rule.route == "file":
                page = "<!DOCTYPE html><html><body><p>Checking your browser...</p></body></html>"
                return web.Response(text=page, content_type="text/html", headers=headers)
            broken = '{"id": "' + new_prediction_id() + '", "status": "process'
            return web.Response(text=broken, content_type="application/json", headers=headers)
        return None

    async def _stream_forever(self, request: web.Request, *, declared: int | None) -> web.StreamResponse:
        """Send image bytes for as long as the client reads (bounded: it stops by itself), declaring ``declared``."""
        response = web.StreamResponse(status=200, headers={"Content-Type": "image/png"})
        if declared is not None:
            response.content_length = declared
        await response.prepare(request)
        chunk = b"\x89PNG\r\n\x1a\n" + bytes(64 * 1024 - 8)
        sent, stop_at = 0, time.monotonic() + STREAM_SECONDS
        limit = declared if declared is not None else HUGE_SIZE
        with contextlib.suppress(ConnectionError, RuntimeError):
            while sent < limit and time.monotonic() < stop_at:
                await response.write(chunk[: limit - sent])
                sent += len(chunk)
        if request.transport is not None:
            request.transport.close()
        return response

    async def _trickle(self, request: web.Request, response: web.Response, delay: float) -> web.StreamResponse:
        """Send a finished answer one byte every ``delay`` seconds, as a service on its worst day might."""
        body = bytes(response.body or b"") if isinstance(response.body, (bytes, bytearray)) else b""
        slow = web.StreamResponse(status=response.status, reason=response.reason, headers=response.headers)
        slow.content_length = len(body)
        await slow.prepare(request)
        with contextlib.suppress(ConnectionError, RuntimeError):
            for index in range(len(body)):
                await slow.write(body[index : index + 1])
                await asyncio.sleep(delay)
            await slow.write_eof()
        return slow

    # ------------------------------------------------------------------------------------- handlers

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path.startswith("/_sim/"):
            return await handler(request)
        api = request.path.startswith("/replicate/")
        throttled = False
        with self._lock:
            self._counters["requests"] += 1
            self._in_flight += 1
            self._counters["max_in_flight"] = max(self._counters["max_in_flight"], self._in_flight)
            if api:
                self._counters["api_requests"] += 1
                if self.requests_per_second is not None:
                    second = int(time.monotonic())
                    if second != self._second:
                        self._second, self._second_count = second, 0
                    self._second_count += 1
                    throttled = self._second_count > self.requests_per_second
        response: web.StreamResponse | None = None
        status: int | None = None
        try:
            response = await (self._throttled(request) if throttled else handler(request))
            status = response.status
            trickle = self._trickles.pop(id(request), None)
            if trickle and isinstance(response, web.Response) and not isinstance(response, DroppedResponse):
                response = await self._trickle(request, response, float(trickle))
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            self._trickles.pop(id(request), None)
            with self._lock:
                self._in_flight -= 1
                if isinstance(response, DroppedResponse):
                    self._counters["dropped"] += 1
                elif status is not None:
                    key = str(status)
                    self._responses[key] = self._responses.get(key, 0) + 1
                    self._counters["answered"] += 1
                    if status >= 400:
                        self._counters["refused"] += 1
                if isinstance(response, TruncatedResponse):
                    self._counters["truncated"] += 1
        return response

    async def _throttled(self, request: web.Request) -> web.StreamResponse:
        """Refuse an API request over ``requests_per_second``, counting it against its route."""
        route = request.match_info.route.name
        counter = {"create": "creates", "get": "gets", "cancel": "cancels"}.get(route or "", "not_found")
        with self._lock:
            self._counters[counter] += 1
            self._counters["rate_limited"] += 1
        if route == "create":  # still a create request: creates_for() counts it
            prompt = self._prompt_of(await request.read())
            with self._lock:
                self._create_log.append({"prompt": prompt, "status": 429, "prediction_id": None})
        return throttled_response()

    @staticmethod
    def _prompt_of(raw: bytes) -> str | None:
        try:
            payload = json.loads(raw) if raw else None
        except (ValueError, UnicodeDecodeError):
            return None
        body_input = payload.get("input") if isinstance(payload, dict) else None
        prompt = body_input.get("prompt") if isinstance(body_input, dict) else None
        return prompt if isinstance(prompt, str) else None

    async def _handle_create(self, request: web.Request) -> web.StreamResponse:
        self._bump("creates")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            message = f"the request body is over {self.max_request_bytes} bytes; send large images as https URLs"
            return json_response(error_body(413, message=message, code="request_too_large"), status=413)
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
            entry["status"] = None if isinstance(response, DroppedResponse) else response.status
        return response

    async def _create(
        self, request: web.Request, payload: Any, problem: str, entry: dict[str, Any]
    ) -> web.StreamResponse:
        try:
            scoped = self._create_rules(entry["prompt"])
        except ValueError as exc:
            body = error_body(400, message=f"bad simulator directive {exc}", param="input.prompt")
            return json_response(body, status=400)
        rule = self._take_fault("create", scoped)
        faulted = await self._apply_fault(request, rule)
        if faulted is not None:
            return faulted
        unauthorized = self._unauthorized(request)
        if unauthorized is not None:
            return unauthorized

        if not isinstance(payload, dict) or not isinstance(payload.get("input"), dict):
            return json_response(error_body(400, message=problem, param="input"), status=400)
        model_input: dict[str, Any] = payload["input"]
        model = f"{request.match_info['owner']}/{request.match_info['name']}"
        if not self._known(model):
            return problem_response(model_not_found_body())

        invalid = self._validate(model, model_input)
        if invalid:
            return problem_response(validation_problem_body(invalid))

        retry_after = self._rate_limit_slot()
        if retry_after is not None:
            limit = self.rate_limit_per_minute
            message = f"Rate limit reached: {limit} creates per {self.rate_limit_window:g} s"
            body = error_body(429, message=message)
            return json_response(body, status=429, headers={"Retry-After": str(retry_after)})

        deadline = parse_duration(request.headers.get("Cancel-After", ""))
        record = self._build_record(model, model_input, deadline)
        with self._lock:
            self._records[record.id] = record
            self._counters["created"] += 1
            entry["prediction_id"] = record.id
        log.debug("created prediction %s for %s", record.id, model)

        if rule is not None and rule.kind == "drop_after_create":
            return self._drop(request)

        wait = parse_prefer_wait(request.headers.get("Prefer"))
        if wait is not None:
            await self._wait_until_terminal(record, wait)
        return json_response(self._render(record, time.monotonic()), status=self.create_status)

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

    async def _wait_until_terminal(self, record: Record, seconds: float) -> None:
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

    def _lookup(self, prediction_id: str) -> Record | None:
        with self._lock:
            return self._records.get(prediction_id)

    def _prediction_not_found(self) -> web.Response:
        return problem_response(
            {"title": "Prediction not found", "detail": "The requested prediction was not found.", "status": 404}
        )

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
        return json_response(self._render(record, time.monotonic()))

    async def _handle_cancel(self, request: web.Request) -> web.StreamResponse:
        self._bump("cancels")
        with self._lock:
            self._cancel_log.append(request.match_info["id"])
        if not self.cancel_supported:
            return not_found_html()
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
        return json_response(self._render(record, now))

    async def _handle_file(self, request: web.Request) -> web.StreamResponse:
        self._bump("downloads")
        record = self._lookup(request.match_info["id"])
        rule = self._take_fault("file", record.faults if record else None)
        faulted = await self._apply_fault(request, rule)
        if faulted is not None:
            return faulted
        if rule is not None and rule.kind == "expired":
            code = rule.status or 404
            headers = {} if rule.retry_after is None else {"Retry-After": format_retry_after(rule.retry_after)}
            return web.Response(text=f"{code} {reason(code)}", status=code, reason=reason(code), headers=headers)
        missing = web.Response(text="404 Not Found", status=404)
        if record is None:
            return missing
        now = time.monotonic()
        status, _, completed = self._status(record, now)
        index = int(request.match_info["index"])
        ext = request.match_info["ext"].lower()
        if status != "succeeded" or index >= record.image_count or ext != record.fmt:
            return missing
        if record.output_kind in ("empty", "null") or (record.output_kind == "string" and index > 0):
            return missing
        if self._expired(record, completed, now):
            return missing
        data = await self._aimage(record, index)
        content_type = content_type_for(record.fmt)
        if rule is not None and rule.kind == "truncate":
            response = TruncatedResponse(status=200, headers={"Content-Type": content_type})
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
        return not_found_html()

    async def _handle_sim_stats(self, request: web.Request) -> web.StreamResponse:
        return json_response(self.stats)

    async def _handle_sim_predictions(self, request: web.Request) -> web.StreamResponse:
        return json_response(self.predictions)

    async def _handle_sim_faults_list(self, request: web.Request) -> web.StreamResponse:
        return json_response({"faults": [rule.to_dict() for rule in self.faults]})

    async def _handle_sim_faults_add(self, request: web.Request) -> web.StreamResponse:
        try:
            payload = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            return json_response(error_body(400, message="the body is not valid JSON"), status=400)
        items: Iterable[Any] = payload if isinstance(payload, list) else [payload]
        allowed = RULE_FIELDS
        rules: list[FaultRule] = []
        for item in items:
            if not isinstance(item, dict) or not set(item) <= allowed or not {"route", "kind"} <= set(item):
                message = f"a fault is an object with 'route', 'kind' and optionally {sorted(allowed)}"
                return json_response(error_body(400, message=message), status=400)
            try:
                rules.append(FaultRule(**item))
            except (TypeError, ValueError) as exc:
                return json_response(error_body(400, message=str(exc)), status=400)
        with self._lock:
            self._faults.extend(rules)
        return json_response({"added": [rule.to_dict() for rule in rules]}, status=201)

    async def _handle_sim_reset(self, request: web.Request) -> web.StreamResponse:
        self.reset()
        return json_response({"reset": True})
