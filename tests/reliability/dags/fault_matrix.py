"""The fault matrix DAGs: one independent task per fault of ``tests/reliability/fault_table.py``, per path.

``fault_matrix_inline`` waits in the worker, ``fault_matrix_deferred`` defers to the triggerer at once
(``defer_after=0``). The output folder of the download faults comes from ``COMETFLUX_FM_OUTPUT``.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_provider_cometflux.operators.flux import CometFluxPredictionOperator
from tests.reliability.fault_table import FAULTS, PATHS, dag_id, prompt

OUTPUT = os.environ.get("COMETFLUX_FM_OUTPUT", "file:///tmp/cometflux-fault-matrix")

for path in PATHS:
    with DAG(dag_id=dag_id(path), schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
        for fault in FAULTS:
            CometFluxPredictionOperator(
                task_id=fault.name,
                prompt=prompt(fault, path),
                cometapi_conn_id=fault.conn_id,
                deferrable=path == "deferred",
                defer_after=0,
                poll_interval=0.5,
                timeout=fault.timeout,
                output_path=f"{OUTPUT}/{path}" if fault.store else None,
                retries=fault.retries,
                retry_delay=timedelta(seconds=1),
            )
