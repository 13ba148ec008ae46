"""The CometAPI hook: the only module of this provider that speaks HTTP.

Sync calls use one ``requests`` session per hook; async calls (for triggers) use one ``aiohttp`` session per
event loop, shared by every hook on that loop, so a triggerer polling thousands of predictions keeps one
bounded keep-alive connection pool. ``aiohttp`` is imported on first async use, so DAG parsing never pays for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any

from airflow_provider_cometflux.exceptions import (
    CometAPIAuthError,
    CometAPIConnectionConfigError,
    CometAPIError,
    CometFluxInputError,
    OutputExpiredError,
    PredictionMayExistError,
    PredictionTimeoutError,
)
from airflow_provider_cometflux.models import (
    Prediction,
    check_prediction_id,
    note_status,
    split_model,
)
from airflow_provider_cometflux.retries import (
    MAX_CONSECUTIVE_POLL_ERRORS,
    RetryPolicy,
    is_retryable_status,
    parse_retry_after,
    poll_delays,
)

try:
    from airflow.sdk import BaseHook
except ImportError:  # Airflow 3.0
    from airflow.hooks.base import BaseHook  # type: ignore[no-redef,attr-defined]

if TYPE_CHECKING:
    import aiohttp
    import requests

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.cometapi.com"
API_PREFIX = "/replicate/v1"
USER_AGENT = "airflow-provider-cometflux"

#: How long the connection test may take, retries included.
TEST_CONNECTION_SECONDS = 15.0
#: The largest ``Prefer: wait=N`` Replicate accepts.
MAX_SYNC_WAIT = 60


@dataclass(frozen=True)
class _Credentials:
    base_url: str
    api_key: str = field(repr=False)
    #: the ceiling the user set on the connection (extra ``requests_per_minute``), if any
    requests_per_minute: float | None = None


@dataclass(frozen=True)
class _Answer:
    """What one try of a request came to: the parsed body, or an error and whether to try again."""

    data: dict[str, Any] | None = None
    error: CometAPIError | None = None
    retryable: bool = False
    retry_after: float | None = None


def _redact(text: str, secret: str | None) -> str:
    """Blank out the API key wherever a service's message (or a transport error) repeats it."""
    return text.replace(secret, "***") if secret else text


def _service_error(
    status: int,
    body: bytes,
    content_type: str,
    prediction_id: str | None,
    retry_after: float | None = None,
    *,
    secret: str | None = None,
) -> _Answer:
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
    error = cls(
        _redact(str(message), secret),
        http_status=status,
        prediction_id=prediction_id,
        error_type=str(error_type) if error_type else None,
        error_code=str(error_code) if error_code else None,
    )
    return _Answer(error=error, retryable=is_retryable_status(status, error.error_code), retry_after=retry_after)


def _read_answer(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    op: str,
    prediction_id: str | None,
    secret: str | None = None,
) -> _Answer:
    """Decide what an HTTP answer means for a request of kind ``op`` (``create``, ``get`` or ``cancel``)."""
    content_type = headers.get("Content-Type", "")
    if status >= 400:
        retry_after = parse_retry_after(headers.get("Retry-After"))
        return _service_error(status, body, content_type, prediction_id, retry_after, secret=secret)
    try:
        data = json.loads(body) if body else None
    except ValueError:
        data = None
    if isinstance(data, dict):
        return _Answer(data=data)
    if op == "cancel":  # the service took the cancel; it need not say more
        return _Answer(data={})
    snippet = _redact(body[:120].decode("utf-8", "replace"), secret)
    if op == "create":  # accepted, but we cannot tell which prediction: never resubmit blindly
        error: CometAPIError = PredictionMayExistError(
            f"the create answered HTTP {status} with a body that is not a prediction ({snippet!r}); "
            "a prediction may have been created: check your CometAPI dashboard before retrying",
            http_status=status,
        )
        return _Answer(error=error)
    error = CometAPIError(
        f"the service answered HTTP {status} with a body that is not JSON: {snippet!r}",
        http_status=status,
        prediction_id=prediction_id,
    )
    return _Answer(error=error, retryable=True)


def _transport_failure(
    op: str, exc: BaseException, *, sent: bool, prediction_id: str | None, secret: str | None = None
) -> _Answer:
    """
    A request that got no answer. A create is retried only when it provably never reached the service.
    """
    reason = _redact(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, secret)
    if op == "create" and sent:
        return _Answer(
            error=PredictionMayExistError(
                f"the create request was sent but its answer was lost ({reason}); a prediction may exist and "
                "was not resubmitted, to avoid paying twice: check your CometAPI dashboard before retrying",
            )
        )
    error = CometAPIError(f"could not reach CometAPI ({reason})", prediction_id=prediction_id)
    return _Answer(error=error, retryable=True)


#: Connections the shared async pool keeps open at most (per event loop).
ASYNC_POOL_LIMIT = 256


@dataclass
class _LoopSession:
    """An event loop's shared aiohttp session and how many hooks are using it."""

    session: aiohttp.ClientSession
    users: int = 0


# One aiohttp session per event loop, shared by every hook running on that loop.
_ASYNC_SESSIONS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopSession] = weakref.WeakKeyDictionary()


def _loop_session() -> _LoopSession:
    import aiohttp

    loop = asyncio.get_running_loop()
    shared = _ASYNC_SESSIONS.get(loop)
    if shared is None or shared.session.closed:
        connector = aiohttp.TCPConnector(limit=ASYNC_POOL_LIMIT, ttl_dns_cache=300, keepalive_timeout=60)
        session = aiohttp.ClientSession(connector=connector, headers={"User-Agent": USER_AGENT})
        shared = _ASYNC_SESSIONS[loop] = _LoopSession(session)
    return shared


#: Seconds an event loop reuses a connection's credentials: the thousands of triggers of one triggerer then share
#: one connection lookup (each costs milliseconds, and a thousand at once stall the loop), and a changed key is
#: picked up by triggers that start later than this.
CREDENTIALS_TTL = 60.0

# Per event loop and connection id: when the lookup started, and the lookup itself, which the concurrent first
# readers all await. A failed lookup is dropped, so the next reader asks again.
_CredentialsLookups = dict[str, tuple[float, "asyncio.Future[_Credentials]"]]
_LOOP_CREDENTIALS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _CredentialsLookups] = (
    weakref.WeakKeyDictionary()
)


def _forget_failed(cached: _CredentialsLookups, conn_id: str, lookup: asyncio.Future[_Credentials]) -> None:
    """Drop a failed or cancelled credentials lookup from the loop's cache, so that the next reader asks again."""
    failed = lookup.cancelled() or lookup.exception() is not None
    entry = cached.get(conn_id)
    if failed and entry is not None and entry[1] is lookup:
        del cached[conn_id]


async def close_async_session() -> None:
    """Close this event loop's shared HTTP session now, whoever uses it (it reopens on next use)."""
    shared = _ASYNC_SESSIONS.pop(asyncio.get_running_loop(), None)
    if shared is not None and not shared.session.closed:
        await shared.session.close()


class CometAPIHook(BaseHook):
    """
    Calls CometAPI's Replicate-format prediction API.

    The connection's password is the CometAPI key; its host, if set, replaces ``https://api.cometapi.com``.

    :param cometapi_conn_id: the Airflow connection to use (type ``cometapi``).
    :param connect_timeout: seconds to wait for a TCP/TLS connection.
    :param read_timeout: seconds to wait for an answer; CometAPI's GET can take tens of seconds, which is normal.
    :param retry_policy: how transient failures are retried (both the sync and the async calls use it).
    """

    conn_name_attr = "cometapi_conn_id"
    default_conn_name = "cometapi_default"
    conn_type = "cometapi"
    hook_name = "CometAPI"

    def __init__(
        self,
        cometapi_conn_id: str = default_conn_name,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 120.0,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        super().__init__()
        self.cometapi_conn_id = cometapi_conn_id
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.retry_policy = retry_policy or RetryPolicy()
        self._async_credentials: _Credentials | None = None
        self._using_loop_session = False

    # -- connection form -------------------------------------------------------------------------------------

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Labels and hidden fields for the connection form."""
        return {
            "hidden_fields": ["schema", "login", "port", "extra"],
            "relabeling": {"password": "API key", "host": "Base URL"},
            "placeholders": {"host": DEFAULT_BASE_URL, "password": "sk-..."},
        }

    # -- credentials -----------------------------------------------------------------------------------------

    def _credentials_from(self, conn: Any) -> _Credentials:
        """The base URL and key of a connection; the key is not registered with the masker here."""
        api_key = (conn.password or "").strip()
        if not api_key:
            raise CometAPIConnectionConfigError(
                f"Connection '{self.cometapi_conn_id}' has no API key. Put your CometAPI key in the connection's "
                "password field (Admin -> Connections), or set AIRFLOW_CONN_"
                f'{self.cometapi_conn_id.upper()}=\'{{"conn_type": "cometapi", "password": "<your key>"}}\'.'
            )
        host = (conn.host or "").strip().rstrip("/")
        if not host:
            base_url = DEFAULT_BASE_URL
        elif "://" in host:
            base_url = host
        else:
            base_url = f"{conn.schema or 'https'}://{host}"
        if conn.port and "://" not in host:
            base_url = f"{base_url}:{conn.port}"
        return _Credentials(base_url=base_url, api_key=api_key, requests_per_minute=self._ceiling_from(conn))

    def _ceiling_from(self, conn: Any) -> float | None:
        """The connection's ``requests_per_minute`` extra: a number above 0, or ``None`` when unset."""
        try:
            extra = conn.extra_dejson or {}
        except Exception:
            extra = {}
        value = extra.get("requests_per_minute") if isinstance(extra, Mapping) else None
        if value in (None, ""):
            return None
        try:
            ceiling = float(value)
        except (TypeError, ValueError):
            ceiling = 0.0
        if not ceiling > 0 or ceiling != ceiling:
            raise CometAPIConnectionConfigError(
                f"Connection '{self.cometapi_conn_id}': requests_per_minute {value!r} is not allowed; expected a "
                "number above 0 (or leave it empty for no ceiling)."
            )
        return ceiling

    @property
    def requests_per_minute(self) -> float | None:
        """The request ceiling set on the connection (extra ``requests_per_minute``), or ``None``."""
        return self.credentials.requests_per_minute

    async def arequests_per_minute(self) -> float | None:
        """Async :attr:`requests_per_minute`, read with the shared connection lookup of the event loop."""
        return (await self._aget_credentials()).requests_per_minute

    def _missing_connection(self, exc: Exception) -> CometAPIConnectionConfigError:
        return CometAPIConnectionConfigError(
            f"Connection '{self.cometapi_conn_id}' was not found ({type(exc).__name__}). Create a connection of "
            "type 'cometapi' with your CometAPI key as its password, e.g. "
            f'AIRFLOW_CONN_{self.cometapi_conn_id.upper()}=\'{{"conn_type": "cometapi", '
            '"password": "<your key>"}\' or in the UI under Admin -> Connections.'
        )

    @cached_property
    def credentials(self) -> _Credentials:
        """The base URL and key, read from the connection once per hook."""
        try:
            conn = self.get_connection(self.cometapi_conn_id)
        except Exception as exc:
            if "NotFound" in type(exc).__name__:
                raise self._missing_connection(exc) from None
            raise
        credentials = self._credentials_from(conn)
        from airflow.sdk.log import mask_secret

        mask_secret(credentials.api_key)  # in the task's logs and its supervisor's
        return credentials

    async def _aget_credentials(self) -> _Credentials:
        """
        The base URL and key, read from the connection once per hook, and shared for :data:`CREDENTIALS_TTL`
        seconds by every hook on the same event loop that uses the same connection.
        """
        if self._async_credentials is None:
            loop = asyncio.get_running_loop()
            cached = _LOOP_CREDENTIALS.setdefault(loop, {})
            entry = cached.get(self.cometapi_conn_id)
            if entry is None or loop.time() - entry[0] > CREDENTIALS_TTL:
                lookup = asyncio.ensure_future(self._alookup_credentials())
                entry = cached[self.cometapi_conn_id] = (loop.time(), lookup)
                lookup.add_done_callback(partial(_forget_failed, cached, self.cometapi_conn_id))
            # shielded: one reader cancelled (its trigger ended) does not cancel the lookup the others await
            self._async_credentials = await asyncio.shield(entry[1])
        return self._async_credentials

    async def _alookup_credentials(self) -> _Credentials:
        """Read the connection without blocking the event loop, and register its key with the masker."""
        from asgiref.sync import sync_to_async

        lookup = sync_to_async(BaseHook.get_connection)  # the blocking lookup, run off the event loop
        try:
            aget = getattr(BaseHook, "aget_connection", None)  # Airflow 3.1+
            try:
                conn = await (aget or lookup)(self.cometapi_conn_id)
            except Exception as exc:
                if aget is None or "NotFound" not in type(exc).__name__:
                    raise
                # `airflow dags test` answers aget_connection from environment variables only: ask again
                # through the sync lookup, which also sees connections stored in the database
                conn = await lookup(self.cometapi_conn_id)
        except Exception as exc:
            if "NotFound" in type(exc).__name__:
                raise self._missing_connection(exc) from None
            raise
        credentials = self._credentials_from(conn)
        await _amask(credentials.api_key)
        return credentials

    # -- sync transport --------------------------------------------------------------------------------------

    @cached_property
    def session(self) -> requests.Session:
        """One ``requests`` session per hook: keep-alive, with the key in its headers."""
        import requests

        session = requests.Session()
        session.headers.update(
            {
                "Authorization": f"Bearer {self.credentials.api_key}",
                "Accept": "application/json",
                "User-Agent": USER_AGENT,
            }
        )
        return session

    def _url(self, base_url: str, path: str) -> str:
        return f"{base_url}{API_PREFIX}{path}"

    def _call(
        self,
        method: str,
        path: str,
        *,
        op: str,
        prediction_id: str | None = None,
        body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        read_timeout: float | None = None,
        deadline: float | None = None,
    ) -> dict[str, Any]:
        """
        One request, with retries. ``deadline`` (``time.monotonic()`` seconds) bounds every try and every wait.
        """
        import requests

        # The key stays inside ``creds`` (whose repr leaves it out): no local of a frame that may end in a
        # traceback, which some Airflow versions print with its locals, holds it.
        creds = self.credentials
        url = self._url(creds.base_url, path)
        for attempt in range(self.retry_policy.max_retries + 1):
            connect, read = _bounded(deadline, self.connect_timeout, read_timeout or self.read_timeout)
            try:
                resp = self.session.request(method, url, json=body, headers=headers, timeout=(connect, read))
            except requests.RequestException as exc:
                sent = _was_sent(exc)
                answer = _transport_failure(op, exc, sent=sent, prediction_id=prediction_id, secret=creds.api_key)
            else:
                answer = _read_answer(
                    resp.status_code,
                    resp.headers,
                    resp.content,
                    op=op,
                    prediction_id=prediction_id,
                    secret=creds.api_key,
                )
            if answer.data is not None:
                return answer.data
            time.sleep(self._retry_delay(answer, attempt, deadline))
        raise AssertionError("unreachable")

    def _retry_delay(self, answer: _Answer, attempt: int, deadline: float | None = None) -> float:
        """
        The wait before the next try, or raise the answer's error when it is final, the tries are used up, the
        service asked for a longer pause than the policy waits, or the wait would pass ``deadline``.
        """
        assert answer.error is not None
        error = answer.error
        error.transient = answer.retryable
        policy = self.retry_policy
        if not answer.retryable or attempt >= policy.max_retries:
            raise error
        if not policy.honours(answer.retry_after):
            log.warning("%s; the service asks to wait %.0fs before trying again: giving up.", error, answer.retry_after)
            raise error
        delay = policy.delay(attempt, answer.retry_after)
        if deadline is not None and time.monotonic() + delay >= deadline:
            raise error
        tries = policy.max_retries + 1
        log.warning("%s; retrying in %.1fs (try %d of %d).", error, delay, attempt + 2, tries)
        return delay

    # -- async transport -------------------------------------------------------------------------------------

    async def _acall(
        self, method: str, path: str, *, op: str, prediction_id: str | None = None, deadline: float | None = None
    ) -> dict[str, Any]:
        """Async :meth:`_call`: the same answers, retries and ``deadline``, without blocking the event loop."""
        import aiohttp

        creds = await self._aget_credentials()
        shared = _loop_session()
        if not self._using_loop_session:
            shared.users += 1
            self._using_loop_session = True
        session = shared.session
        url = self._url(creds.base_url, path)
        for attempt in range(self.retry_policy.max_retries + 1):
            connect, read = _bounded(deadline, self.connect_timeout, self.read_timeout)
            # ``total`` bounds the wait for a free pooled connection too; a slow answer only holds its own request
            total = None if deadline is None else connect + read
            timeout = aiohttp.ClientTimeout(total=total, sock_connect=connect, sock_read=read)
            try:
                # the headers are built in the call, not kept in a local (see ``_call``)
                async with session.request(method, url, headers=_auth_headers(creds), timeout=timeout) as resp:
                    body = await resp.read()
                    answer = _read_answer(
                        resp.status, resp.headers, body, op=op, prediction_id=prediction_id, secret=creds.api_key
                    )
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                sent = not isinstance(exc, aiohttp.ClientConnectorError)
                answer = _transport_failure(op, exc, sent=sent, prediction_id=prediction_id, secret=creds.api_key)
            if answer.data is not None:
                return answer.data
            await asyncio.sleep(self._retry_delay(answer, attempt, deadline))
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        """
        Release this hook's use of the event loop's shared HTTP session; the last user closes it.

        Triggers call it when they finish, so no connection outlives the work that needed it.
        """
        if not self._using_loop_session:
            return
        self._using_loop_session = False
        shared = _ASYNC_SESSIONS.get(asyncio.get_running_loop())
        if shared is None:
            return
        shared.users -= 1
        if shared.users <= 0:
            await close_async_session()

    # -- the API ---------------------------------------------------------------------------------------------

    def create_prediction(
        self, model: str, input: Mapping[str, Any], *, wait: int | None = None, cancel_after: str | None = None
    ) -> dict[str, Any]:
        """
        Create a prediction: ``POST /replicate/v1/models/{owner}/{name}/predictions`` with ``{"input": input}``.

        A create is retried only when the service provably did not create the prediction (connection refused,
        429 or another retryable error status); when the answer is lost after sending, it raises
        :class:`~airflow_provider_cometflux.exceptions.PredictionMayExistError` instead of paying twice.

        :param model: ``owner/name``, e.g. ``black-forest-labs/flux-schnell``.
        :param input: the model inputs (``prompt`` and the rest).
        :param wait: if set (1..60), send ``Prefer: wait=N`` so the service may answer with a finished prediction;
            harmless when the service ignores it.
        :param cancel_after: if set (e.g. ``"5m"``), send ``Cancel-After`` so the service gives up by itself.
        :return: the prediction JSON.
        """
        owner, name = split_model(model)
        headers: dict[str, str] = {"Content-Type": "application/json"}
        read_timeout = None
        if wait:
            wait = max(1, min(MAX_SYNC_WAIT, int(wait)))
            headers["Prefer"] = f"wait={wait}"
            read_timeout = self.read_timeout + wait
        if cancel_after:
            headers["Cancel-After"] = cancel_after
        prediction = self._call(
            "POST",
            f"/models/{owner}/{name}/predictions",
            op="create",
            body={"input": dict(input)},
            headers=headers,
            read_timeout=read_timeout,
        )
        try:
            check_prediction_id(prediction.get("id"))
        except CometFluxInputError:
            raise PredictionMayExistError(
                f"the create was accepted but its answer names no usable prediction id ({prediction.get('id')!r}); "
                "a prediction may exist and was not resubmitted: check your CometAPI dashboard before retrying"
            ) from None
        log.info("Created prediction %s (%s), status %s.", prediction.get("id"), model, prediction.get("status"))
        return prediction

    def get_prediction(self, prediction_id: str, *, timeout: float | None = None) -> dict[str, Any]:
        """
        Read a prediction from CometAPI's own route (never ``urls.get``, which a CometAPI key cannot use).

        A slow answer is normal (CometAPI's GET can take tens of seconds): reads wait up to ``read_timeout``
        and a read timeout is retried like any transient failure.

        :param prediction_id: the prediction's id.
        :param timeout: give up (raising the last error, as transient) after this many seconds, retries included.
        """
        pid = check_prediction_id(prediction_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        return _same_prediction(
            pid, self._call("GET", f"/predictions/{pid}", op="get", prediction_id=pid, deadline=deadline)
        )

    def cancel_prediction(self, prediction_id: str) -> dict[str, Any] | None:
        """
        Ask the service to cancel a prediction, best effort.

        :param prediction_id: the prediction's id.
        :return: the prediction, or ``None`` when the service has no cancel route (404/405, logged) or failed.
        """
        pid = check_prediction_id(prediction_id)
        try:
            return self._call("POST", f"/predictions/{pid}/cancel", op="cancel", prediction_id=pid)
        except CometAPIError as exc:
            _cancel_not_done(pid, exc)
            return None

    async def aget_prediction(self, prediction_id: str, *, timeout: float | None = None) -> dict[str, Any]:
        """
        Async :meth:`get_prediction`, for triggers: never blocks the event loop.

        :param prediction_id: the prediction's id.
        :param timeout: give up (raising the last error, as transient) after this many seconds, retries included.
        """
        pid = check_prediction_id(prediction_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        answer = await self._acall("GET", f"/predictions/{pid}", op="get", prediction_id=pid, deadline=deadline)
        return _same_prediction(pid, answer)

    async def acancel_prediction(self, prediction_id: str) -> dict[str, Any] | None:
        """
        Async :meth:`cancel_prediction`, best effort.

        :param prediction_id: the prediction's id.
        """
        pid = check_prediction_id(prediction_id)
        try:
            return await self._acall("POST", f"/predictions/{pid}/cancel", op="cancel", prediction_id=pid)
        except CometAPIError as exc:
            _cancel_not_done(pid, exc)
            return None

    def wait_for_prediction(
        self,
        prediction_id: str,
        *,
        poll_interval: float = 2.0,
        timeout: float | None = 600.0,
        max_consecutive_errors: int = MAX_CONSECUTIVE_POLL_ERRORS,
    ) -> dict[str, Any]:
        """
        Poll until the prediction is terminal (``succeeded``, ``failed``, ``canceled`` or ``aborted``).

        Polls come quickly at first, then every ``poll_interval`` seconds. An unknown status counts as in flight.
        ``timeout`` bounds the whole wait, slow answers and retries included. Like the trigger, it tolerates
        ``max_consecutive_errors - 1`` polls in a row failing transiently (each after its own retries).

        :param prediction_id: the prediction's id.
        :param poll_interval: the steady delay between polls, in seconds.
        :param timeout: give up after this many seconds (``None``: never).
        :param max_consecutive_errors: this many polls failing in a row raise the last poll's error.
        :return: the terminal prediction JSON (whatever its status: the caller decides what failure means).
        :raises PredictionTimeoutError: at the deadline, saying how long it waited and the last status seen.
        """
        pid = check_prediction_id(prediction_id)
        started = time.monotonic()
        deadline = None if timeout is None else started + timeout
        delays = poll_delays(poll_interval)
        errors = 0
        last_status = "unknown"
        last_error: CometAPIError | None = None
        while True:
            try:
                raw = self._call("GET", f"/predictions/{pid}", op="get", prediction_id=pid, deadline=deadline)
            except CometAPIError as exc:
                if not exc.transient:
                    raise
                errors, last_error = errors + 1, exc
                if errors >= max_consecutive_errors and (deadline is None or time.monotonic() < deadline):
                    raise _polls_failed(exc, errors) from None
                log.warning("Polling prediction %s failed (%d in a row): %s", pid, errors, exc)
            else:
                prediction = Prediction(_same_prediction(pid, raw))
                if prediction.is_terminal:
                    return dict(prediction.raw)
                errors, last_error = 0, None
                last_status = prediction.status
                note_status(prediction)
            delay = next(delays)
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining > 0:
                    time.sleep(min(delay, remaining))
                if time.monotonic() >= deadline:
                    raise PredictionTimeoutError(
                        _gave_up(time.monotonic() - started, timeout, last_status, last_error), prediction_id=pid
                    )
            else:
                time.sleep(delay)

    @contextlib.contextmanager
    def open_output(self, url: str, *, prediction_id: str | None = None) -> Iterator[requests.Response]:
        """
        Open a delivery URL for streaming. The API key is never sent to it: delivery hosts are not CometAPI.

        :param url: an http(s) output URL of a prediction.
        :param prediction_id: for error messages.
        :raises OutputExpiredError: on 403/404/410, which mean the service has already deleted the output.
        """
        import requests

        with requests.get(
            url, stream=True, timeout=(self.connect_timeout, self.read_timeout), headers={"User-Agent": USER_AGENT}
        ) as resp:
            if resp.status_code in (403, 404, 410):
                raise OutputExpiredError(
                    f"the delivery URL {url} is gone (expired: the service deletes outputs after about an hour); "
                    "set output_path so the provider copies images into your own storage as soon as they are ready",
                    http_status=resp.status_code,
                    prediction_id=prediction_id,
                )
            if resp.status_code >= 400:
                answer = _service_error(
                    resp.status_code, resp.content[:1000], resp.headers.get("Content-Type", ""), prediction_id
                )
                assert answer.error is not None
                answer.error.transient = answer.retryable
                raise answer.error
            yield resp

    def test_connection(self) -> tuple[bool, str]:
        """
        One cheap authenticated call: read a prediction that does not exist.

        A 404 means the key was accepted; 401/403 that it was refused.
        """
        try:
            deadline = time.monotonic() + TEST_CONNECTION_SECONDS
            self._call("GET", "/predictions/connection-test", op="get", deadline=deadline)
        except CometAPIAuthError as exc:
            return False, f"CometAPI refused the API key (HTTP {exc.http_status}): {exc.message}"
        except CometAPIConnectionConfigError as exc:
            return False, str(exc)
        except CometAPIError as exc:
            if exc.http_status == 404:
                return True, f"Connected to {self.credentials.base_url}: the API key was accepted."
            if exc.http_status is None:
                return False, f"Could not reach {self.credentials.base_url}: {exc.message}"
            return False, str(exc)
        return True, f"Connected to {self.credentials.base_url}: the API key was accepted."

    async def acreate_prediction(
        self,
        model: str,
        input: Mapping[str, Any],
        *,
        wait: int | None = None,
        cancel_after: str | None = None,
        on_retry: Callable[[CometAPIError, float], None] | None = None,
    ) -> dict[str, Any]:
        """
        Async :meth:`create_prediction`, for triggers: never blocks the event loop, same safety rules.

        A create is retried only when the service provably did not create the prediction (connection refused or
        not established, 429 or another retryable error status); when the answer is lost after sending, it raises
        :class:`~airflow_provider_cometflux.exceptions.PredictionMayExistError` instead of paying twice.

        :param model: ``owner/name``, e.g. ``black-forest-labs/flux-schnell``.
        :param input: the model inputs (``prompt`` and the rest).
        :param wait: if set (1..60), send ``Prefer: wait=N``; harmless when the service ignores it.
        :param cancel_after: if set (e.g. ``"5m"``), send ``Cancel-After``.
        :param on_retry: called with the error and the delay before each retry, e.g. so that a caller pacing
            many creates can slow down on a 429.
        :return: the prediction JSON.
        """
        import aiohttp

        owner, name = split_model(model)
        read_timeout = self.read_timeout
        headers: dict[str, str] = {"Content-Type": "application/json"}
        if wait:
            wait = max(1, min(MAX_SYNC_WAIT, int(wait)))
            headers["Prefer"] = f"wait={wait}"
            read_timeout += wait
        if cancel_after:
            headers["Cancel-After"] = cancel_after
        creds = await self._aget_credentials()
        shared = _loop_session()
        if not self._using_loop_session:
            shared.users += 1
            self._using_loop_session = True
        url = self._url(creds.base_url, f"/models/{owner}/{name}/predictions")
        body = json.dumps({"input": dict(input)}).encode()
        timeout = aiohttp.ClientTimeout(sock_connect=self.connect_timeout, sock_read=read_timeout)
        # no local variable holds the key: tracebacks printed with their locals must not show it
        for attempt in range(self.retry_policy.max_retries + 1):
            try:
                async with shared.session.post(
                    url, data=body, headers={**headers, **_auth_headers(creds)}, timeout=timeout
                ) as resp:
                    raw = await resp.read()
                    answer = _read_answer(
                        resp.status, resp.headers, raw, op="create", prediction_id=None, secret=creds.api_key
                    )
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                sent = self._async_create_sent(exc)
                answer = _transport_failure("create", exc, sent=sent, prediction_id=None, secret=creds.api_key)
            if answer.data is not None:
                try:
                    check_prediction_id(answer.data.get("id"))
                except CometFluxInputError:
                    raise PredictionMayExistError(
                        "the create was accepted but its answer names no usable prediction id "
                        f"({answer.data.get('id')!r}); a prediction may exist and was not resubmitted: check your "
                        "CometAPI dashboard before retrying"
                    ) from None
                log.debug("Created prediction %s (%s).", answer.data.get("id"), model)
                return answer.data
            delay = self._retry_delay(answer, attempt)
            if on_retry is not None and answer.error is not None:
                on_retry(answer.error, delay)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    @staticmethod
    def _async_create_sent(exc: BaseException) -> bool:
        """Whether a failed ``aiohttp`` create may have reached the service (anything but no connection at all)."""
        import aiohttp

        not_connected: tuple[type[BaseException], ...] = (aiohttp.ClientConnectorError,)
        connect_timeout = getattr(aiohttp, "ConnectionTimeoutError", None)  # aiohttp >= 3.10
        if connect_timeout is not None:
            not_connected += (connect_timeout,)
        return not isinstance(exc, not_connected)


def _was_sent(exc: BaseException) -> bool:
    """Whether a failed ``requests`` call may have reached the service (anything but a refused connection)."""
    import requests

    if isinstance(exc, requests.ConnectTimeout):
        return False
    if isinstance(exc, requests.ConnectionError):
        text = repr(exc.args[0]) if exc.args else ""
        return not any(s in text for s in ("NewConnectionError", "Connection refused", "NameResolutionError"))
    return True


def _cancel_not_done(prediction_id: str, exc: CometAPIError) -> None:
    if exc.http_status in (404, 405):
        log.warning(
            "CometAPI has no cancel route for prediction %s (HTTP %s); not cancelled.", prediction_id, exc.http_status
        )
    else:
        log.warning("Could not cancel prediction %s: %s", prediction_id, exc)


def _auth_headers(creds: _Credentials) -> dict[str, str]:
    """The headers of an authenticated async request."""
    return {"Authorization": f"Bearer {creds.api_key}", "Accept": "application/json"}


def _bounded(deadline: float | None, connect: float, read: float) -> tuple[float, float]:
    """The connect and read timeouts of one try, cut to what is left before ``deadline``."""
    if deadline is None:
        return connect, read
    remaining = max(0.05, deadline - time.monotonic())
    return min(connect, remaining), min(read, remaining)


def _same_prediction(prediction_id: str, data: dict[str, Any]) -> dict[str, Any]:
    """
    Check that an answer is the prediction asked for: its id names files and events downstream.

    An answer without an id gets the one asked for; one naming another prediction is refused.
    """
    answered = data.get("id")
    if answered in (None, ""):
        return {**data, "id": prediction_id}
    if answered != prediction_id:
        raise CometAPIError(
            f"asked for prediction {prediction_id}, the service answered about {str(answered)[:80]!r}",
            prediction_id=prediction_id,
        )
    return data


def _polls_failed(exc: CometAPIError, errors: int) -> CometAPIError:
    """The last poll's error, saying how many polls in a row failed."""
    return type(exc)(
        f"{exc.message} ({errors} polls in a row failed)",
        http_status=exc.http_status,
        prediction_id=exc.prediction_id,
        error_type=exc.error_type,
        error_code=exc.error_code,
        transient=exc.transient,
    )


def _gave_up(waited: float, timeout: float | None, last_status: str, last_error: BaseException | None) -> str:
    """The message of a wait that reached its deadline: how long it waited and the last status seen."""
    limit = f" (timeout {timeout:g}s)" if timeout is not None else ""
    text = f"gave up after {waited:.0f}s{limit}; last status '{last_status}'"
    if last_error is not None:
        text += f"; the last poll failed: {last_error}"
    return text


async def _amask(secret: str) -> None:
    """Register a secret with the masker from async code, without blocking the event loop."""
    try:
        from airflow.sdk.log import amask_secret
    except ImportError:  # older Airflow: its mask_secret waits for the triggerer's loop, so call it off the loop
        from airflow.sdk.log import mask_secret
        from asgiref.sync import sync_to_async

        await sync_to_async(mask_secret)(secret)
        return
    await amask_secret(secret)
