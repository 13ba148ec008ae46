"""Fault rules: what a misbehaving service does, server-wide (``add_fault``) or per prompt (``[sim:fault=...]``)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "DIRECTIVE_RE",
    "FAULT_KINDS",
    "FAULT_ROUTES",
    "HUGE_SIZE",
    "STREAM_SECONDS",
    "THROTTLE_SECONDS",
    "FaultRule",
    "parse_fault_directives",
]

#: Routes a fault rule can target.
FAULT_ROUTES: tuple[str, ...] = ("create", "get", "cancel", "file")
#: The API routes (every route but ``file``, the delivery URLs).
API_ROUTES: tuple[str, ...] = ("create", "get", "cancel")
#: Fault kinds, each with the routes it applies to.
FAULT_KINDS: dict[str, tuple[str, ...]] = {
    "status": FAULT_ROUTES,
    "html": FAULT_ROUTES,
    "drop": FAULT_ROUTES,
    "slow": FAULT_ROUTES,
    "malformed": FAULT_ROUTES,
    "trickle": FAULT_ROUTES,
    "truncate": ("file",),
    "expired": ("file",),
    "huge": ("file",),
    "endless": ("file",),
    "drop_after_create": ("create",),
    "redirect": API_ROUTES,
    "throttle": API_ROUTES,
}
#: How long a ``throttle`` rule refuses its route unless ``delay`` is given: Replicate's limit "resets in ~30s".
THROTTLE_SECONDS = 30.0
#: What a ``huge`` download declares unless ``size`` is given (3 GB).
HUGE_SIZE = 3 * 1024**3
#: ``huge`` and ``endless`` downloads end by themselves after this many seconds (or :data:`HUGE_SIZE` bytes),
#: so a client that never stops reading cannot keep the simulator busy for ever.
STREAM_SECONDS = 120.0

DEFAULT_STATUS_FOR_KIND = {"status": 500, "html": 502, "expired": 404, "redirect": 307, "throttle": 429}
#: ``[sim:NAME]`` or ``[sim:NAME=VALUE]`` anywhere in a prompt (the value may hold newlines and escapes).
DIRECTIVE_RE = re.compile(r"\[sim:([a-z_]+)(?:=([^\]]*))?\]", re.IGNORECASE)

_DIRECTIVE_FAULT_FIELDS: dict[str, Callable[[str], Any]] = {
    "times": lambda value: None if value.lower() in ("all", "none") else int(value),
    "status": int,
    "retry_after": float,
    "delay": float,
    "code": str,
    "message": str,
    "location": str,
    "size": int,
}
#: The fields of a rule given as JSON to ``POST /_sim/faults``.
RULE_FIELDS = frozenset({"route", "kind", *_DIRECTIVE_FAULT_FIELDS})


@dataclass
class FaultRule:
    """
    One fault injection rule; the README's "The simulator" section describes each kind.

    :param route: ``create``, ``get``, ``cancel`` or ``file``.
    :param kind: one of :data:`FAULT_KINDS`.
    :param times: how many matching requests it still applies to; ``None`` for all of them.
    :param status: the HTTP status for ``status`` (default 500), ``html`` (502), ``expired`` (404) and
        ``redirect`` (307).
    :param retry_after: if set, the ``Retry-After`` header value in seconds.
    :param delay: seconds to wait (the whole effect of ``slow``, default 1; between two bytes for ``trickle``,
        default 1; a pause before the others).
    :param code: overrides ``error.code`` of a ``status`` body.
    :param message: overrides ``error.message`` of a ``status`` body (control characters are kept).
    :param location: where a ``redirect`` points (required for it: e.g. another simulator on loopback).
    :param size: the ``Content-Length`` a ``huge`` download declares (default :data:`HUGE_SIZE`).

    A ``throttle`` rule answers every request of its route with Replicate's 429 without ``Retry-After`` for
    ``delay`` seconds (default :data:`THROTTLE_SECONDS`) from the first one it meets, then is spent (``times`` does
    not count for it).
    """

    route: str
    kind: str
    times: int | None = 1
    status: int | None = None
    retry_after: float | None = None
    delay: float | None = None
    code: str | None = None
    message: str | None = None
    location: str | None = None
    size: int | None = None
    applied: int = field(default=0)
    since: float | None = field(default=None)  # a throttle's start (monotonic seconds)

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
        if self.kind == "throttle":
            self.times = None
        if self.status is None:
            self.status = DEFAULT_STATUS_FOR_KIND.get(self.kind)
        elif isinstance(self.status, bool) or not isinstance(self.status, int) or not 100 <= self.status <= 599:
            raise ValueError("status must be an integer HTTP status (100..599)")
        for name in ("retry_after", "delay"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
                raise ValueError(f"{name} must be a non-negative number")
        if self.kind == "redirect" and not (isinstance(self.location, str) and self.location):
            raise ValueError("a redirect needs a location (the URL it points at)")
        if self.size is not None and (isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1):
            raise ValueError("size must be a positive integer")

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
    for match in DIRECTIVE_RE.finditer(prompt):
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
