"""The system suite's DAGs (``tests/system``): each is triggered by its scenario through the REST API.

Prompts carry simulator directives (``[sim:slow=S]``, ``[sim:stuck]``) so each scenario decides how long its
predictions take; ``COMETFLUX_SYSTEM_OUTPUT`` is the folder images are stored under.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_provider_cometflux.operators.batch import CometFluxBatchOperator
from airflow_provider_cometflux.operators.flux import CometFluxPredictionOperator

OUTPUT = os.environ.get("COMETFLUX_SYSTEM_OUTPUT", "/tmp/cometflux-system-output")
MAPPED = int(os.environ.get("COMETFLUX_SYSTEM_MAPPED", "60"))
MAPPED_SECONDS = int(os.environ.get("COMETFLUX_SYSTEM_MAPPED_SECONDS", "60"))
BATCH = int(os.environ.get("COMETFLUX_SYSTEM_BATCH", "40"))
BATCH_SECONDS = int(os.environ.get("COMETFLUX_SYSTEM_BATCH_SECONDS", "40"))
START = datetime(2026, 1, 1)

with DAG(dag_id="system_mapped", schedule=None, start_date=START, catchup=False, max_active_tasks=MAPPED):
    CometFluxPredictionOperator.partial(
        task_id="predict",
        deferrable=True,
        defer_after=0,
        poll_interval=2.0,
        timeout=900,
        retries=0,
    ).expand(prompt=[f"system mapped {i:03d} [sim:slow={MAPPED_SECONDS}]" for i in range(MAPPED)])

with DAG(dag_id="system_batch", schedule=None, start_date=START, catchup=False):
    CometFluxBatchOperator(
        task_id="batch",
        prompts=[f"system batch {i:03d} [sim:slow={BATCH_SECONDS}]" for i in range(BATCH)],
        input={"num_outputs": 1, "output_format": "png"},
        output_path=f"file://{OUTPUT}/batch",
        deferrable=True,
        poll_interval=2.0,
        timeout=900,
        retries=0,
    )

with DAG(dag_id="system_inline_retry", schedule=None, start_date=START, catchup=False):
    CometFluxPredictionOperator(
        task_id="inline",
        prompt="system inline retry [sim:slow=45]",
        deferrable=False,
        poll_interval=1.0,
        timeout=600,
        retries=1,
        retry_delay=timedelta(seconds=2),
    )

with DAG(dag_id="system_user_fail", schedule=None, start_date=START, catchup=False):
    CometFluxPredictionOperator(
        task_id="marked_failed",
        prompt="system marked failed [sim:stuck]",
        deferrable=True,
        defer_after=0,
        poll_interval=1.0,
        timeout=600,
        retries=0,
    )

with DAG(dag_id="system_stall", schedule=None, start_date=START, catchup=False):
    CometFluxPredictionOperator.partial(
        task_id="stalled",
        deferrable=True,
        defer_after=0,
        poll_interval=1.0,
        timeout=600,
        retries=0,
    ).expand(prompt=[f"system stall {i} [sim:slow=75]" for i in range(4)])
