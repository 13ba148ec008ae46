"""The bodies and responses the simulator answers with: both error shapes, HTML pages, dropped connections."""

from __future__ import annotations

import json
import math
import secrets
from datetime import datetime, timezone
from http import HTTPStatus
from typing import Any

from aiohttp import web

__all__ = [
    "THROTTLE_DETAIL",
    "DroppedResponse",
    "TruncatedResponse",
    "error_body",
    "html_page",
    "json_response",
    "problem_response",
    "reason",
]

#: Replicate's 429 text (``{"detail": ..., "status": 429}``) for a limit that resets every second.
THROTTLE_DETAIL = "Request was throttled. Your rate limit resets in ~1s."

# (type, code, message) of the CometAPI-shaped error body for a status.
_ERROR_TEMPLATES: dict[int, tuple[str, str, str]] = {
    400: ("invalid_request_error", "invalid_request", "Bad request"),
    401: ("invalid_request_error", "invalid_api_key", "Invalid token"),
    403: ("invalid_request_error", "forbidden", "Access to this resource is forbidden"),
    404: ("invalid_request_error", "not_found", "Resource not found"),
    408: ("server_error", "request_timeout", "Request timed out"),
    409: ("invalid_request_error", "conflict", "Conflict"),
    413: ("invalid_request_error", "request_too_large", "Request entity too large"),
    422: ("invalid_request_error", "invalid_request", "Input validation failed"),
    429: ("rate_limit_error", "rate_limit_exceeded", "Rate limit reached, please try again later"),
    500: ("server_error", "internal_error", "Internal server error"),
    502: ("upstream_error", "bad_gateway", "Bad gateway: the upstream provider returned an invalid response"),
    503: ("server_error", "service_unavailable", "Service temporarily unavailable, please try again later"),
    504: ("server_error", "gateway_timeout", "The upstream provider did not answer in time"),
    524: ("server_error", "timeout", "A timeout occurred while waiting for the upstream provider"),
}

_EXTRA_REASONS = {
    520: "Web Server Returned an Unknown Error",
    521: "Web Server Is Down",
    522: "Connection Timed Out",
    523: "Origin Is Unreachable",
    524: "A Timeout Occurred",
}

HTML_404 = (
    "<!DOCTYPE html>\n<html>\n<head><title>404 Not Found</title></head>\n<body>\n"
    "<center><h1>404 Not Found</h1></center>\n<hr><center>nginx</center>\n</body>\n</html>\n"
)


def reason(status: int) -> str:
    """Return the reason phrase of a status, including Cloudflare's 52x ones."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return _EXTRA_REASONS.get(status, "Error")


class DroppedResponse(web.Response):
    """Stands for a connection closed without an answer; it is never sent."""


class TruncatedResponse(web.StreamResponse):
    """A file response whose body was cut short."""


def html_page(status: int) -> str:
    """A Cloudflare-like HTML error page."""
    phrase = reason(status)
    return (
        f"<!DOCTYPE html>\n<html>\n<head><title>{status} {phrase}</title></head>\n<body>\n"
        f"<center><h1>{status} {phrase}</h1></center>\n<hr><center>cloudflare</center>\n</body>\n</html>\n"
    )


def request_id() -> str:
    return datetime.now(tz=timezone.utc).strftime("%Y%m%d%H%M%S") + secrets.token_hex(8)


def error_body(
    status: int, *, message: str | None = None, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """Build a CometAPI-shaped error body ``{"error": {"message", "type", "param", "code"}}``."""
    error_type, default_code, default_message = _ERROR_TEMPLATES.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", "error", "Request failed")
    )
    return {
        "error": {
            "message": f"{message or default_message} (request id: {request_id()})",
            "type": error_type,
            "param": param,
            "code": code or default_code,
        }
    }


def format_retry_after(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None, reason: str | None = None
) -> web.Response:
    """A JSON answer (``json.dumps`` escapes control characters, so they reach the client intact)."""
    return web.Response(
        text=json.dumps(data), status=status, reason=reason, content_type="application/json", headers=headers
    )


def problem_response(body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    """A Replicate ``application/problem+json`` answer; its status is ``body["status"]``."""
    return web.Response(
        text=json.dumps(body), status=int(body["status"]), content_type="application/problem+json", headers=headers
    )


def throttled_response() -> web.Response:
    """Replicate's 429: ``Retry-After: 1`` and ``{"detail": "Request was throttled. ...", "status": 429}``."""
    return problem_response({"detail": THROTTLE_DETAIL, "status": 429}, headers={"Retry-After": "1"})


def throttled_without_retry_after(resets_in: float) -> web.Response:
    """Replicate's 429 when an account's limit is spent: no ``Retry-After``, only the body says when it resets."""
    detail = f"Request was throttled. Your rate limit resets in ~{max(1, math.ceil(resets_in))}s."
    return problem_response({"detail": detail, "status": 429})


def not_found_html() -> web.Response:
    return web.Response(text=HTML_404, status=404, content_type="text/html")
