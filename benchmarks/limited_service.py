"""
The simulator as a rate-limited service: ``python -m benchmarks.limited_service --status-reads-per-second N ...``.

Above ``N`` status reads (``GET /replicate/v1/predictions/{id}``) in one second it answers 429 with ``Retry-After:
1`` and Replicate's throttling body, as CometAPI and Replicate do. Only status reads are limited: the benchmark
creates its predictions before the watchers start, as the worker does before deferring. Every other argument is
the simulator's own (``python -m airflow_provider_cometflux.testing.simulator --help``).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any


def limited_simulator_class(reads_per_second: int) -> type:
    """The simulator, with status reads limited to ``reads_per_second`` per one-second window."""
    from aiohttp import web

    from airflow_provider_cometflux.testing import simulator

    class LimitedSimulator(simulator.CometAPISimulator):  # type: ignore[misc, valid-type]
        _window = -1
        _reads = 0

        async def _handle_get(self, request: web.Request) -> web.StreamResponse:
            window = int(time.monotonic())
            if window != self._window:
                self._window, self._reads = window, 0
            self._reads += 1
            if self._reads > reads_per_second:
                self._bump("gets")
                self._bump("rate_limited")
                body = {"detail": "Request was throttled. Your rate limit resets in ~1s.", "status": 429}
                return web.json_response(
                    body, status=429, headers={"Retry-After": "1"}, content_type="application/problem+json"
                )
            response: Any = await super()._handle_get(request)
            return response

    return LimitedSimulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--status-reads-per-second", type=int, default=None)
    args, rest = parser.parse_known_args(argv)
    from airflow_provider_cometflux.testing import simulator

    if args.status_reads_per_second:
        simulator.CometAPISimulator = limited_simulator_class(args.status_reads_per_second)  # type: ignore[misc]
    return int(simulator.main(rest))


if __name__ == "__main__":
    sys.exit(main())
