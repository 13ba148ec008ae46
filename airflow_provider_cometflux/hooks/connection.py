"""The ``cometapi`` connection as the hook reads it, and what the hooks of one event loop share.

* :func:`credentials_from`: a connection's base URL, key, optional ``requests_per_minute`` ceiling, the number of
  ``triggerers`` that split it, and ``prices``, checked.
* :func:`read_credentials` (worker) and :func:`shared_credentials` (event loops): read a connection; on an event
  loop, every hook of one connection id shares one lookup for :data:`CREDENTIALS_TTL` seconds, so the thousands of
  triggers of a triggerer read a connection once (each lookup costs milliseconds, and a thousand at once stall the
  loop), and a changed key is picked up by triggers that start later than that.
* :func:`loop_session`: one ``aiohttp`` session per event loop, shared by every hook on it (one bounded keep-alive
  pool), closed by its last user.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from airflow_provider_cometflux._compat import BaseHook, amask_secret_function
from airflow_provider_cometflux.exceptions import CometAPIConnectionConfigError, CometFluxInputError
from airflow_provider_cometflux.get_provider_info import DEFAULT_BASE_URL, PRICES, REQUESTS_PER_MINUTE, TRIGGERERS
from airflow_provider_cometflux.hooks.transport import USER_AGENT

if TYPE_CHECKING:
    import aiohttp

    from airflow_provider_cometflux.cost import Price

CONN_TYPE = "cometapi"
#: Connections the shared async pool keeps open at most (per event loop).
ASYNC_POOL_LIMIT = 256
#: Seconds an event loop reuses a connection's credentials (see the module's docstring).
CREDENTIALS_TTL = 60.0


@dataclass(frozen=True)
class Credentials:
    """What a request needs of the connection. The key is left out of the repr."""

    base_url: str
    api_key: str = field(repr=False)
    #: the ceiling the user set on the connection (extra ``requests_per_minute``), if any
    requests_per_minute: float | None = None
    #: how many triggerers poll the account at once (extra ``triggerers``): each keeps its share of the ceiling
    triggerers: int = 1

    @property
    def polls_per_minute(self) -> float | None:
        """The ceiling of one triggerer's polls: its share of ``requests_per_minute``, or ``None``."""
        return None if self.requests_per_minute is None else self.requests_per_minute / self.triggerers

    #: the account's prices (extra ``prices``, ``{"<model>": <USD per image>}``), over the default table
    prices: Mapping[str, Price] = field(default_factory=dict)


def credentials_from(conn: Any, conn_id: str) -> Credentials:
    """
    The base URL, key and ceiling of a connection; the key is not registered with the masker here.

    :raises CometAPIConnectionConfigError: no key, or a ceiling that is not a number above 0.
    """
    api_key = (conn.password or "").strip()
    if not api_key:
        raise CometAPIConnectionConfigError(
            f"Connection '{conn_id}' has no API key. Put your CometAPI key in the connection's "
            "password field (Admin -> Connections), or set AIRFLOW_CONN_"
            f'{conn_id.upper()}=\'{{"conn_type": "cometapi", "password": "<your key>"}}\'.'
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
    return Credentials(
        base_url=base_url,
        api_key=api_key,
        requests_per_minute=_ceiling_from(conn, conn_id),
        triggerers=_triggerers_from(conn, conn_id),
        prices=_prices_from(conn, conn_id),
    )


def _extra(conn: Any, name: str) -> Any:
    """An extra of the connection, stored plain (3.2+ forms, JSON) or prefixed (older forms)."""
    try:
        extra = conn.extra_dejson or {}
    except Exception:
        extra = {}
    value = None
    if isinstance(extra, Mapping):  # the form stores it plain (3.2+) or prefixed (older forms)
        value = extra.get(name, extra.get(f"extra__{CONN_TYPE}__{name}"))
    return None if value in (None, "") else value


def _triggerers_from(conn: Any, conn_id: str) -> int:
    """The connection's ``triggerers`` extra: an integer from 1, 1 when unset."""
    value = _extra(conn, TRIGGERERS)
    if value is None:
        return 1
    try:
        number = float(value)
        count = int(number) if number.is_integer() else 0
    except (TypeError, ValueError, OverflowError):
        count = 0
    if isinstance(value, bool) or count < 1:
        raise CometAPIConnectionConfigError(
            f"Connection '{conn_id}': triggerers {value!r} is not allowed; expected an integer >= 1 (how many "
            "triggerers run this account's triggers at once), or leave it empty for 1."
        )
    return count


def _prices_from(conn: Any, conn_id: str) -> dict[str, Price]:
    """The connection's ``prices`` extra (a mapping, or its JSON text), checked."""
    from airflow_provider_cometflux.cost import parse_prices

    value = _extra(conn, PRICES)
    if isinstance(value, str) and value.strip():
        with contextlib.suppress(ValueError):  # parse_prices names what is wrong with it
            value = json.loads(value)
    try:
        return parse_prices(value, f"Connection '{conn_id}' extra {PRICES}")
    except CometFluxInputError as exc:
        raise CometAPIConnectionConfigError(str(exc)) from None


def _ceiling_from(conn: Any, conn_id: str) -> float | None:
    """The connection's ``requests_per_minute`` extra: a number above 0, or ``None`` when unset."""
    value = _extra(conn, REQUESTS_PER_MINUTE)
    if value in (None, ""):
        return None
    try:
        ceiling = float(value)
    except (TypeError, ValueError):
        ceiling = 0.0
    if not ceiling > 0 or ceiling != ceiling:
        raise CometAPIConnectionConfigError(
            f"Connection '{conn_id}': requests_per_minute {value!r} is not allowed; expected a "
            "number above 0 (or leave it empty for no ceiling)."
        )
    return ceiling


def missing_connection(conn_id: str, exc: Exception) -> CometAPIConnectionConfigError:
    """The error of a connection id that does not exist, saying how to create it."""
    return CometAPIConnectionConfigError(
        f"Connection '{conn_id}' was not found ({type(exc).__name__}). Create a connection of "
        "type 'cometapi' with your CometAPI key as its password, e.g. "
        f'AIRFLOW_CONN_{conn_id.upper()}=\'{{"conn_type": "cometapi", '
        '"password": "<your key>"}\' or in the UI under Admin -> Connections.'
    )


def read_credentials(conn_id: str, get_connection: Callable[[str], Any]) -> Credentials:
    """Read a connection in the worker and register its key with the masker."""
    try:
        conn = get_connection(conn_id)
    except Exception as exc:
        if "NotFound" in type(exc).__name__:
            raise missing_connection(conn_id, exc) from None
        raise
    credentials = credentials_from(conn, conn_id)
    from airflow.sdk.log import mask_secret

    mask_secret(credentials.api_key)  # in the task's logs and its supervisor's
    return credentials


# Per event loop and connection id: when the lookup started, and the lookup itself, which the concurrent first
# readers all await. A failed lookup is dropped, so the next reader asks again.
_CredentialsLookups = dict[str, tuple[float, "asyncio.Future[Credentials]"]]
_LOOP_CREDENTIALS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _CredentialsLookups] = (
    weakref.WeakKeyDictionary()
)


async def shared_credentials(conn_id: str) -> Credentials:
    """The connection's credentials, through the event loop's shared lookup (see the module's docstring)."""
    loop = asyncio.get_running_loop()
    cached = _LOOP_CREDENTIALS.setdefault(loop, {})
    entry = cached.get(conn_id)
    if entry is None or loop.time() - entry[0] > CREDENTIALS_TTL:
        lookup = asyncio.ensure_future(_alookup(conn_id))
        entry = cached[conn_id] = (loop.time(), lookup)
        lookup.add_done_callback(partial(_forget_failed, cached, conn_id))
    # shielded: one reader cancelled (its trigger ended) does not cancel the lookup the others await
    return await asyncio.shield(entry[1])


def _forget_failed(cached: _CredentialsLookups, conn_id: str, lookup: asyncio.Future[Credentials]) -> None:
    """Drop a failed or cancelled credentials lookup from the loop's cache, so that the next reader asks again."""
    failed = lookup.cancelled() or lookup.exception() is not None
    entry = cached.get(conn_id)
    if failed and entry is not None and entry[1] is lookup:
        del cached[conn_id]


async def _alookup(conn_id: str) -> Credentials:
    """Read the connection without blocking the event loop, and register its key with the masker."""
    from asgiref.sync import sync_to_async

    lookup = sync_to_async(BaseHook.get_connection)  # the blocking lookup, run off the event loop
    try:
        aget = getattr(BaseHook, "aget_connection", None)  # Airflow 3.1+
        try:
            conn = await (aget or lookup)(conn_id)
        except Exception as exc:
            if aget is None or "NotFound" not in type(exc).__name__:
                raise
            # `airflow dags test` answers aget_connection from environment variables only: ask again
            # through the sync lookup, which also sees connections stored in the database
            conn = await lookup(conn_id)
    except Exception as exc:
        if "NotFound" in type(exc).__name__:
            raise missing_connection(conn_id, exc) from None
        raise
    credentials = credentials_from(conn, conn_id)
    await _amask(credentials.api_key)
    return credentials


async def _amask(secret: str) -> None:
    """Register a secret with the masker from async code, without blocking the event loop."""
    await amask_secret_function()(secret)


@dataclass
class LoopSession:
    """An event loop's shared aiohttp session and how many hooks are using it."""

    session: aiohttp.ClientSession
    users: int = 0


# One aiohttp session per event loop, shared by every hook running on that loop.
_ASYNC_SESSIONS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopSession] = weakref.WeakKeyDictionary()


def loop_session(*, joining: bool) -> LoopSession:
    """
    The running loop's shared session, opened on first use.

    :param joining: count the caller as a new user (it calls :func:`release_loop_session` when done).
    """
    import aiohttp

    loop = asyncio.get_running_loop()
    shared = _ASYNC_SESSIONS.get(loop)
    if shared is None or shared.session.closed:
        connector = aiohttp.TCPConnector(limit=ASYNC_POOL_LIMIT, ttl_dns_cache=300, keepalive_timeout=60)
        session = aiohttp.ClientSession(connector=connector, headers={"User-Agent": USER_AGENT})
        shared = _ASYNC_SESSIONS[loop] = LoopSession(session)
    if joining:
        shared.users += 1
    return shared


async def release_loop_session() -> None:
    """One user is done with the loop's shared session; the last one closes it."""
    shared = _ASYNC_SESSIONS.get(asyncio.get_running_loop())
    if shared is None:
        return
    shared.users -= 1
    if shared.users <= 0:
        await close_async_session()


async def close_async_session() -> None:
    """Close this event loop's shared HTTP session now, whoever uses it (it reopens on next use)."""
    shared = _ASYNC_SESSIONS.pop(asyncio.get_running_loop(), None)
    if shared is not None and not shared.session.closed:
        await shared.session.close()
