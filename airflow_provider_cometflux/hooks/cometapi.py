"""The CometAPI hook: the API (create, get, cancel, download) over the one transport of ``transport.py``.

Together with :mod:`~airflow_provider_cometflux.hooks.transport` it is the only code of this provider that speaks
HTTP. Sync calls use one ``requests`` session per hook; async calls (for triggers) use one ``aiohttp`` session per
event loop, shared by every hook on that loop, so a triggerer polling thousands of predictions keeps one bounded
keep-alive connection pool. ``aiohttp`` is imported on first async use, so DAG parsing never pays for it.
"""

from __future__ import annotations

import difflib
import json
import logging
import time
from collections.abc import Callable, Mapping
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any

from airflow_provider_cometflux._compat import BaseHook
from airflow_provider_cometflux.exceptions import (
    CometAPIAuthError,
    CometAPIConnectionConfigError,
    CometAPIError,
    CometFluxInputError,
    PredictionMayExistError,
)
from airflow_provider_cometflux.get_provider_info import DEFAULT_BASE_URL, REQUESTS_PER_MINUTE, TRIGGERERS
from airflow_provider_cometflux.hooks.connection import (
    Credentials,
    close_async_session,
    loop_session,
    read_credentials,
    release_loop_session,
    shared_credentials,
)
from airflow_provider_cometflux.hooks.download import Download, Sink, sync_download
from airflow_provider_cometflux.hooks.transport import USER_AGENT, async_request, sync_request
from airflow_provider_cometflux.models import (
    KNOWN_MODELS,
    check_prediction_id,
    safe_text,
    split_model,
)
from airflow_provider_cometflux.pacing import RetryPolicy

if TYPE_CHECKING:
    import requests

    from airflow_provider_cometflux.cost import Price

__all__ = ["CometAPIHook", "close_async_session"]

log = logging.getLogger(__name__)

API_PREFIX = "/replicate/v1"
#: The largest output copied by default (see ``max_output_bytes``): FLUX images are a few MB at most.
MAX_OUTPUT_BYTES = 64 * 1024 * 1024
#: Seconds one output's copy may take by default (see ``download_timeout``).
DOWNLOAD_TIMEOUT = 300.0

#: How long the connection test may take, retries included.
TEST_CONNECTION_SECONDS = 15.0
#: The largest ``Prefer: wait=N`` Replicate accepts.
MAX_SYNC_WAIT = 60


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
        self._async_credentials: Credentials | None = None
        self._using_loop_session = False

    # -- connection form -------------------------------------------------------------------------------------

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """The optional ceiling and its split, for Airflow 3.0-3.1 (3.2+ read the provider info's ``conn-fields``)."""
        from wtforms import IntegerField
        from wtforms.validators import NumberRange, Optional

        return {
            REQUESTS_PER_MINUTE: IntegerField(
                "Requests per minute", validators=[Optional(), NumberRange(min=1)], description="Optional ceiling"
            ),
            TRIGGERERS: IntegerField(
                "Triggerers",
                validators=[Optional(), NumberRange(min=1)],
                description="Optional: triggerers sharing the ceiling (1 when empty)",
            ),
        }

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Labels and hidden fields for the connection form."""
        return {
            "hidden_fields": ["schema", "login", "port", "extra"],
            "relabeling": {"password": "API key", "host": "Base URL"},
            "placeholders": {"host": DEFAULT_BASE_URL, "password": "sk-..."},
        }

    # -- credentials -----------------------------------------------------------------------------------------

    @property
    def requests_per_minute(self) -> float | None:
        """The request ceiling set on the connection (extra ``requests_per_minute``), or ``None``."""
        return self.credentials.requests_per_minute

    @property
    def prices(self) -> Mapping[str, Price]:
        """The account's prices set on the connection (extra ``prices``), over the default table; may be empty."""
        return self.credentials.prices

    async def arequests_per_minute(self) -> float | None:
        """Async :attr:`requests_per_minute`, read with the shared connection lookup of the event loop."""
        return (await self._aget_credentials()).requests_per_minute

    async def apolls_per_minute(self) -> float | None:
        """One triggerer's poll ceiling: ``requests_per_minute`` split across the connection's ``triggerers``."""
        return (await self._aget_credentials()).polls_per_minute

    @cached_property
    def credentials(self) -> Credentials:
        """The base URL and key, read from the connection once per hook (the key registered with the masker)."""
        return read_credentials(self.cometapi_conn_id, self.get_connection)

    async def _aget_credentials(self) -> Credentials:
        """
        The base URL and key, read once per hook, and shared for ``CREDENTIALS_TTL`` seconds by every hook on the
        same event loop that uses the same connection (see :func:`~.connection.shared_credentials`).
        """
        if self._async_credentials is None:
            self._async_credentials = await shared_credentials(self.cometapi_conn_id)
        return self._async_credentials

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
        model: str | None = None,
    ) -> dict[str, Any]:
        """
        One request from the worker, with retries; ``deadline`` (``time.monotonic()``) bounds all of it.

        An error that ends the call says what to do next (:func:`explain`); ``model`` is the create's model id.
        """
        # The key stays inside ``self.credentials`` (whose repr leaves it out): no local of a frame that may end
        # in a traceback, which some Airflow versions print with its locals, holds it.
        try:
            return sync_request(
                self.session,
                method,
                self._url(self.credentials.base_url, path),
                op=op,
                prediction_id=prediction_id,
                keyholder=self.credentials,
                policy=self.retry_policy,
                connect_timeout=self.connect_timeout,
                read_timeout=read_timeout or self.read_timeout,
                deadline=deadline,
                body=body,
                headers=headers,
            )
        except CometAPIError as exc:
            raise explain(exc, op=op, conn_id=self.cometapi_conn_id, model=model) from exc

    async def _acall(
        self,
        method: str,
        path: str,
        *,
        op: str,
        prediction_id: str | None = None,
        deadline: float | None = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        read_timeout: float | None = None,
        on_retry: Callable[[CometAPIError, float], None] | None = None,
        model: str | None = None,
    ) -> dict[str, Any]:
        """Async :meth:`_call`: the same answers, retries and ``deadline``, without blocking the event loop."""
        creds = await self._aget_credentials()
        shared = loop_session(joining=not self._using_loop_session)
        self._using_loop_session = True
        try:
            return await async_request(
                shared.session,
                method,
                self._url(creds.base_url, path),
                op=op,
                prediction_id=prediction_id,
                secret_headers=partial(_auth_headers, creds),
                keyholder=creds,
                policy=self.retry_policy,
                connect_timeout=self.connect_timeout,
                read_timeout=read_timeout or self.read_timeout,
                deadline=deadline,
                data=data,
                headers=headers,
                on_retry=on_retry,
            )
        except CometAPIError as exc:
            raise explain(exc, op=op, conn_id=self.cometapi_conn_id, model=model) from exc

    async def aclose(self) -> None:
        """
        Release this hook's use of the event loop's shared HTTP session; the last user closes it.

        Triggers call it when they finish, so no connection outlives the work that needed it.
        """
        if not self._using_loop_session:
            return
        self._using_loop_session = False
        await release_loop_session()

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
        path, headers, read_timeout = self._create_request(model, wait, cancel_after)
        prediction = self._call(
            "POST",
            path,
            op="create",
            body={"input": dict(input)},
            headers=headers,
            read_timeout=read_timeout,
            model=model,
        )
        return _created(prediction, model)

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
        Async :meth:`create_prediction`: never blocks the event loop, same safety rules, and a total timeout on
        every try (waiting for a pooled connection included).

        :param on_retry: called with the error and the delay before each retry, e.g. so that a caller pacing
            many creates can slow down on a 429.
        """
        path, headers, read_timeout = self._create_request(model, wait, cancel_after)
        body = json.dumps({"input": dict(input)}).encode()
        prediction = await self._acall(
            "POST",
            path,
            op="create",
            data=body,
            headers=headers,
            read_timeout=read_timeout,
            on_retry=on_retry,
            model=model,
        )
        return _created(prediction, model)

    def _create_request(
        self, model: str, wait: int | None, cancel_after: str | None
    ) -> tuple[str, dict[str, str], float | None]:
        """The path, headers and read timeout of a create."""
        owner, name = split_model(model)
        headers: dict[str, str] = {"Content-Type": "application/json"}
        read_timeout = None
        if wait:
            wait = max(1, min(MAX_SYNC_WAIT, int(wait)))
            headers["Prefer"] = f"wait={wait}"
            read_timeout = self.read_timeout + wait
        if cancel_after:
            headers["Cancel-After"] = cancel_after
        return f"/models/{owner}/{name}/predictions", headers, read_timeout

    def get_prediction(self, prediction_id: str, *, timeout: float | None = None) -> dict[str, Any]:
        """
        Read a prediction from CometAPI's own route (never ``urls.get``, which a CometAPI key cannot use).

        A slow answer is normal (CometAPI's GET can take tens of seconds): reads wait up to ``read_timeout``
        and a read timeout is retried like any transient failure.

        :param prediction_id: the prediction's id.
        :param timeout: give up (raising the last error, as transient) after this many seconds, retries and the
            whole answer included.
        """
        pid = check_prediction_id(prediction_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        answer = self._call("GET", f"/predictions/{pid}", op="get", prediction_id=pid, deadline=deadline)
        return _same_prediction(pid, answer)

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

    def cancel_prediction(self, prediction_id: str) -> dict[str, Any] | None:
        """
        Ask the service to cancel a prediction, best effort.

        :param prediction_id: the prediction's id.
        :return: the prediction, or ``None`` when the service has no cancel route (404/405, logged) or failed.
        """
        pid = check_prediction_id(prediction_id)
        try:
            return self._call(
                "POST", f"/predictions/{pid}/cancel", op="cancel", prediction_id=pid, deadline=_cancel_deadline()
            )
        except CometAPIError as exc:
            _cancel_not_done(pid, exc)
            return None

    async def acancel_prediction(self, prediction_id: str) -> dict[str, Any] | None:
        """
        Async :meth:`cancel_prediction`, best effort.

        :param prediction_id: the prediction's id.
        """
        pid = check_prediction_id(prediction_id)
        try:
            return await self._acall(
                "POST", f"/predictions/{pid}/cancel", op="cancel", prediction_id=pid, deadline=_cancel_deadline()
            )
        except CometAPIError as exc:
            _cancel_not_done(pid, exc)
            return None

    def download_output(
        self,
        url: str,
        sink: Sink,
        *,
        max_bytes: int = MAX_OUTPUT_BYTES,
        timeout: float = DOWNLOAD_TIMEOUT,
        prediction_id: str | None = None,
    ) -> Download:
        """
        Stream one output (a delivery URL) into ``sink``. The API key is never sent: delivery hosts are not CometAPI.

        :param url: an http(s) output URL of a prediction.
        :param sink: receives the bytes: ``sink.begin()`` before each try (a retry starts from nothing), then
            ``sink.write(chunk)`` for each chunk, in order.
        :param max_bytes: the largest output accepted (checked against ``Content-Length`` before anything is
            written, and while streaming).
        :param timeout: seconds the whole copy may take, retries included (a copy cut short of its
            ``Content-Length``, a reset or a 5xx is tried again).
        :param prediction_id: for error messages.
        :raises OutputExpiredError: on 403/404/410, which mean the service has already deleted the output.
        :raises OutputTooLargeError: over ``max_bytes``.
        """
        return sync_download(
            url,
            sink,
            max_bytes=max_bytes,
            timeout=timeout,
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            policy=self.retry_policy,
            prediction_id=prediction_id,
        )

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


#: Seconds a best-effort cancel may take, retries included.
CANCEL_SECONDS = 30.0


def _cancel_deadline() -> float:
    return time.monotonic() + CANCEL_SECONDS


def _created(prediction: dict[str, Any], model: str) -> dict[str, Any]:
    """A create's answer, checked to name a usable prediction id (else it may exist: never resubmitted)."""
    try:
        check_prediction_id(prediction.get("id"))
    except CometFluxInputError:
        raise PredictionMayExistError(
            "the create was accepted but its answer names no usable prediction id "
            f"({safe_text(repr(prediction.get('id')), limit=80)}); a prediction may exist and was not resubmitted: "
            "check your CometAPI dashboard before retrying"
        ) from None
    log.info("Created prediction %s (%s), status %s.", prediction["id"], model, safe_text(prediction.get("status")))
    return prediction


def _cancel_not_done(prediction_id: str, exc: CometAPIError) -> None:
    if exc.http_status in (404, 405):
        log.warning(
            "CometAPI has no cancel route for prediction %s (HTTP %s); not cancelled.", prediction_id, exc.http_status
        )
    else:
        log.warning("Could not cancel prediction %s: %s", prediction_id, exc)


def _auth_headers(creds: Credentials) -> dict[str, str]:
    """The headers of an authenticated async request."""
    return {"Authorization": f"Bearer {creds.api_key}", "Accept": "application/json"}


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
            f"asked for prediction {prediction_id}, the service answered about {safe_text(repr(answered), limit=80)}",
            prediction_id=prediction_id,
        )
    return data


def suggest_model(model: str) -> str | None:
    """The known model id nearest to ``model`` (a typo, another owner), or ``None`` when none is near."""
    near = difflib.get_close_matches(model, KNOWN_MODELS, n=1, cutoff=0.8)
    if near:
        return near[0]
    by_name = {known.split("/", 1)[1]: known for known in KNOWN_MODELS}
    near = difflib.get_close_matches(model.rsplit("/", 1)[-1], list(by_name), n=1, cutoff=0.8)
    return by_name[near[0]] if near else None


def next_step(exc: CometAPIError, *, op: str, conn_id: str, model: str | None = None) -> str | None:
    """
    What to do about an error that ended an API call, or ``None`` when its message already says.

    :param op: ``create``, ``get`` or ``cancel``.
    :param conn_id: the Airflow connection used (named, never its key).
    :param model: the create's model id.
    """
    status = exc.http_status
    conn = safe_text(repr(conn_id), limit=200)
    if isinstance(exc, PredictionMayExistError) or type(exc) not in (CometAPIError, CometAPIAuthError):
        return None  # its own message says what to do
    if isinstance(exc, CometAPIAuthError):
        return (
            f"CometAPI refused the API key of connection {conn}: put a valid CometAPI key in that connection's "
            "password (API key) field, or pass cometapi_conn_id= to use another connection"
        )
    if status == 404 and op == "create" and model:
        shown = safe_text(repr(model), limit=200)
        near = suggest_model(model)
        if near is not None and near != model:
            return f"the model {shown} was not found: did you mean {near!r}? Set model= to it"
        return (
            f"the model {shown} was not found: set model= to a model CometAPI serves (owner/name), e.g. "
            + ", ".join(repr(known) for known in KNOWN_MODELS)
        )
    if status == 404 and op == "get":
        return (
            f"the prediction was not found with connection {conn}: check the prediction id, and that the "
            "connection's key belongs to the account that created it"
        )
    if status == 429:
        return (
            "CometAPI kept refusing requests for too many (HTTP 429): retry later, lower the create pace "
            "(creates_per_minute), or set requests_per_minute on the connection to your account's limit"
        )
    if status == 422 or status == 400:
        return "the service refused the request's input: fix the input it names and run again"
    if status is not None and status >= 500:
        return "the service failed on its side: retry later (the task's retries do), and report it if it persists"
    if status is None and exc.transient:
        return (
            f"check the Base URL (host) of connection {conn} (empty means https://api.cometapi.com) and the "
            "network of the machine that ran it"
        )
    return None


def explain(exc: CometAPIError, *, op: str, conn_id: str, model: str | None = None) -> CometAPIError:
    """
    ``exc`` with what to do next added to its message (:func:`next_step`); every other attribute is kept.

    The service's own text (already escaped) and the prediction id stay in the message.
    """
    step = next_step(exc, op=op, conn_id=conn_id, model=model)
    if step is None:
        return exc
    said = exc.message.rstrip()
    return reworded(exc, f"{said}{'' if said.endswith(('.', '!', '?')) else '.'} {step[0].upper()}{step[1:]}.")


def polls_failed(exc: CometAPIError, errors: int) -> CometAPIError:
    """The last poll's error, saying how many polls in a row failed."""
    return reworded(exc, f"{exc.message} ({errors} polls in a row failed)")


def reworded(exc: CometAPIError, message: str) -> CometAPIError:
    """``exc`` with another message; every other attribute (status, prediction id, code, Retry-After) kept."""
    return type(exc)(
        message,
        http_status=exc.http_status,
        prediction_id=exc.prediction_id,
        error_type=exc.error_type,
        error_code=exc.error_code,
        transient=exc.transient,
        retry_after=exc.retry_after,
    )


def gave_up_text(waited: float, timeout: float | None, last_status: str, last_error: BaseException | None) -> str:
    """The message of a wait that reached its deadline: how long it waited and the last status seen."""
    limit = f" (timeout {timeout:g}s)" if timeout is not None else ""
    text = f"gave up after {waited:.0f}s{limit}; last status '{safe_text(last_status, limit=40)}'"
    if last_error is not None:
        text += f"; the last poll failed: {last_error}"
    text = text.rstrip()
    return text + (" Raise" if text.endswith(".") else "; raise") + " the task's timeout if the model needs longer"
