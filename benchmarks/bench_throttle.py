"""
(f) A spent rate limit: Replicate's 429 without ``Retry-After`` ("Your rate limit resets in ~30s") on creates, on
polls, or both, for ``--window`` seconds from the first request it meets. One prediction operator task runs in this
process (``deferrable=False``: creates and polls both in the worker) against a simulator in its own process; the
baseline is the same task with no limit, in the same run. It prints, per case, the task's wall time, its excess over
the baseline against the window, the 429s met, the creates sent and the predictions made (never more than one: a
429 is not a paid create), and whether the task succeeded.

``python -m benchmarks.bench_throttle [--window 30] [--run-seconds 2]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from benchmarks.common import connection_env, print_machine, simulator_process, table

CASES = {"baseline": (), "creates": ("create",), "polls": ("get",), "creates and polls": ("create", "get")}


class _TI:
    """The little of a task instance the operator uses when it runs in the worker without deferring."""

    task_id = "throttled"
    map_index = -1
    try_number = 1

    def __init__(self) -> None:
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = json.loads(json.dumps(value))


def run_case(sim: Any, routes: tuple[str, ...], window: float, timeout: float) -> dict[str, Any]:
    from airflow_provider_cometflux.operators.flux import CometFluxPredictionOperator

    sim.control("reset", {})
    if routes:
        sim.control("faults", [{"route": route, "kind": "throttle", "delay": window} for route in routes])
    task = CometFluxPredictionOperator(
        task_id="throttled", prompt="a lighthouse", deferrable=False, poll_interval=1.0, timeout=timeout
    )
    start = time.monotonic()
    try:
        urls = task.execute({"ti": _TI()})
        outcome = f"succeeded ({len(urls)} image)"
    except Exception as exc:  # the figure is whether it fails
        outcome = f"FAILED: {type(exc).__name__}"
    wall = time.monotonic() - start
    stats = sim.stats
    return {
        "wall": wall,
        "429s": stats["responses"].get("429", 0),
        "creates": stats["creates"],
        "created": stats["created"],
        "outcome": outcome,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_throttle", description=__doc__)
    parser.add_argument("--window", type=float, default=30.0, help="seconds the limit stays spent (default 30)")
    parser.add_argument("--run-seconds", type=float, default=2.0, help="how long a prediction takes")
    parser.add_argument("--timeout", type=float, default=600.0, help="the task's timeout")
    args = parser.parse_args(argv)
    print_machine()
    rows = []
    with simulator_process("--run-seconds", str(args.run_seconds)) as sim:
        os.environ.update(connection_env(sim.base_url))
        baseline = None
        for name, routes in CASES.items():
            figures = run_case(sim, routes, args.window, args.timeout)
            baseline = figures["wall"] if baseline is None else baseline
            excess = figures["wall"] - baseline
            rows.append(
                [
                    name,
                    figures["wall"],
                    excess,
                    excess / args.window if routes else 0.0,
                    figures["429s"],
                    figures["creates"],
                    figures["created"],
                    figures["outcome"],
                ]
            )
    print(f"# a 429 without Retry-After for {args.window:g} s; predictions take {args.run_seconds:g} s")
    headers = ["limit spent on", "wall s", "over baseline s", "over / window", "429s", "creates", "created", "task"]
    print(table(headers, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
