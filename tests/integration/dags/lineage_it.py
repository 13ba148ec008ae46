"""DAGs for the lineage integration tests: every face with an ``output_path``, run with the OpenLineage provider's
file transport, so the test can read the events they emitted (and the sidecars and manifests they wrote).

The output folder comes from ``COMETFLUX_IT_OUTPUT``; each DAG writes below ``<output>/<dag_id>``.
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_cometflux.operators.batch import CometFluxBatchOperator
from airflow_provider_cometflux.operators.flux import CometFluxPredictionOperator
from airflow_provider_cometflux.sensors.prediction import CometFluxPredictionSensor

OUTPUT = os.environ.get("COMETFLUX_IT_OUTPUT", "file:///tmp/cometflux-it")
FOLDER = OUTPUT + "/{{ dag.dag_id }}"


def _dag(dag_id: str) -> DAG:
    return DAG(dag_id=dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False)


with _dag("it_lineage_deferred"):
    CometFluxPredictionOperator(
        task_id="generate",
        prompt="a lighthouse at dawn",
        input={"num_outputs": 2, "output_format": "png", "seed": 3},
        output_path=FOLDER,
        deferrable=True,
        defer_after=0,
        poll_interval=0.3,
        timeout=60,
    )

with _dag("it_lineage_batch"):
    CometFluxBatchOperator(
        task_id="generate",
        prompts=["a red kite", "a blue kite [sim:failed=kite refused]", "a green kite"],
        input={"output_format": "png"},
        output_path=FOLDER,
        deferrable=False,
        fail_on_error=False,
        poll_interval=0.3,
        timeout=60,
    )

with _dag("it_lineage_mapped"):
    CometFluxPredictionOperator.partial(
        task_id="generate",
        output_path=FOLDER,
        input={"output_format": "png"},
        deferrable=False,
        poll_interval=0.3,
        timeout=60,
    ).expand(prompt=["a fox", "an owl", "a hare"])

with _dag("it_lineage_sensor"):
    submit = CometFluxPredictionOperator(task_id="submit", prompt="a heron", wait_for_completion=False)
    submit >> CometFluxPredictionSensor(
        task_id="wait",
        prediction_id="{{ ti.xcom_pull(task_ids='submit', key='prediction_id') }}",
        output_path=FOLDER,
        poke_interval=0.3,
        timeout=60,
    )

with _dag("it_lineage_failed"):
    CometFluxPredictionOperator(
        task_id="generate",
        prompt="a wolf [sim:failed=wolf refused]",
        output_path=FOLDER,
        deferrable=False,
        poll_interval=0.3,
        timeout=60,
    )
