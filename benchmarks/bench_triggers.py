"""
Benchmark (a): N deferred predictions watched from one event loop, as one triggerer process runs them.

For each case a fresh process (pinned to CPU 0) creates N predictions on the simulator (its own process, pinned to
CPU 1, so that the service's CPU is not counted), then watches them in one asyncio loop until every one has its
event, and reports:

* wall time from the watchers' start to the last event, against the floor: the moment the last prediction is done
  (its create was sent ``run-seconds`` earlier), plus, against a rate-limited service, one poll per prediction at
  the service's rate; ``over floor`` is the extra time the polling cost;
* CPU seconds of the process (all threads), and CPU per status request;
* the worst event-loop stall (how late a 5 ms timer fired) and its 99th percentile, and the CPU the loop's thread
  spent while that timer waited (its worst, ``loop CPU ms``): the part of a stall the process itself caused, which
  other work on the machine does not inflate;
* memory per in-flight prediction: peak RSS growth divided by N;
* status requests (GETs) per prediction, as the simulator counted them, and how many it refused (429);
* the time spent fetching the connection, total and worst single fetch;
* the polls the shared poller put off, behind schedule, until a prediction could have ended (``pacing.RunTimes``).

Modes (``--modes``):

* ``triggers``: N ``CometFluxPredictionTrigger`` as shipped, so through the event loop's shared poller;
* ``watch``: N coroutines awaiting ``watch_prediction`` directly, as the triggers do;
* ``batch``: one ``CometFluxBatchTrigger`` watching the N predictions;
* baseline ``backoff``: N per-trigger polling loops, as every trigger ran before the shared poller: each polls on
  its own through aiohttp, its hook retrying (5 retries, honouring ``Retry-After``) and backing off alone;
* baseline ``threads``: the same per-trigger loops, each poll made by ``requests`` in a thread pool (``--threads``
  workers sharing one keep-alive session) instead of aiohttp.

``--limited N:RPS`` runs N watchers against a service that allows RPS status reads per second and answers 429 with
``Retry-After: 1`` above it (``benchmarks/limited_service.py``).

``--variant`` also measures changes to the triggerer process (join several with ``+``), in mode ``triggers``:

* ``gc-freeze``: the triggerer freezes its start-up heap (``gc.freeze()``), so full garbage collections no longer
  walk the hundreds of thousands of objects Airflow itself loaded (the shipped poller also freezes the heap when it
  starts, a little later: this variant measures the difference);
* ``gc-tune``: ``gc.freeze()`` and a first-generation threshold of 50,000 allocations (instead of 700), so that
  the short-lived objects of requests in flight die young instead of reaching the oldest generation;
* ``pool-N``: the shared connection pool holds N connections instead of ``ASYNC_POOL_LIMIT`` (256). With
  ``--poll-delay`` (every status poll takes that long, as CometAPI's can) the pool caps the polls per second at
  ``limit / poll-delay``.

Run::

    python -m benchmarks.bench_triggers                       # N = 1,000 and 10,000: triggers and threads
    python -m benchmarks.bench_triggers --n --run-seconds 10 --modes triggers backoff --limited 1000:50 5000:200
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from benchmarks.common import (
    BENCH_KEY,
    PYTHON,
    ROOT,
    connection_env,
    cpu_seconds,
    pin_to_cpu,
    print_machine,
    raise_open_files,
    rss_bytes,
    simulator_process,
    table,
    target,
)

MODEL = "black-forest-labs/flux-schnell"
#: ``triggers``: N ``CometFluxPredictionTrigger`` as shipped (through the shared poller); ``watch``: N coroutines
#: awaiting ``watch_prediction`` directly; ``batch``: one ``CometFluxBatchTrigger``; the baselines poll each
#: prediction on its own, as every trigger did before the shared poller: ``backoff`` (aiohttp, the hook's own
#: retries and backoff per trigger) and ``threads`` (``requests`` in a thread pool).
MODES = ["triggers", "watch", "batch", "backoff", "threads"]
#: Targets from the performance issue.
MAX_OVER_FLOOR = 2.0
MAX_STALL_MS = 100.0
#: Above this many triggers the stall may reach :data:`MAX_STALL_MS_MANY`.
MANY_TRIGGERS = 1000
MAX_STALL_MS_MANY = 200.0
MIN_CPU_RATIO = 3.0
MAX_BYTES_PER_PREDICTION = 16 * 1024
MAX_REFUSED_SHARE = 0.05
MAX_WALL_OVER_FLOOR = 1.2
#: Modes measured as baselines, not against the targets.
BASELINES = {"backoff", "threads"}


class LoopMonitor:
    """
    Measures how late a short timer fires (the loop's stalls), garbage-collection pauses, and peak RSS.

    It also measures the CPU the loop's thread spent while each timer waited (``time.thread_time``): a stall of the
    loop's own making shows as CPU, while time the process spent waiting for a CPU on a busy machine does not.
    """

    def __init__(self, tick: float = 0.005) -> None:
        self.tick = tick
        self.lateness: list[float] = []
        self.held_cpu: list[float] = []
        self.windows: list[tuple[float, float]] = []
        self.peak_rss = rss_bytes()
        self.gc_pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self.full_gc_spans: list[tuple[float, float]] = []
        self._gc_started = 0.0
        self._task: asyncio.Task[None] | None = None

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            now = time.perf_counter()
            self.gc_pauses[info["generation"]].append(now - self._gc_started)
            if info["generation"] == 2:
                self.full_gc_spans.append((self._gc_started, now))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        ticks = 0
        while True:
            start, wall, cpu = loop.time(), time.perf_counter(), time.thread_time()
            await asyncio.sleep(self.tick)
            self.lateness.append(loop.time() - start - self.tick)
            self.held_cpu.append(time.thread_time() - cpu)
            self.windows.append((wall, time.perf_counter()))
            ticks += 1
            if ticks % 20 == 0:
                self.peak_rss = max(self.peak_rss, rss_bytes())

    def start(self) -> None:
        gc.callbacks.append(self._on_gc)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        self.peak_rss = max(self.peak_rss, rss_bytes())
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def worst_ms(self) -> float:
        return 1000 * max(self.lateness, default=0.0)

    def worst_outside_gc_ms(self) -> float:
        """The worst stall in which no full garbage collection ran."""
        spans = self.full_gc_spans
        clean = [
            late
            for late, (start, end) in zip(self.lateness, self.windows, strict=True)
            if not any(s < end and e > start for s, e in spans)
        ]
        return 1000 * max(clean, default=0.0)

    def worst_cpu_ms(self) -> float:
        """The most CPU the loop's thread spent while one timer waited."""
        return 1000 * max(self.held_cpu, default=0.0)

    def p99_ms(self) -> float:
        if len(self.lateness) < 2:
            return self.worst_ms()
        return 1000 * statistics.quantiles(self.lateness, n=100)[98]


# -- the measured process ------------------------------------------------------------------------------------


async def create_predictions(base_url: str, count: int) -> tuple[list[str], list[float]]:
    """Create ``count`` predictions as fast as the simulator takes them; return their ids and send times."""
    import aiohttp

    ids: list[str] = [""] * count
    sent: list[float] = [0.0] * count
    loop = asyncio.get_running_loop()
    url = f"{base_url}/replicate/v1/models/{MODEL}/predictions"
    headers = {"Authorization": f"Bearer {BENCH_KEY}"}
    limit = asyncio.Semaphore(256)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:

        async def create(index: int) -> None:
            async with limit:
                sent[index] = loop.time()
                async with session.post(url, json={"input": {"prompt": f"bench {index}"}}, headers=headers) as r:
                    r.raise_for_status()
                    ids[index] = (await r.json())["id"]

        await asyncio.gather(*(create(i) for i in range(count)))
    return ids, sent


def instrument_connection_fetch(timings: list[float]) -> None:
    """Record how long each connection lookup takes (not the reads the loop's shared lookup answers)."""
    from airflow_provider_cometflux.hooks import connection

    original = connection._alookup

    async def timed(conn_id: str) -> Any:
        started = time.perf_counter()
        try:
            return await original(conn_id)
        finally:
            timings.append(time.perf_counter() - started)

    connection._alookup = timed  # type: ignore[assignment]


class ThreadPoolHook:
    """The thread-pool baseline's hook: the sync ``requests`` hook, each call pushed to a thread pool."""

    def __init__(self, sync_hook: Any, pool: ThreadPoolExecutor) -> None:
        self.sync_hook = sync_hook
        self.pool = pool

    async def aget_prediction(self, prediction_id: str, **_: Any) -> dict[str, Any]:
        call = functools.partial(self.sync_hook.get_prediction, prediction_id)
        return await asyncio.get_running_loop().run_in_executor(self.pool, call)

    async def aclose(self) -> None:
        return None


async def per_trigger_watch(hook: Any, pid: str, *, poll_interval: float, end_time: float, max_errors: int = 5) -> str:
    """
    The baselines' trigger: polls one prediction on its own, as every trigger did before the shared poller.

    Its hook retries each poll itself (the default policy: 5 retries, honouring ``Retry-After``), each trigger backs
    off alone, and the first poll is spread over 0.25 s. It returns the event's status.
    """
    from airflow_provider_cometflux.exceptions import CometAPIError
    from airflow_provider_cometflux.models import Prediction
    from airflow_provider_cometflux.pacing import poll_delays

    delays = poll_delays(poll_interval)
    errors = 0
    await asyncio.sleep(random.uniform(0, min(0.25, poll_interval)))
    while True:
        remaining = end_time - time.time()
        if remaining <= 0:
            return "timeout"
        try:
            prediction = Prediction(await hook.aget_prediction(pid, timeout=remaining))
        except CometAPIError as exc:
            if time.time() >= end_time:
                continue
            errors += 1
            if not exc.transient or errors >= max_errors:
                return "error"
        else:
            errors = 0
            if prediction.is_terminal:
                return prediction.status
        await asyncio.sleep(max(0.0, min(next(delays), end_time - time.time())))


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    from airflow_provider_cometflux.hooks import connection as hook_connection
    from airflow_provider_cometflux.hooks.cometapi import CometAPIHook
    from airflow_provider_cometflux.triggers.prediction import CometFluxPredictionTrigger

    loop = asyncio.get_running_loop()
    sim_stats = functools.partial(_sim_stats, args.base_url)
    # warm up as a running triggerer is: secrets backends and providers discovered, the async client imported
    await hook_connection.shared_credentials("cometapi_default")
    hook_connection._LOOP_CREDENTIALS.clear()  # the measured triggers look the connection up themselves
    ids, sent = await create_predictions(args.base_url, args.n)
    fetches: list[float] = []
    changes = set((args.variant or "").split("+"))
    for change in changes:
        if change.startswith("pool-"):
            hook_connection.ASYNC_POOL_LIMIT = int(change.removeprefix("pool-"))
    instrument_connection_fetch(fetches)
    before = await loop.run_in_executor(None, sim_stats)
    gc.collect()
    if changes & {"gc-freeze", "gc-tune"}:
        gc.freeze()
    if "gc-tune" in changes:
        gc.set_threshold(50_000, 20, 10)
    rss_before = rss_bytes()
    cpu_before = cpu_seconds()
    monitor = LoopMonitor()
    monitor.start()
    started = loop.time()
    end_time = time.time() + args.run_seconds + 600
    done_at: list[float] = []
    statuses: dict[str, int] = {}

    def done(status: str, at: float | None = None) -> None:
        done_at.append(loop.time() if at is None else at)
        statuses[status] = statuses.get(status, 0) + 1

    async def run_trigger(trigger: Any) -> None:
        async for event in trigger.run():
            done(event.payload["status"])
            break

    async def run_watch(pid: str) -> None:
        from airflow_provider_cometflux.watching.poller import watch_prediction

        try:
            prediction = await watch_prediction(
                "cometapi_default", pid, poll_interval=args.poll_interval, end_time=end_time
            )
            done(prediction.status)
        except Exception as exc:
            done(type(exc).__name__)

    async def run_per_trigger(hook: Any, pid: str, own_hook: bool) -> None:
        try:
            done(await per_trigger_watch(hook, pid, poll_interval=args.poll_interval, end_time=end_time))
        finally:
            if own_hook:
                await hook.aclose()

    cleanup: Callable[[], None] = lambda: None  # noqa: E731
    shared_hook: Any = None
    if args.mode == "threads":
        import requests

        pool = ThreadPoolExecutor(max_workers=args.threads, thread_name_prefix="poll")
        sync_hook = CometAPIHook()
        adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=args.threads)
        sync_hook.session.mount("http://", adapter)
        shared_hook = ThreadPoolHook(sync_hook, pool)
        cleanup = lambda: pool.shutdown(wait=False)  # noqa: E731
    tasks = []
    if args.mode == "batch":
        from airflow_provider_cometflux.triggers.batch import CometFluxBatchTrigger

        batch = CometFluxBatchTrigger(ids, poll_interval=args.poll_interval, end_time=end_time)

        async def run_batch() -> None:
            async for event in batch.run():
                now = loop.time()
                for item in event.payload.get("results") or [event.payload]:
                    done(item["status"] if item else "none", now)
                break

        tasks.append(loop.create_task(run_batch()))
        ids = []
    for index, pid in enumerate(ids):  # handed over in batches, as the triggerer does
        if args.mode == "triggers":
            work = run_trigger(CometFluxPredictionTrigger(pid, poll_interval=args.poll_interval, end_time=end_time))
        elif args.mode == "watch":
            work = run_watch(pid)
        elif args.mode == "backoff":
            work = run_per_trigger(CometAPIHook(), pid, True)
        else:
            work = run_per_trigger(shared_hook, pid, False)
        tasks.append(loop.create_task(work))
        if index % 100 == 99:
            await asyncio.sleep(0)
    from airflow_provider_cometflux.watching.poller import current_poller

    poller = current_poller("cometapi_default")  # the shared one, in modes triggers and watch
    await asyncio.gather(*tasks)
    finished = max(done_at)
    cpu = cpu_seconds() - cpu_before
    await monitor.stop()
    cleanup()
    after = await loop.run_in_executor(None, sim_stats)
    gets = after["gets"] - before["gets"]
    refused = after["responses"].get("429", 0) - before["responses"].get("429", 0)
    done_floor = max(sent) + args.run_seconds - started
    floor = done_floor + (args.n / args.service_rps if args.service_rps else 0.0)
    wall = finished - started
    return {
        "mode": args.mode,
        "variant": args.variant or "-",
        "n": args.n,
        "service_rps": args.service_rps,
        "wall_s": wall,
        "floor_s": floor,
        "over_floor_s": wall - floor,
        "wall_over_floor": wall / floor,
        "cpu_s": cpu,
        "cpu_ms_per_poll": 1000 * cpu / max(1, gets),
        "stall_ms": monitor.worst_ms(),
        "stall_p99_ms": monitor.p99_ms(),
        "stall_outside_gc_ms": monitor.worst_outside_gc_ms(),
        "stall_cpu_ms": monitor.worst_cpu_ms(),
        "gc_full_collections": len(monitor.gc_pauses[2]),
        "gc_worst_pause_ms": 1000 * max((p for ps in monitor.gc_pauses.values() for p in ps), default=0.0),
        "bytes_per_prediction": (monitor.peak_rss - rss_before) / args.n,
        "polls_per_prediction": gets / args.n,
        "polls_per_second": gets / wall,
        "requests": gets,
        "refused": refused,
        "refused_share": refused / max(1, gets),
        "lost": args.n - statuses.get("succeeded", 0),
        "connection_fetches": len(fetches),
        "connection_fetch_total_s": sum(fetches),
        "connection_fetch_worst_ms": 1000 * max(fetches, default=0.0),
        "statuses": statuses,
        "put_off": poller.put_off if poller is not None else 0,
    }


def _sim_stats(base_url: str) -> dict[str, Any]:
    import urllib.request

    with urllib.request.urlopen(f"{base_url}/_sim/stats", timeout=60) as resp:
        return dict(json.loads(resp.read()))


def child(args: argparse.Namespace) -> None:
    pin_to_cpu(0)
    raise_open_files()
    import logging

    logging.disable(logging.WARNING)  # measure the polling, not log formatting
    result = asyncio.run(measure(args))
    print("RESULT " + json.dumps(result), flush=True)


# -- the orchestrating process -------------------------------------------------------------------------------


def run_case(base_url: str, args: argparse.Namespace, n: int, mode: str, variant: str | None) -> dict[str, Any]:
    """One case in a fresh process: ``n`` watchers of ``mode`` (see the module docstring)."""
    command = [
        PYTHON,
        "-m",
        "benchmarks.bench_triggers",
        "--child",
        "--base-url",
        base_url,
        "--n",
        str(n),
        "--modes",
        mode,
        "--run-seconds",
        str(args.run_seconds),
        "--poll-interval",
        str(args.poll_interval),
        "--threads",
        str(args.threads),
        "--service-rps",
        str(args.service_rps or 0),
    ]
    if variant:
        command += ["--variant", variant]
    env = {**os.environ, **connection_env(base_url), "PYTHONPATH": str(ROOT)}
    timeout = args.run_seconds * 10 + 600
    proc = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line[len("RESULT ") :]))
    raise RuntimeError(f"case n={n} mode={mode} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def report(results: list[dict[str, Any]]) -> None:
    unlimited = [r for r in results if not r["service_rps"]]
    limited = [r for r in results if r["service_rps"]]
    if unlimited:
        report_unlimited(unlimited)
    if limited:
        print()
        report_limited(limited)


def report_unlimited(results: list[dict[str, Any]]) -> None:
    headers = ["mode", "variant", "N", "wall s", "floor s", "over floor s", "CPU s", "CPU ms/poll"]
    headers += ["worst stall ms", "p99 stall ms", "loop CPU ms", "bytes/pred", "polls/pred", "conn fetch s", "polls/s"]
    headers += ["full GCs", "worst GC ms"]
    rows = [
        [
            r["mode"],
            r["variant"],
            r["n"],
            r["wall_s"],
            r["floor_s"],
            r["over_floor_s"],
            r["cpu_s"],
            r["cpu_ms_per_poll"],
            r["stall_ms"],
            r["stall_p99_ms"],
            r["stall_cpu_ms"],
            int(r["bytes_per_prediction"]),
            r["polls_per_prediction"],
            r["connection_fetch_total_s"],
            r["polls_per_second"],
            r["gc_full_collections"],
            r["gc_worst_pause_ms"],
        ]
        for r in results
    ]
    print("# unlimited service")
    print(table(headers, rows))
    print()
    for r in results:
        if r["mode"] in BASELINES:
            continue
        base = next((b for b in results if b["mode"] == "threads" and b["n"] == r["n"]), None)
        over = r["over_floor_s"]
        most = MAX_STALL_MS if r["n"] <= MANY_TRIGGERS else MAX_STALL_MS_MANY
        checks = [
            f"over floor {over:.2f} s <= {MAX_OVER_FLOOR:g}: {target(over <= MAX_OVER_FLOOR)}",
            f"worst stall {r['stall_ms']:.0f} ms <= {most:g}: {target(r['stall_ms'] <= most)} "
            f"(of the loop's own CPU {r['stall_cpu_ms']:.0f} ms: {target(r['stall_cpu_ms'] <= most)})",
            f"memory {r['bytes_per_prediction'] / 1024:.1f} KB/pred <= 16: "
            f"{target(r['bytes_per_prediction'] <= MAX_BYTES_PER_PREDICTION)}",
        ]
        if base is not None:
            per_poll = base["cpu_ms_per_poll"] / max(1e-9, r["cpu_ms_per_poll"])
            total = base["cpu_s"] / max(1e-9, r["cpu_s"])
            checks.append(
                f"CPU per poll {per_poll:.1f}x less than threads (in total {total:.1f}x) >= {MIN_CPU_RATIO:g}x: "
                f"{target(per_poll >= MIN_CPU_RATIO)}"
            )
        print(f"targets, N={r['n']} {r['mode']} ({r['variant']}): " + "; ".join(checks))
        print(
            f"  events: {r['statuses']}; connection fetches {r['connection_fetches']}, worst one "
            f"{r['connection_fetch_worst_ms']:.1f} ms; full GCs {r['gc_full_collections']}, worst GC pause "
            f"{r['gc_worst_pause_ms']:.0f} ms; worst stall without a full GC {r['stall_outside_gc_ms']:.0f} ms; "
            f"polls put off {r['put_off']}"
        )


def report_limited(results: list[dict[str, Any]]) -> None:
    headers = ["mode", "N", "service rps", "wall s", "floor s", "wall/floor", "lost", "requests", "refused"]
    headers += ["refused %", "CPU s", "CPU ms/req", "worst stall ms", "p99 stall ms", "loop CPU ms", "bytes/pred"]
    rows = [
        [
            r["mode"],
            r["n"],
            r["service_rps"],
            r["wall_s"],
            r["floor_s"],
            r["wall_over_floor"],
            r["lost"],
            r["requests"],
            r["refused"],
            f"{100 * r['refused_share']:.1f}",
            r["cpu_s"],
            r["cpu_ms_per_poll"],
            r["stall_ms"],
            r["stall_p99_ms"],
            r["stall_cpu_ms"],
            int(r["bytes_per_prediction"]),
        ]
        for r in results
    ]
    print("# rate-limited service: floor = last prediction done + N polls at the service's rate")
    print(table(headers, rows))
    print()
    for r in results:
        if r["mode"] in BASELINES:
            continue
        base = next((b for b in results if b["mode"] == "backoff" and b["n"] == r["n"]), None)
        checks = [
            f"lost {r['lost']} = 0: {target(r['lost'] == 0)}",
            f"refused {100 * r['refused_share']:.1f}% <= {100 * MAX_REFUSED_SHARE:g}%: "
            f"{target(r['refused_share'] <= MAX_REFUSED_SHARE)}",
            f"wall {r['wall_over_floor']:.2f}x the floor <= {MAX_WALL_OVER_FLOOR:g}x: "
            f"{target(r['wall_over_floor'] <= MAX_WALL_OVER_FLOOR)}",
        ]
        if base is not None:
            share = r["cpu_s"] / max(1e-9, base["cpu_s"])
            checks.append(f"CPU {share:.2f} of the per-trigger backoff baseline's <= 1/3: {target(share <= 1 / 3)}")
        print(f"targets, N={r['n']} at {r['service_rps']}/s {r['mode']}: " + "; ".join(checks))
        print(f"  events: {r['statuses']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="*", default=[1000, 10000], help="triggers (unlimited service)")
    parser.add_argument("--modes", nargs="+", default=["triggers", "threads"], choices=MODES)
    parser.add_argument(
        "--limited",
        nargs="*",
        default=[],
        metavar="N:RPS",
        help="also N triggers against a service allowing RPS status reads per second (429, Retry-After: 1 above)",
    )
    parser.add_argument("--service-rps", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--run-seconds", type=float, default=20.0, help="how long each prediction takes")
    parser.add_argument("--poll-interval", type=float, default=2.0, help="the triggers' poll_interval")
    parser.add_argument("--threads", type=int, default=32, help="the baseline's thread pool size")
    parser.add_argument("--poll-delay", type=float, default=0.0, help="every status poll takes this long")
    parser.add_argument(
        "--variant",
        nargs="*",
        default=[],
        help="also measure triggerer settings: gc-freeze, gc-tune, pool-N, joined with '+'",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    known = {"gc-freeze", "gc-tune"}
    for variant in args.variant:
        if not all(c in known or re.fullmatch(r"pool-\d+", c) for c in variant.split("+")):
            parser.error(f"unknown variant {variant!r}; choose from {sorted(known)}, joined with '+'")
    if args.child:
        args.n, args.mode = args.n[0], args.modes[0]
        args.variant = args.variant[0] if args.variant else None
        child(args)
        return 0
    print_machine()
    print(
        f"# {args.run_seconds:g} s per prediction, each poll answered after {args.poll_delay:g} s, "
        f"poll_interval {args.poll_interval:g} s, baseline: requests in "
        f"{args.threads} threads; simulator in its own process on CPU 1, triggers on CPU 0"
    )
    raise_open_files()
    specs = [(n, 0) for n in args.n]
    for spec in args.limited:
        n, _, rps = spec.partition(":")
        specs.append((int(n), int(rps)))
    results = []
    for rps in dict.fromkeys(rps for _, rps in specs):
        limit = ["--status-reads-per-second", str(rps)] if rps else []
        options = ["--run-seconds", str(args.run_seconds), "--poll-delay", str(args.poll_delay), *limit]
        with simulator_process(*options) as sim:
            for n in [n for n, r in specs if r == rps]:
                cases: list[tuple[str, str | None]] = [(mode, None) for mode in args.modes]
                cases += [("triggers", variant) for variant in args.variant]
                for mode, variant in cases:
                    sim.reset()
                    print(f"... N={n} rps={rps or '-'} {mode} {variant or ''}", file=sys.stderr, flush=True)
                    args.service_rps = rps
                    results.append(run_case(sim.base_url, args, n, mode, variant))
    report(results)
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
