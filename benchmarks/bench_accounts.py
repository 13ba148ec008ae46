"""
Benchmark (e): one account, several triggerers. K triggerer-like processes poll one rate-limited account at once.

A CometAPI key's rate limit belongs to the account, but each triggerer keeps its own request budget
(``pacing.RequestBudget``). Each case starts the simulator limited to ``RPS`` status reads per second
(``limited_service.py``: 429 with ``Retry-After: 1`` above it, in one-second windows), then K fresh processes. Each
process warms up as a running triggerer is, creates its N predictions (``--hold`` seconds each), says it is ready,
and when every process is ready (a "go" sent to all at once) runs N ``CometFluxPredictionTrigger`` as shipped in
one event loop, until each has its event. For every run it prints:

* **wall / floor**: from "go" to the last event of any process, against the issue's floor, hold + K x N / RPS
  (every prediction done ``hold`` after "go", then polled once at the account's rate);
* **wall / bound**: the same against the shortest wall possible with the creates as they were really sent (each
  prediction polled once after it is done, at most RPS polls a second for the account): a loaded machine spreads
  the creates over seconds before "go", and the polls of the predictions done first then fit before the last is
  done, so the bound is below the floor;
* **refused**: the 429s among every status request of the run, as the simulator counted them;
* **lost**: predictions not seen ``succeeded``; and each process's own finish time.

Budgets (``--budgets``): ``adaptive``, a connection without ``requests_per_minute`` (each process's budget adapts to
the 429s on its own); ``split``, the connection's ``requests_per_minute`` set to the account's rate and its
``triggerers`` to the number of processes (each keeps its share: no refusals expected).

Run::

    python -m benchmarks.bench_accounts                         # 1 and 2 processes, 1,000 each at 200/s, 3 runs
    python -m benchmarks.bench_accounts --n 2500 --rps 100 --runs 3 --budgets adaptive

The processes are not pinned: with 2 cores, two triggerers and the service share them, so the figures depend on
what else runs on the machine (the load average is printed next to every run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any

from benchmarks.common import (
    BENCH_KEY,
    PYTHON,
    ROOT,
    print_machine,
    raise_open_files,
    simulator_process,
    table,
    target,
)

#: Targets of the issue: within this many times the floor in every run, at most this share refused.
MAX_WALL_OVER_FLOOR = 1.15
MAX_REFUSED_SHARE = 0.05


def load_average() -> float:
    """The 1-minute load average (``nan`` where unknown)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


# -- one triggerer-like process --------------------------------------------------------------------------------


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    from airflow_provider_cometflux.hooks import connection as hook_connection
    from airflow_provider_cometflux.triggers.prediction import CometFluxPredictionTrigger
    from benchmarks.bench_triggers import create_predictions

    loop = asyncio.get_running_loop()
    await hook_connection.shared_credentials("cometapi_default")  # warm, as a running triggerer is
    hook_connection._LOOP_CREDENTIALS.clear()  # the measured triggers look the connection up themselves
    ids, sent = await create_predictions(args.base_url, args.n)
    print("READY", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)  # "go", sent to every process at once
    started = time.monotonic()
    end_time = time.time() + args.hold + 600
    statuses: dict[str, int] = {}
    last = started

    async def run_trigger(trigger: Any) -> None:
        nonlocal last
        async for event in trigger.run():
            status = event.payload["status"]
            statuses[status] = statuses.get(status, 0) + 1
            last = time.monotonic()
            break

    tasks = []
    for index, pid in enumerate(ids):  # handed over in batches, as the triggerer does
        trigger = CometFluxPredictionTrigger(pid, poll_interval=args.poll_interval, end_time=end_time)
        tasks.append(loop.create_task(run_trigger(trigger)))
        if index % 100 == 99:
            await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    # loop time and time.monotonic() are the same clock, shared by the processes of one machine
    done = [at + args.hold - loop.time() + time.monotonic() for at in sent]
    return {"started": started, "finished": last, "done": done, "statuses": statuses}


def child(args: argparse.Namespace) -> None:
    raise_open_files()
    import logging

    logging.disable(logging.WARNING)  # measure the polling, not log formatting
    print("RESULT " + json.dumps(asyncio.run(measure(args))), flush=True)


# -- the orchestrating process ---------------------------------------------------------------------------------


def connection(base_url: str, budget: str, rps: int, processes: int) -> dict[str, str]:
    """The ``cometapi_default`` connection of a case, as an environment variable."""
    conn: dict[str, Any] = {"conn_type": "cometapi", "host": base_url, "password": BENCH_KEY}
    if budget == "split":
        conn["extra"] = {"requests_per_minute": rps * 60, "triggerers": processes}
    return {"AIRFLOW_CONN_COMETAPI_DEFAULT": json.dumps(conn)}


def run_once(base_url: str, args: argparse.Namespace, processes: int, budget: str) -> list[dict[str, Any]]:
    """Start ``processes`` triggerer-like processes, let them go together, and return their results."""
    command = [PYTHON, "-m", "benchmarks.bench_accounts", "--child", "--base-url", base_url, "--n", str(args.n)]
    command += ["--hold", str(args.hold), "--poll-interval", str(args.poll_interval)]
    env = {**os.environ, **connection(base_url, budget, args.rps, processes), "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            command, env=env, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(processes)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line.startswith("READY"):
                raise RuntimeError(f"a process failed to start: {line}{proc.communicate(timeout=60)[1][-4000:]}")
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = []
        timeout = args.hold * 20 + 600
        for proc in procs:
            out, err = proc.communicate(timeout=timeout)
            lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
            if not lines:
                raise RuntimeError(f"a process failed:\n{out[-2000:]}\n{err[-4000:]}")
            results.append(dict(json.loads(lines[-1][len("RESULT ") :])))
        return results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def bound_seconds(done: list[float], rps: float) -> float:
    """
    The shortest wall any poller could take: each prediction must be polled once after it is done, at most ``rps``
    polls a second for the whole account. With ``done`` sorted, those done from the k-th on need ``len - k`` polls
    after ``done[k]``. When every create is sent at once this is the issue's floor, hold + N / rps.

    :param done: when each prediction is done, in seconds from the start.
    :param rps: the account's status reads per second.
    """
    ordered = sorted(max(0.0, at) for at in done)
    return max(at + (len(ordered) - k) / rps for k, at in enumerate(ordered))


def summarise(results: list[dict[str, Any]], args: argparse.Namespace, stats: tuple[int, int]) -> dict[str, Any]:
    start = min(r["started"] for r in results)
    floor = args.hold + len(results) * args.n / args.rps
    bound = bound_seconds([at - start for r in results for at in r["done"]], args.rps)
    wall = max(r["finished"] for r in results) - start
    gets, refused = stats
    succeeded = sum(r["statuses"].get("succeeded", 0) for r in results)
    return {
        "processes": len(results),
        "wall_s": wall,
        "floor_s": floor,
        "wall_over_floor": wall / floor,
        "bound_s": bound,
        "wall_over_bound": wall / bound,
        "requests": gets,
        "refused": refused,
        "refused_share": refused / max(1, gets),
        "lost": len(results) * args.n - succeeded,
        "finishes_s": [round(r["finished"] - start, 1) for r in results],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="triggers per process")
    parser.add_argument("--rps", type=int, default=200, help="the account's status reads per second")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2], help="triggerer-like processes")
    parser.add_argument("--runs", type=int, default=3, help="runs per number of processes")
    parser.add_argument(
        "--budgets", nargs="+", default=["adaptive", "split"], choices=["adaptive", "split"], help="see above"
    )
    parser.add_argument("--hold", type=float, default=10.0, help="how long each prediction takes, in seconds")
    parser.add_argument("--poll-interval", type=float, default=2.0, help="the triggers' poll_interval")
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return 0
    print_machine()
    print(
        f"# {args.n} triggers per process, {args.hold:g} s per prediction, poll_interval {args.poll_interval:g} s, "
        f"account limit {args.rps} status reads/s (429 with Retry-After: 1 above); processes not pinned"
    )
    raise_open_files()
    results = []
    options = ["--run-seconds", str(args.hold), "--status-reads-per-second", str(args.rps)]
    with simulator_process(*options) as sim:
        for budget in args.budgets:
            for processes in args.processes:
                for run in range(1, args.runs + 1):
                    sim.reset()
                    load = load_average()
                    note = f"... {budget}, {processes} process(es), run {run}, load average {load:.2f}"
                    print(note, file=sys.stderr, flush=True)
                    outcome = run_once(sim.base_url, args, processes, budget)
                    stats = sim.stats
                    counts = (int(stats.get("gets", 0)), int(stats.get("responses", {}).get("429", 0)))
                    summary = summarise(outcome, args, counts)
                    results.append({"budget": budget, "run": run, "load_average": load, **summary})
    headers = ["budget", "processes", "run", "load avg", "wall s", "floor s", "wall/floor", "bound s", "wall/bound"]
    headers += ["requests", "refused", "refused %"]
    headers += ["lost", "each process done at s"]
    rows = [
        [
            r["budget"],
            r["processes"],
            r["run"],
            f"{r['load_average']:.2f}",
            r["wall_s"],
            r["floor_s"],
            f"{r['wall_over_floor']:.3f}",
            r["bound_s"],
            f"{r['wall_over_bound']:.3f}",
            r["requests"],
            r["refused"],
            f"{100 * r['refused_share']:.1f}",
            r["lost"],
            " ".join(str(f) for f in r["finishes_s"]),
        ]
        for r in results
    ]
    print(table(headers, rows))
    print()
    for budget, processes in [(b, p) for b in args.budgets for p in args.processes]:
        mine = [r for r in results if r["processes"] == processes and r["budget"] == budget]
        worst = max(r["wall_over_floor"] for r in mine)
        most = max(r["refused_share"] for r in mine)
        lost = sum(r["lost"] for r in mine)
        print(
            f"targets, {budget}, {processes} process(es), {len(mine)} runs: worst wall {worst:.3f}x the floor <= "
            f"{MAX_WALL_OVER_FLOOR:g}x: {target(worst <= MAX_WALL_OVER_FLOOR)}; most refused {100 * most:.1f}% <= "
            f"{100 * MAX_REFUSED_SHARE:g}%: {target(most <= MAX_REFUSED_SHARE)}; lost {lost} = 0: {target(lost == 0)}"
        )
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
