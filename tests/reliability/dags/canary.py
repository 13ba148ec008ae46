"""The canary DAG: every way the provider uses the API key, through success and failure, for ``test_canary.py``.

The test gives ``cometapi_default`` a canary key the service accepts and ``cometapi_refused`` one it refuses
(and quotes back in its 401 message), then searches everything the run left behind for both.
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_cometflux.operators.flux import CometFluxPredictionOperator
from airflow_provider_cometflux.sensors.prediction import CometFluxPredictionSensor

OUTPUT = os.environ.get("COMETFLUX_CANARY_OUTPUT", "file:///tmp/cometflux-canary")
PROMPT = "a lighthouse at dawn"

with DAG(dag_id="canary", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    common = {"poll_interval": 0.5, "timeout": 60, "defer_after": 0, "retries": 0}
    for deferrable in (False, True):
        path = "deferred" if deferrable else "inline"
        CometFluxPredictionOperator(
            task_id=f"{path}_success",
            prompt=PROMPT,
            output_path=f"{OUTPUT}/{path}",
            deferrable=deferrable,
            **common,
        )
        CometFluxPredictionOperator(
            task_id=f"{path}_failed", prompt=f"{PROMPT} [sim:failed]", deferrable=deferrable, **common
        )
        CometFluxPredictionOperator(
            task_id=f"{path}_timeout",
            prompt=f"{PROMPT} [sim:stuck]",
            deferrable=deferrable,
            **{**common, "timeout": 3},
        )
        CometFluxPredictionOperator(
            task_id=f"{path}_poll_refused",
            prompt=f"{PROMPT} [sim:fault=get,status,status=401,times=all]",
            deferrable=deferrable,
            **common,
        )
        CometFluxPredictionOperator(
            task_id=f"{path}_wrong_key",
            prompt=PROMPT,
            cometapi_conn_id="cometapi_refused",
            deferrable=deferrable,
            **common,
        )

    submit = CometFluxPredictionOperator(task_id="submit", prompt=f"{PROMPT} [sim:slow=3]", wait_for_completion=False)
    for mode in ("poke", "reschedule", "deferrable"):
        submit >> CometFluxPredictionSensor(
            task_id=f"sensor_{mode}",
            prediction_id="{{ ti.xcom_pull(task_ids='submit', key='prediction_id') }}",
            mode="reschedule" if mode == "reschedule" else "poke",
            deferrable=mode == "deferrable",
            poke_interval=0.5,
            timeout=30,
        )
