"""DAGs for the batch operator's integration tests: a small batch with one failing prompt, waited for in the
triggerer or in the worker, and a downstream task (run whatever the batch's state) recording what it read from
XCom in ``COMETFLUX_IT_RESULTS/<dag_id>.json``.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG, task

from airflow_provider_cometflux.operators.batch import CometFluxBatchOperator

OUTPUT = os.environ.get("COMETFLUX_IT_OUTPUT", "file:///tmp/cometflux-it")
RESULTS = Path(os.environ.get("COMETFLUX_IT_RESULTS", "/tmp/cometflux-it-results"))
PROMPTS = ["a red kite", "a blue kite [sim:failed=kite refused]", "a green kite", "a yellow kite"]


@task(trigger_rule="all_done")
def record(ti=None, dag_run=None) -> None:
    """Read the batch's XComs as any downstream task would, and write them down for the test."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    seen = {
        key: ti.xcom_pull(task_ids="generate", key=key)
        for key in ("return_value", "prediction_ids", "predictions", "failures", "images")
    }
    (RESULTS / f"{dag_run.dag_id}.json").write_text(json.dumps(seen))


def _dag(dag_id: str) -> DAG:
    return DAG(dag_id=dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False)


with _dag("it_batch_deferred"):
    (
        CometFluxBatchOperator(
            task_id="generate",
            prompts=PROMPTS,
            input={"output_format": "png", "num_outputs": 2},
            output_path=OUTPUT + "/{{ dag.dag_id }}",
            deferrable=True,
            defer_after=0,
            fail_on_error=False,
            poll_interval=0.3,
            timeout=60,
        )
        >> record()
    )

with _dag("it_batch_inline"):
    (
        CometFluxBatchOperator(
            task_id="generate",
            prompts=PROMPTS,
            deferrable=False,
            fail_on_error=True,
            poll_interval=0.3,
            timeout=60,
        )
        >> record()
    )
