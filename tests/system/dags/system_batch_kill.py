"""A batch whose worker is killed while it creates its predictions (``test_batch_worker_kill.py``).

One create a second, so the test can kill the worker between two creates; ``retries=1`` lets the scheduler retry it.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_provider_cometflux.operators.batch import CometFluxBatchOperator

PROMPTS = int(os.environ.get("COMETFLUX_SYSTEM_KILL_PROMPTS", "12"))

with DAG(dag_id="system_batch_create_kill", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    CometFluxBatchOperator(
        task_id="batch",
        prompts=[f"system create kill {i:03d} [sim:slow=5]" for i in range(PROMPTS)],
        creates_per_minute=60,
        deferrable=False,
        poll_interval=1.0,
        timeout=900,
        retries=1,
        retry_delay=timedelta(seconds=2),
    )
