"""
Benchmark (c): worker-slot seconds and HTTP requests per prediction, in real ``airflow dags test`` runs.

One DAG per way of waiting, each with a single ``CometFluxPredictionOperator`` task, run against the simulator for a
short prediction (the model finishes in ``--short`` seconds) and a long one (``--long`` seconds):

* ``inline``: ``deferrable=False``, the worker polls until the end (the baseline);
* ``deferred``: ``deferrable=True, defer_after=0``, the trigger polls;
* ``defer_after``: ``deferrable=True`` with the default ``defer_after`` (5 s in the worker, then the trigger);
* ``defer_after+prefer_wait``: the same, also sending ``Prefer: wait=N`` on the create.

Worker-slot seconds are the time the task held a worker: the sum, over its runs (the first and each resume after
the trigger), of the span from Airflow's "Task started" to its "Task instance state updated" for that run, read from
the run's log. ``airflow dags test`` runs tasks in-process, so in a real deployment each resume also pays a task
start-up (typically seconds) that this understates: the figures favour deferring.
"""

from __future__ import annotations

import argparse
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.common import PYTHON, connection_env, print_machine, simulator_process, table

AIRFLOW = str(Path(PYTHON).with_name("airflow"))

MODES: dict[str, str] = {
    "inline": "deferrable=False",
    "deferred": "deferrable=True, defer_after=0",
    "defer_after": "deferrable=True",
    "defer_after+prefer_wait": "deferrable=True, prefer_wait=5",
}

DAG_TEMPLATE = textwrap.dedent(
    """
    import os
    from datetime import datetime
    from airflow.sdk import DAG
    from airflow_provider_cometflux.operators.flux import CometFluxPredictionOperator

    SECONDS = os.environ["BENCH_PREDICTION_SECONDS"]
    {dags}
    """
)
ONE_DAG = textwrap.dedent(
    """
    with DAG({dag_id!r}, schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
        CometFluxPredictionOperator(
            task_id="generate", prompt=f"a lighthouse [sim:slow={{SECONDS}}]", timeout=600, {options}
        )
    """
)

LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z?\s")


def _env(home: Path, dags: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_")}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        }
    )
    env.update(extra)
    return env


@contextmanager
def airflow_home(dags: Path) -> Any:
    """A throwaway AIRFLOW_HOME with a migrated SQLite database."""
    with tempfile.TemporaryDirectory(prefix="cometflux-bench-") as folder:
        home = Path(folder)
        proc = subprocess.run([AIRFLOW, "db", "migrate"], env=_env(home, dags), capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(proc.stdout[-2000:] + proc.stderr[-2000:])
        yield home


def _timestamp(line: str) -> float | None:
    match = LINE.match(line)
    if match is None:
        return None
    return datetime.fromisoformat(match.group(1)).timestamp()


def worker_segments(output: str, dag_id: str) -> list[tuple[float, float, str]]:
    """The (start, end, new state) of every run of ``dag_id.generate`` in the worker, from the log."""
    ti_id = None
    for line in output.splitlines():
        if f"<TaskInstance: {dag_id}.generate" in line and "[DAG TEST] running task" in line:
            found = re.search(r"ti_id=([0-9a-f-]+)", line)
            ti_id = found.group(1) if found else None
            break
    if ti_id is None:
        raise RuntimeError(f"no run of {dag_id}.generate in the output:\n{output[-3000:]}")
    segments: list[tuple[float, float, str]] = []
    started: float | None = None
    for line in output.splitlines():
        if ti_id not in line:
            continue
        when = _timestamp(line)
        if when is None:
            continue
        if "Task started" in line:
            started = when
        elif "Task instance state updated" in line and "new_state=" in line and started is not None:
            state = re.search(r"new_state=(\w+)", line)
            segments.append((started, when, state.group(1) if state else "?"))
            started = None
    return segments


def run_mode(home: Path, dags: Path, sim: Any, mode: str, seconds: float) -> dict[str, Any]:
    dag_id = f"bench_{mode.replace('+', '_')}"
    sim.reset()
    env = _env(home, dags, **connection_env(sim.base_url), BENCH_PREDICTION_SECONDS=str(seconds))
    proc = subprocess.run([AIRFLOW, "dags", "test", dag_id], env=env, capture_output=True, text=True, timeout=900)
    output = proc.stdout + proc.stderr
    with sqlite3.connect(home / "airflow.db") as db:
        row = db.execute(
            "SELECT state FROM task_instance WHERE dag_id = ? AND task_id = 'generate' ORDER BY start_date DESC",
            (dag_id,),
        ).fetchone()
    segments = worker_segments(output, dag_id)
    stats = sim.stats
    total = segments[-1][1] - segments[0][0] if segments else 0.0
    return {
        "mode": mode,
        "prediction_s": seconds,
        "state": row[0] if row else "?",
        "worker_slot_s": sum(end - start for start, end, _ in segments),
        "worker_runs": len(segments),
        "task_wall_s": total,
        "requests": stats["creates"] + stats["gets"] + stats["cancels"],
        "creates": stats["creates"],
        "gets": stats["gets"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", type=float, default=2.0, help="seconds the short prediction takes")
    parser.add_argument("--long", type=float, default=30.0, help="seconds the long prediction takes")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    args = parser.parse_args(argv)
    print_machine()
    print("# one prediction per run, poll_interval 2 s (the default), defer_after default (5 s) where used")
    results = []
    with tempfile.TemporaryDirectory(prefix="cometflux-bench-dags-") as folder:
        dags = Path(folder)
        body = "".join(
            ONE_DAG.format(dag_id=f"bench_{mode.replace('+', '_')}", options=MODES[mode]) for mode in args.modes
        )
        (dags / "bench_dags.py").write_text(DAG_TEMPLATE.format(dags=body))
        with airflow_home(dags) as home, simulator_process("--run-seconds", "1") as sim:
            for seconds in (args.short, args.long):
                for mode in args.modes:
                    print(f"... {mode}, {seconds:g} s prediction", file=sys.stderr, flush=True)
                    results.append(run_mode(home, dags, sim, mode, seconds))
    rows = [
        [
            r["mode"],
            r["prediction_s"],
            r["state"],
            r["worker_slot_s"],
            r["worker_runs"],
            r["task_wall_s"],
            r["requests"],
            f"{r['creates']} + {r['gets']}",
        ]
        for r in results
    ]
    headers = ["mode", "prediction s", "state", "worker-slot s", "worker runs", "task wall s", "requests", "create+GET"]
    print(table(headers, rows))
    print()
    for seconds in (args.short, args.long):
        inline = next((r for r in results if r["mode"] == "inline" and r["prediction_s"] == seconds), None)
        if inline is None:
            continue
        for r in results:
            if r["prediction_s"] == seconds and r["mode"] != "inline":
                saved = inline["worker_slot_s"] - r["worker_slot_s"]
                print(
                    f"{seconds:g} s prediction, {r['mode']}: {r['worker_slot_s']:.2f} worker-slot s against "
                    f"{inline['worker_slot_s']:.2f} inline ({saved:+.2f} s saved), {r['requests']} requests against "
                    f"{inline['requests']}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
