"""The triggerer-kill DAG: many independent deferred predictions, for ``test_triggerer_kill.py``.

Each task creates one prediction that stays in flight (``[sim:stuck]``) until the test ends it, and defers at
once. ``COMETFLUX_KILL_TASKS`` sets how many; the scheduler starts the one run as soon as the DAG is parsed.
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_cometflux.operators.flux import CometFluxPredictionOperator

TASKS = int(os.environ.get("COMETFLUX_KILL_TASKS", "24"))

with DAG(
    dag_id="triggerer_kill",
    schedule="@once",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_tasks=TASKS,
):
    for index in range(TASKS):
        CometFluxPredictionOperator(
            task_id=f"predict_{index:02d}",
            prompt=f"triggerer kill {index:02d} [sim:stuck]",
            deferrable=True,
            defer_after=0,
            poll_interval=1.0,
            timeout=600,
            retries=0,
        )
