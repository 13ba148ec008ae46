"""DAGs for the wrong-answer tests: one prediction, inline or deferred, its limits and prompt from the environment.

Each task has ``retries=1`` (and no delay), so a test can tell a failure that is final from one that is retried.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_provider_cometflux.operators.flux import CometFluxPredictionOperator
from airflow_provider_cometflux.sensors.prediction import CometFluxPredictionSensor

ENV = os.environ.get


def _dag(dag_id: str) -> DAG:
    return DAG(dag_id=dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False)


for path in ("inline", "deferred"):
    with _dag(f"it_wrong_{path}"):
        CometFluxPredictionOperator(
            task_id="generate",
            prompt=ENV("COMETFLUX_IT_PROMPT", "a lighthouse"),
            input={"output_format": "png"},
            output_path=ENV("COMETFLUX_IT_OUTPUT_PATH") or None,
            deferrable=path == "deferred",
            defer_after=0,
            poll_interval=0.3,
            timeout=float(ENV("COMETFLUX_IT_TIMEOUT", "60")),
            max_output_bytes=int(ENV("COMETFLUX_IT_MAX_BYTES", str(64 * 1024 * 1024))),
            download_timeout=float(ENV("COMETFLUX_IT_DOWNLOAD_TIMEOUT", "300")),
            retries=1,
            retry_delay=timedelta(seconds=0),
        )

with _dag("it_wrong_sensor"):
    CometFluxPredictionSensor(
        task_id="wait",
        prediction_id=ENV("COMETFLUX_IT_PREDICTION_ID", "none"),
        poke_interval=0.3,
        timeout=30,
        retries=1,
        retry_delay=timedelta(seconds=0),
    )
