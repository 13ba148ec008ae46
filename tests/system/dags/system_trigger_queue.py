"""The trigger-queue recipe (``test_trigger_queues.py``): every CometFlux trigger on the dedicated triggerer.

The tasks run on the Celery queue ``cometflux_work`` (served by a worker with ``[triggerer] queues_enabled``), and
give their triggers the triggerer queue ``cometflux`` (``trigger_queue``): a mapped operator, a batch, and a
``@task.cometflux`` function, all deferred at once.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import DAG, task

from airflow_provider_cometflux.operators.batch import CometFluxBatchOperator
from airflow_provider_cometflux.operators.flux import CometFluxPredictionOperator

OUTPUT = os.environ.get("COMETFLUX_SYSTEM_OUTPUT", "/tmp/cometflux-system-output")
WORK_QUEUE = "cometflux_work"
TRIGGER_QUEUE = "cometflux"
SECONDS = 30
#: ``retries=1``: a worker starved by a loaded machine may lose a task before it starts; on Airflow 3.3+ a retry
#: after the create reattaches to its prediction, so the creates stay one per prompt.
COMMON = {
    "deferrable": True,
    "poll_interval": 1.0,
    "timeout": 600,
    "retries": 1,
    "retry_delay": timedelta(seconds=2),
    "queue": WORK_QUEUE,
}

with DAG(dag_id="system_trigger_queue", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    CometFluxPredictionOperator.partial(task_id="mapped", defer_after=0, trigger_queue=TRIGGER_QUEUE, **COMMON).expand(
        prompt=[f"system queue mapped {i} [sim:slow={SECONDS}]" for i in range(4)]
    )

    CometFluxBatchOperator(
        task_id="batch",
        prompts=[f"system queue batch {i} [sim:slow={SECONDS}]" for i in range(3)],
        output_path=f"file://{OUTPUT}/queue-batch",
        defer_after=0,
        trigger_queue=TRIGGER_QUEUE,
        **COMMON,
    )

    @task.cometflux(defer_after=0, trigger_queue=TRIGGER_QUEUE, **COMMON)
    def drawn(subject: str) -> str:
        return f"system queue taskflow {subject} [sim:slow={SECONDS}]"

    drawn.expand(subject=["a", "b"])
