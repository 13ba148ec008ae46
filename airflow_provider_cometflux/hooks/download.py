"""Downloads of outputs (delivery URLs): streamed into a sink, bounded in size and time, retried from the start.

The delivery hosts are not CometAPI: no key is ever sent to them, and a redirect (to a CDN) is followed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from airflow_provider_cometflux.exceptions import (
    BodyTooLargeError,
    CometAPIError,
    DeadlineReachedError,
    IncompleteDownloadError,
    OutputExpiredError,
    OutputTooLargeError,
)
from airflow_provider_cometflux.hooks.transport import (
    USER_AGENT,
    Answer,
    Retrier,
    iter_sync_body,
)
from airflow_provider_cometflux.models import safe_text
from airflow_provider_cometflux.pacing import RetryPolicy, is_retryable_status, parse_retry_after


@dataclass(frozen=True)
class Download:
    """What :func:`sync_download` delivered into its sink."""

    content_type: str
    bytes: int


class Sink(Protocol):
    """Where a download's bytes go; ``begin`` is called before every try, so a retry starts from nothing."""

    def begin(self) -> None: ...

    def write(self, chunk: bytes) -> None: ...


def sync_download(
    url: str,
    sink: Sink,
    *,
    max_bytes: int,
    timeout: float,
    connect_timeout: float,
    read_timeout: float,
    policy: RetryPolicy,
    prediction_id: str | None,
) -> Download:
    """
    Stream a delivery URL into ``sink``, with retries: no key sent, bounded in size and time.

    A download cut short of its ``Content-Length``, a connection reset and a 5xx are tried again (from the start);
    an expired URL, an output over the limit and the time limit are final.

    :param max_bytes: the most bytes accepted: a larger ``Content-Length`` is refused before anything is written,
        and the stream is cut as soon as it passes the limit.
    :param timeout: seconds the whole download may take, retries included.
    :raises OutputExpiredError: on 403/404/410 (the service has deleted the output).
    :raises OutputTooLargeError: past ``max_bytes``.
    :raises CometAPIError: anything else.
    """
    retrier = Retrier(policy, time.monotonic() + timeout)
    attempt = 0
    while True:
        try:
            return _download_once(url, sink, max_bytes, timeout, retrier, connect_timeout, read_timeout, prediction_id)
        except CometAPIError as exc:
            if isinstance(exc, (OutputExpiredError, OutputTooLargeError)):
                raise
            delay = retrier.delay(Answer(error=exc, retryable=exc.transient), attempt)
            if delay is None:
                raise
        time.sleep(delay)
        attempt += 1


def _download_once(
    url: str,
    sink: Sink,
    max_bytes: int,
    timeout: float,
    retrier: Retrier,
    connect_timeout: float,
    read_timeout: float,
    prediction_id: str | None,
) -> Download:
    import requests
    import urllib3

    shown = safe_text(url)
    connect, read = retrier.timeouts(connect_timeout, read_timeout)
    try:
        # a delivery host may redirect (to a CDN): followed, and no key is ever sent to one
        resp = requests.get(url, stream=True, timeout=(connect, read), headers={"User-Agent": USER_AGENT})
        with resp:
            if resp.status_code in (403, 404, 410):
                raise OutputExpiredError(
                    f"the delivery URL {shown} is gone (expired: the service deletes outputs after about an hour); "
                    "set output_path so the provider copies images into your own storage as soon as they are ready",
                    http_status=resp.status_code,
                    prediction_id=prediction_id,
                )
            if resp.status_code >= 300:  # a delivery host's failure, whatever its body: a failed download
                status = resp.status_code
                raise CometAPIError(
                    f"download of {shown} failed: the delivery host answered HTTP {status} "
                    f"{safe_text(resp.reason or '', limit=80)}".rstrip(),
                    http_status=status,
                    prediction_id=prediction_id,
                    transient=is_retryable_status(status),
                    retry_after=parse_retry_after(resp.headers.get("Retry-After")),
                )
            content_type = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
            declared = _content_length(resp.headers)
            if declared is not None and declared > max_bytes:
                raise OutputTooLargeError(
                    f"the output {shown} declares {declared} bytes, over the limit of {max_bytes} bytes "
                    "(max_output_bytes); nothing was written",
                    prediction_id=prediction_id,
                )
            sink.begin()
            size = 0
            for chunk in iter_sync_body(resp, deadline=retrier.deadline or math.inf, limit=max_bytes):
                size += len(chunk)
                sink.write(chunk)
    except BodyTooLargeError:
        raise OutputTooLargeError(
            f"the output {shown} sent more than {max_bytes} bytes (max_output_bytes); the copy was abandoned",
            prediction_id=prediction_id,
        ) from None
    except DeadlineReachedError:
        raise CometAPIError(
            f"copying {shown} took longer than {timeout:g}s (download_timeout); the copy was abandoned",
            prediction_id=prediction_id,
        ) from None
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise CometAPIError(
            f"download of {shown} failed: {safe_text(str(exc))}", prediction_id=prediction_id, transient=True
        ) from exc
    if declared is not None and size != declared:
        raise IncompleteDownloadError(
            f"download of {shown} stopped at {size} of {declared} bytes", prediction_id=prediction_id, transient=True
        )
    return Download(content_type, size)


def _content_length(headers: Mapping[str, str]) -> int | None:
    try:
        return int(headers["Content-Length"])
    except (KeyError, ValueError):
        return None
