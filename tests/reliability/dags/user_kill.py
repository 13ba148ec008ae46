"""The user-kill DAG, for ``test_triggerer_kill.py``: one task waits in the worker, one in the triggerer, each on a
prediction that never ends (``[sim:stuck]``) until the test marks both tasks failed, as a user would."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_cometflux.operators.flux import CometFluxPredictionOperator

with DAG(dag_id="user_kill", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    for path in ("inline", "deferred"):
        CometFluxPredictionOperator(
            task_id=path,
            prompt=f"user kill {path} [sim:stuck]",
            deferrable=path == "deferred",
            defer_after=0,
            poll_interval=1.0,
            timeout=600,
            retries=0,
        )
