"""
Benchmark (d): a batch of prompts through ``CometFluxBatchOperator`` in a real ``airflow dags test`` run, against a
simulator that answers 429 above ``--limit`` creates per minute (a sliding one-minute window, like Replicate's).

The floor is what the rate limit alone imposes: the last create cannot start before ``(prompts - 1) / limit``
minutes, and its prediction then takes ``--run-seconds``. Reported per way of running the batch:

* task wall time (from the task's first start to its end) against the floor;
* 429 answers the simulator sent;
* images lost: images expected (``prompts x num_outputs``) minus images returned, plus images returned under the
  wrong prompt (every prompt's images must come from the prediction created for that very prompt);
* worker-slot seconds (as in benchmark c) and requests per image.

Ways of running it: ``deferred`` (``deferrable=True``: the worker creates every prediction, then one trigger holding
the ids only watches them through the triggerer's shared poller) and ``inline`` (``deferrable=False``: the worker
creates and watches).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

from benchmarks.bench_worker_slots import AIRFLOW, _env, airflow_home, worker_segments
from benchmarks.common import connection_env, print_machine, simulator_process, table, target

MODES: dict[str, str] = {
    "deferred": "deferrable=True",
    "inline": "deferrable=False",
}
#: The target: within 10% of the rate-limit floor, no image lost.
MAX_OVER_FLOOR = 0.10

DAG_TEMPLATE = textwrap.dedent(
    """
    import os
    from datetime import datetime
    from airflow.sdk import DAG
    from airflow_provider_cometflux.operators.batch import CometFluxBatchOperator

    PROMPTS = [f"bench prompt {{i}}" for i in range(int(os.environ["BENCH_PROMPTS"]))]
    {dags}
    """
)
ONE_DAG = textwrap.dedent(
    """
    with DAG({dag_id!r}, schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
        CometFluxBatchOperator(
            task_id="generate",
            prompts=PROMPTS,
            input={{"num_outputs": {outputs}}},
            creates_per_minute={rate},
            timeout=3600,
            {options},
        )
    """
)


def _xcom(db: Path, dag_id: str, key: str) -> Any:
    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT value FROM xcom WHERE dag_id = ? AND task_id = 'generate' AND key = ? "
            "ORDER BY timestamp DESC LIMIT 1",
            (dag_id, key),
        ).fetchone()
    if row is None:
        return None
    value = row[0]
    return json.loads(value) if isinstance(value, (str, bytes)) else value


def run_mode(home: Path, dags: Path, sim: Any, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    dag_id = f"bench_batch_{mode}"
    sim.reset()
    env = _env(home, dags, **connection_env(sim.base_url), BENCH_PROMPTS=str(args.prompts))
    timeout = args.prompts * 60 / args.limit * 3 + 600
    proc = subprocess.run([AIRFLOW, "dags", "test", dag_id], env=env, capture_output=True, text=True, timeout=timeout)
    output = proc.stdout + proc.stderr
    segments = worker_segments(output, dag_id)
    result = _xcom(home / "airflow.db", dag_id, "return_value") or []
    ids = _xcom(home / "airflow.db", dag_id, "prediction_ids") or []
    predictions = sim.control("predictions")
    stats = sim.stats
    expected = args.prompts * args.outputs
    returned = sum(len(urls) for urls in result)
    misplaced = 0
    for index, urls in enumerate(result):
        pid = ids[index] if index < len(ids) else None
        prompt = (predictions.get(pid) or {}).get("input", {}).get("prompt") if pid else None
        if urls and (prompt != f"bench prompt {index}" or not all(f"/files/{pid}/" in url for url in urls)):
            misplaced += len(urls)
    floor = (args.prompts - 1) * 60 / args.limit + args.run_seconds
    wall = segments[-1][1] - segments[0][0] if segments else float("nan")
    requests = stats["creates"] + stats["gets"] + stats["cancels"]
    return {
        "mode": mode,
        "wall_s": wall,
        "floor_s": floor,
        "over_floor": wall / floor - 1,
        "rate_limited": stats["rate_limited"],
        "created": stats["created"],
        "images_lost": expected - returned + misplaced,
        "worker_slot_s": sum(end - start for start, end, _ in segments),
        "worker_runs": len(segments),
        "requests_per_image": requests / max(1, returned),
        "gets": stats["gets"],
        "exit": proc.returncode,
        "tail": "" if proc.returncode == 0 else output[-3000:],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--limit", type=int, default=600, help="the simulator's creates per minute")
    parser.add_argument("--rate", type=float, default=None, help="the operator's creates_per_minute (default: limit)")
    parser.add_argument("--run-seconds", type=float, default=5.0, help="how long each prediction takes")
    parser.add_argument("--outputs", type=int, default=1, help="num_outputs per prompt")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    args = parser.parse_args(argv)
    rate = args.rate or args.limit
    print_machine()
    print(
        f"# {args.prompts} prompts x {args.outputs} image(s), {args.run_seconds:g} s per prediction; simulator "
        f"limited to {args.limit} creates/min (sliding minute), operator creates_per_minute={rate:g}"
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="cometflux-bench-dags-") as folder:
        dags = Path(folder)
        body = "".join(
            ONE_DAG.format(dag_id=f"bench_batch_{mode}", outputs=args.outputs, rate=rate, options=MODES[mode])
            for mode in args.modes
        )
        (dags / "bench_batch_dags.py").write_text(DAG_TEMPLATE.format(dags=body))
        limits = ("--run-seconds", str(args.run_seconds), "--rate-limit-per-minute", str(args.limit))
        with airflow_home(dags) as home, simulator_process(*limits) as sim:
            for mode in args.modes:
                print(f"... {mode}", file=sys.stderr, flush=True)
                results.append(run_mode(home, dags, sim, mode, args))
    headers = ["mode", "wall s", "floor s", "over floor", "429s", "created", "images lost", "worker-slot s"]
    headers += ["worker runs", "requests/image"]
    rows = [
        [
            r["mode"],
            r["wall_s"],
            r["floor_s"],
            f"{100 * r['over_floor']:.1f}%",
            r["rate_limited"],
            r["created"],
            r["images_lost"],
            r["worker_slot_s"],
            r["worker_runs"],
            r["requests_per_image"],
        ]
        for r in results
    ]
    print(table(headers, rows))
    print()
    for r in results:
        met = r["over_floor"] <= MAX_OVER_FLOOR and r["images_lost"] == 0
        print(
            f"target {r['mode']}: within {100 * r['over_floor']:.1f}% of the floor (<= 10%), {r['images_lost']} images "
            f"lost (= 0): {target(met)}"
        )
        if r["tail"]:
            print(r["tail"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
