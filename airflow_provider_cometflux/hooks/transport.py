"""One transport for every request the provider makes: what an answer means, and one retry loop.

The decisions (:func:`read_answer`, :func:`service_error`, :func:`transport_failure`, :class:`Retrier`) are pure;
:func:`sync_request` / :func:`async_request` and :func:`sync_download` are the faces that do the I/O, with
``requests`` in the worker and ``aiohttp`` on an event loop. Every face:

* bounds the whole request by its deadline (connecting, waiting for a pooled connection, every byte of the answer),
  so an answer that trickles in cannot outlast a task's ``timeout``;
* bounds the size of what it reads;
* never follows a redirect: an API call stays on the API host and an answer from elsewhere is not believed;
* keeps the API key out of every message (:func:`redact`) and escapes the service's text (:func:`safe_text`).

See ``docs/architecture.md`` for where this sits in the provider.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from airflow_provider_cometflux.exceptions import (
    BodyTooLargeError,
    CometAPIAuthError,
    CometAPIError,
    DeadlineReachedError,
    PredictionMayExistError,
)
from airflow_provider_cometflux.models import safe_text
from airflow_provider_cometflux.pacing import RetryPolicy, is_retryable_status, parse_retry_after

if TYPE_CHECKING:
    import aiohttp
    import requests

log = logging.getLogger(__name__)

USER_AGENT = "airflow-provider-cometflux"
#: The largest API answer read (a prediction is a few KB; its ``logs`` can grow).
MAX_API_BODY = 8 * 1024 * 1024
#: Bytes read at a time.
CHUNK_SIZE = 64 * 1024


@dataclass(frozen=True)
class Answer:
    """What one try of a request came to: the parsed body, or an error and whether to try again."""

    data: dict[str, Any] | None = None
    error: CometAPIError | None = None
    retryable: bool = False
    retry_after: float | None = None


def redact(text: str, secret: str | None) -> str:
    """Blank out the API key wherever a service's message (or a transport error) repeats it."""
    return text.replace(secret, "***") if secret else text


def _clean(text: object, secret: str | None) -> str:
    return safe_text(redact(str(text), secret))


def service_error(
    status: int,
    body: bytes,
    content_type: str,
    prediction_id: str | None,
    retry_after: float | None = None,
    *,
    secret: str | None = None,
) -> Answer:
    """Turn an error answer, in either of the service's error shapes (or HTML), into one exception."""
    message, error_type, error_code = None, None, None
    try:
        payload = json.loads(body) if body else None
    except ValueError:
        payload = None
    if isinstance(payload, Mapping):
        err = payload.get("error")
        if isinstance(err, Mapping):  # CometAPI: {"error": {"message", "type", "param", "code"}}
            message = err.get("message")
            error_type, error_code = err.get("type"), err.get("code")
            if err.get("param"):
                message = f"{message} (param: {err.get('param')})"
        elif isinstance(err, str):
            message = err
        elif "title" in payload or "detail" in payload:  # Replicate: problem+json
            error_type = payload.get("title")
            message = payload.get("detail") or payload.get("title")
    if not message:
        snippet = body[:200].decode("utf-8", "replace").strip()
        kind = "an HTML page" if "html" in content_type or snippet.lower().startswith("<") else "a non-JSON body"
        message = f"the service answered {kind}" + (f": {snippet!r}" if snippet and "html" not in kind else "")
    cls = CometAPIAuthError if status in (401, 403) else CometAPIError
    retryable = is_retryable_status(status, str(error_code) if error_code else None)
    error = cls(
        _clean(message, secret),
        http_status=status,
        prediction_id=prediction_id,
        error_type=_clean(error_type, secret) if error_type else None,
        error_code=_clean(error_code, secret) if error_code else None,
        transient=retryable,
        retry_after=retry_after,
    )
    return Answer(error=error, retryable=retryable, retry_after=retry_after)


def read_answer(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    op: str,
    prediction_id: str | None,
    secret: str | None = None,
) -> Answer:
    """Decide what an HTTP answer means for a request of kind ``op`` (``create``, ``get`` or ``cancel``)."""
    content_type = headers.get("Content-Type", "")
    if 300 <= status < 400:
        return _redirected(status, headers.get("Location", ""), op=op, prediction_id=prediction_id, secret=secret)
    if status >= 400:
        retry_after = parse_retry_after(headers.get("Retry-After"))
        return service_error(status, body, content_type, prediction_id, retry_after, secret=secret)
    try:
        data = json.loads(body) if body else None
    except ValueError:
        data = None
    if isinstance(data, dict):
        return Answer(data=data)
    if op == "cancel":  # the service took the cancel; it need not say more
        return Answer(data={})
    snippet = _clean(body[:120].decode("utf-8", "replace"), secret)
    if op == "create":  # accepted, but we cannot tell which prediction: never resubmit blindly
        return Answer(
            error=PredictionMayExistError(
                f"the create answered HTTP {status} with a body that is not a prediction ({snippet!r}); "
                "a prediction may have been created: check your CometAPI dashboard before retrying",
                http_status=status,
            )
        )
    error = CometAPIError(
        f"the service answered HTTP {status} with a body that is not JSON: {snippet!r}",
        http_status=status,
        prediction_id=prediction_id,
        transient=True,
    )
    return Answer(error=error, retryable=True)


def _redirected(status: int, location: str, *, op: str, prediction_id: str | None, secret: str | None) -> Answer:
    """An API call answered with a redirect: never followed, never believed."""
    where = _clean(location[:200], secret) or "nowhere"
    text = (
        f"the service redirected the API call (HTTP {status}) to {where}; API calls are not followed off the API "
        "host. If that address is really CometAPI's, set it as the connection's Base URL"
    )
    if op == "create":  # a create that redirects was refused, not performed: nothing was paid for
        text += " (the create was not performed)"
    return Answer(error=CometAPIError(text, http_status=status, prediction_id=prediction_id))


def transport_failure(
    op: str, exc: BaseException, *, sent: bool, prediction_id: str | None, secret: str | None = None
) -> Answer:
    """A request that got no (whole) answer. A create is retried only when it provably never reached the service."""
    reason = _clean(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, secret)
    if op == "create" and sent:
        return Answer(
            error=PredictionMayExistError(
                f"the create request was sent but its answer was lost ({reason}); a prediction may exist and "
                "was not resubmitted, to avoid paying twice: check your CometAPI dashboard before retrying",
            )
        )
    error = CometAPIError(f"could not reach CometAPI ({reason})", prediction_id=prediction_id, transient=True)
    return Answer(error=error, retryable=True)


class KeyHolder(Protocol):
    """
    What holds the API key for a request (the connection's credentials, whose repr leaves the key out).

    The faces take the holder, never the key: some Airflow releases print a failed task's traceback with every
    frame's locals, and no local of a frame a retry loop raises from may hold the key itself.
    """

    @property
    def api_key(self) -> str: ...


def failure(answer: Answer) -> CometAPIError:
    """The error an answer without data comes to (one is always there; a generic one stands in otherwise)."""
    if answer.error is not None:
        return answer.error
    return CometAPIError("the service gave no usable answer", transient=answer.retryable)


class Retrier:
    """
    The one retry decision of every face: how long to wait before the next try, or none (the error stands).

    :param policy: backoff and limits.
    :param deadline: ``time.monotonic()`` seconds after which no try starts and no wait ends, or ``None``.
    """

    def __init__(self, policy: RetryPolicy, deadline: float | None = None) -> None:
        self.policy = policy
        self.deadline = deadline

    def delay(self, answer: Answer, attempt: int) -> float | None:
        """
        Decide about another try; nothing is changed on the answer or its error.

        :param answer: what try ``attempt + 1`` came to (an answer without data).
        :param attempt: how many tries failed before this one.
        :return: seconds to wait before try ``attempt + 2``, or ``None`` when the answer's error is the outcome
            (it is final, the tries are used up, the service asked for a longer pause than the policy waits, or
            the wait would pass the deadline): raise :func:`failure` of the answer.
        """
        policy = self.policy
        if not answer.retryable or attempt >= policy.max_retries:
            return None
        error = failure(answer)
        if not policy.honours(answer.retry_after):
            log.warning("%s; the service asks to wait %.0fs before trying again: giving up.", error, answer.retry_after)
            return None
        delay = policy.delay(attempt, answer.retry_after)
        if self.deadline is not None and time.monotonic() + delay >= self.deadline:
            return None
        log.warning("%s; retrying in %.1fs (try %d of %d).", error, delay, attempt + 2, policy.max_retries + 1)
        return delay

    def timeouts(self, connect: float, read: float) -> tuple[float, float]:
        """The connect and read timeouts of one try, cut to what is left before the deadline."""
        if self.deadline is None:
            return connect, read
        remaining = max(0.05, self.deadline - time.monotonic())
        return min(connect, remaining), min(read, remaining)

    def try_deadline(self, connect: float, read: float) -> float:
        """The ``time.monotonic()`` by which one try must be over: connect and read, within the deadline."""
        own = time.monotonic() + connect + read
        return own if self.deadline is None else min(own, self.deadline)


# -- sync face (requests) ------------------------------------------------------------------------------------


def _was_sent(exc: BaseException) -> bool:
    """Whether a failed ``requests`` call may have reached the service (anything but a refused connection)."""
    import requests

    if isinstance(exc, requests.ConnectTimeout):
        return False
    if isinstance(exc, requests.ConnectionError):
        text = repr(exc.args[0]) if exc.args else ""
        return not any(s in text for s in ("NewConnectionError", "Connection refused", "NameResolutionError"))
    return True


def iter_sync_body(resp: requests.Response, *, deadline: float, limit: int) -> Any:
    """
    Yield an answer's bytes as they arrive, stopping at ``deadline`` (``time.monotonic()``) or past ``limit`` bytes.

    Each read returns as soon as some bytes are there, so one byte a second cannot hold a read past the deadline.

    :raises DeadlineReachedError: at the deadline.
    :raises BodyTooLargeError: past ``limit`` bytes.
    """
    raw = resp.raw
    read = getattr(raw, "read1", None) or raw.read
    size = 0
    while True:
        if time.monotonic() >= deadline:
            raise DeadlineReachedError()
        chunk = read(CHUNK_SIZE, decode_content=True)
        if not chunk:
            return
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError()
        yield chunk


def sync_request(
    session: requests.Session,
    method: str,
    url: str,
    *,
    op: str,
    prediction_id: str | None,
    keyholder: KeyHolder,
    policy: RetryPolicy,
    connect_timeout: float,
    read_timeout: float,
    deadline: float | None = None,
    body: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """
    One API request from the worker, with retries; the answer's JSON.

    :param deadline: ``time.monotonic()`` seconds bounding every try and every wait, answers included.
    """
    import requests
    import urllib3

    retrier = Retrier(policy, deadline)
    attempt = 0
    while True:
        connect, read = retrier.timeouts(connect_timeout, read_timeout)
        try:
            resp = session.request(
                method, url, json=body, headers=headers, timeout=(connect, read), stream=True, allow_redirects=False
            )
            with resp:
                chunks = [] if 300 <= resp.status_code < 400 else list(_sync_body(resp, retrier, connect, read))
                answer = read_answer(
                    resp.status_code,
                    resp.headers,
                    b"".join(chunks),
                    op=op,
                    prediction_id=prediction_id,
                    secret=keyholder.api_key,
                )
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError, DeadlineReachedError) as exc:
            sent = isinstance(exc, DeadlineReachedError) or _was_sent(exc)
            answer = transport_failure(op, exc, sent=sent, prediction_id=prediction_id, secret=keyholder.api_key)
        except BodyTooLargeError:
            answer = _too_large(op, prediction_id)
        if answer.data is not None:
            return answer.data
        delay = retrier.delay(answer, attempt)
        if delay is None:
            raise failure(answer)
        time.sleep(delay)
        attempt += 1


def _sync_body(resp: requests.Response, retrier: Retrier, connect: float, read: float) -> Any:
    try:
        yield from iter_sync_body(resp, deadline=retrier.try_deadline(connect, read), limit=MAX_API_BODY)
    except DeadlineReachedError:
        raise DeadlineReachedError(f"the answer was still arriving after {connect + read:.0f}s") from None


def _too_large(op: str, prediction_id: str | None) -> Answer:
    text = f"the service's answer is larger than {MAX_API_BODY} bytes; it is not read"
    if op == "create":
        return Answer(error=PredictionMayExistError(text + "; a prediction may exist: check your CometAPI dashboard"))
    return Answer(error=CometAPIError(text, prediction_id=prediction_id))


# -- async face (aiohttp) ------------------------------------------------------------------------------------


def _async_sent(exc: BaseException) -> bool:
    """Whether a failed ``aiohttp`` request may have reached the service (anything but no connection at all)."""
    import aiohttp

    not_connected: tuple[type[BaseException], ...] = (aiohttp.ClientConnectorError,)
    connect_timeout = getattr(aiohttp, "ConnectionTimeoutError", None)  # aiohttp >= 3.10
    if connect_timeout is not None:
        not_connected += (connect_timeout,)
    return not isinstance(exc, not_connected)


async def _read_async_body(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    declared = resp.content_length
    if declared is not None and declared > limit:
        raise BodyTooLargeError()
    if declared is not None:  # aiohttp reads no more than the declared length: one read, as every poll's answer is
        return await resp.read()
    chunks: list[bytes] = []
    size = 0
    while chunk := await resp.content.read(CHUNK_SIZE):
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError()
        chunks.append(chunk)
    return b"".join(chunks)


async def async_request(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    op: str,
    prediction_id: str | None,
    secret_headers: Callable[[], dict[str, str]],
    keyholder: KeyHolder,
    policy: RetryPolicy,
    connect_timeout: float,
    read_timeout: float,
    deadline: float | None = None,
    data: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    on_retry: Callable[[CometAPIError, float], None] | None = None,
) -> dict[str, Any]:
    """
    Async :func:`sync_request`: the same answers, retries and deadline, without blocking the event loop.

    Every try has a total timeout (waiting for a pooled connection included), so no try is unbounded.

    :param secret_headers: builds the authentication headers in the call itself, so no local variable of a frame
        that may end in a traceback holds the key.
    :param on_retry: called with the error and the delay before each retry (a caller pacing many creates slows
        down on a 429 with it).
    """
    import aiohttp

    retrier = Retrier(policy, deadline)
    attempt = 0
    while True:
        connect, read = retrier.timeouts(connect_timeout, read_timeout)
        # ``connect`` bounds the wait for a pooled connection too (a timeout there is "not sent": safe to retry)
        timeout = aiohttp.ClientTimeout(total=connect + read, connect=connect, sock_connect=connect, sock_read=read)
        try:
            async with session.request(
                method,
                url,
                data=data,
                headers={**headers, **secret_headers()} if headers else secret_headers(),
                timeout=timeout,
                allow_redirects=False,
            ) as resp:
                body = b"" if 300 <= resp.status < 400 else await _read_async_body(resp, MAX_API_BODY)
                answer = read_answer(
                    resp.status, resp.headers, body, op=op, prediction_id=prediction_id, secret=keyholder.api_key
                )
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            sent = _async_sent(exc)
            answer = transport_failure(op, exc, sent=sent, prediction_id=prediction_id, secret=keyholder.api_key)
        except BodyTooLargeError:
            answer = _too_large(op, prediction_id)
        if answer.data is not None:
            return answer.data
        delay = retrier.delay(answer, attempt)
        if delay is None:
            raise failure(answer)
        if on_retry is not None and answer.error is not None:
            on_retry(answer.error, delay)
        await asyncio.sleep(delay)
        attempt += 1
