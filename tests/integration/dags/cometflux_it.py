"""DAGs for the integration tests: each covers one way of waiting, plus a downstream task reading XCom.

The output folder comes from ``COMETFLUX_IT_OUTPUT`` and each downstream task records what it read from XCom in
``COMETFLUX_IT_RESULTS/<dag_id>.json`` so the test can check what a real downstream task saw.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG, task

from airflow_provider_cometflux.operators.flux import CometFluxPredictionOperator
from airflow_provider_cometflux.sensors.prediction import CometFluxPredictionSensor

OUTPUT = os.environ.get("COMETFLUX_IT_OUTPUT", "file:///tmp/cometflux-it")
RESULTS = Path(os.environ.get("COMETFLUX_IT_RESULTS", "/tmp/cometflux-it-results"))
PROMPT = os.environ.get("COMETFLUX_IT_PROMPT", "a lighthouse at dawn")


@task
def record(upstream: str, ti=None, dag_run=None) -> None:
    """Read the upstream task's XComs as any downstream task would, and write them down for the test."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    seen = {
        key: ti.xcom_pull(task_ids=upstream, key=key)
        for key in ("return_value", "prediction_id", "prediction", "images", "_link_CometAPIPredictionLink")
    }
    (RESULTS / f"{dag_run.dag_id}.json").write_text(json.dumps(seen))


def _dag(dag_id: str) -> DAG:
    return DAG(dag_id=dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False)


with _dag("it_deferred"):
    generate = CometFluxPredictionOperator(
        task_id="generate",
        prompt=PROMPT,
        input={"num_outputs": 2, "output_format": "png"},
        output_path=OUTPUT + "/{{ dag.dag_id }}",
        deferrable=True,
        defer_after=0,
        poll_interval=0.5,
        timeout=60,
    )
    generate >> record("generate")

with _dag("it_inline"):
    generate = CometFluxPredictionOperator(
        task_id="generate",
        prompt=PROMPT,
        model="black-forest-labs/flux-1.1-pro",
        input={"output_format": "jpg"},
        deferrable=False,
        poll_interval=0.5,
        timeout=60,
    )
    generate >> record("generate")

for mode in ("poke", "reschedule", "deferrable"):
    with _dag(f"it_sensor_{mode}"):
        submit = CometFluxPredictionOperator(task_id="submit", prompt=PROMPT, wait_for_completion=False)
        wait = CometFluxPredictionSensor(
            task_id="wait",
            prediction_id="{{ ti.xcom_pull(task_ids='submit', key='prediction_id') }}",
            mode="reschedule" if mode == "reschedule" else "poke",
            deferrable=mode == "deferrable",
            poke_interval=0.5,
            timeout=60,
        )
        submit >> wait >> record("wait")

with _dag("it_timeout"):
    CometFluxPredictionOperator(
        task_id="generate",
        prompt=PROMPT,
        deferrable=os.environ.get("COMETFLUX_IT_DEFERRABLE", "true") == "true",
        defer_after=0,
        poll_interval=0.2,
        timeout=2,
    )

with _dag("it_defer_after"):
    generate = CometFluxPredictionOperator(
        task_id="generate",
        prompt=PROMPT,
        deferrable=True,
        defer_after=float(os.environ.get("COMETFLUX_IT_DEFER_AFTER", "10")),
        poll_interval=0.5,
        timeout=60,
    )
    generate >> record("generate")

with _dag("it_retry"):
    generate = CometFluxPredictionOperator(
        task_id="generate",
        prompt=PROMPT,
        deferrable=True,
        defer_after=0,
        poll_interval=0.5,
        timeout=60,
        retries=1,
        retry_delay=timedelta(seconds=1),
    )
    generate >> record("generate")

with _dag("it_input_image"):
    generate = CometFluxPredictionOperator(
        task_id="generate",
        model="black-forest-labs/flux-kontext-pro",
        prompt="make it a watercolour",
        input={"input_image": os.environ.get("COMETFLUX_IT_INPUT_IMAGE", "/nonexistent.png"), "output_format": "png"},
        output_path=OUTPUT + "/{{ dag.dag_id }}",
        deferrable=False,
        poll_interval=0.5,
        timeout=60,
    )
    generate >> record("generate")

# A store that is not the local disk: fsspec's in-memory filesystem, attached as Airflow's ``memory://`` store.
# ``airflow dags test`` runs every task in this one process, so the downstream task can read what was stored.
if os.environ.get("COMETFLUX_IT_MEMORY") == "1":
    from airflow.sdk.io.store import attach
    from fsspec.implementations.memory import MemoryFileSystem

    attach("memory", fs=MemoryFileSystem())


@task
def verify_stored(upstream: str, ti=None, dag_run=None) -> None:
    """Read every stored image back from the store and check it against the metadata in XCom."""
    import hashlib

    from airflow.sdk import ObjectStoragePath

    RESULTS.mkdir(parents=True, exist_ok=True)
    checked = []
    for meta in ti.xcom_pull(task_ids=upstream, key="images"):
        data = ObjectStoragePath(meta["uri"]).read_bytes()
        checked.append({**meta, "read_sha256": hashlib.sha256(data).hexdigest(), "read_bytes": len(data)})
    (RESULTS / f"{dag_run.dag_id}.json").write_text(json.dumps(checked))


for path in ("deferred", "inline"):
    with _dag(f"it_memory_{path}"):
        generate = CometFluxPredictionOperator(
            task_id="generate",
            prompt=PROMPT,
            input={"num_outputs": 2, "output_format": "webp"},
            output_path="memory://cometflux-it/{{ dag.dag_id }}/{{ ds }}",
            deferrable=path == "deferred",
            defer_after=0,
            poll_interval=0.5,
            timeout=60,
        )
        generate >> verify_stored("generate")


for mode in ("poke", "reschedule", "deferrable"):
    with _dag(f"it_sensor_timeout_{mode}"):
        submit = CometFluxPredictionOperator(task_id="submit", prompt="a cat [sim:stuck]", wait_for_completion=False)
        submit >> CometFluxPredictionSensor(
            task_id="wait",
            prediction_id="{{ ti.xcom_pull(task_ids='submit', key='prediction_id') }}",
            mode="poke" if mode == "deferrable" else mode,
            deferrable=mode == "deferrable",
            poke_interval=0.5,
            timeout=2,
            retries=1,  # a sensor's timeout is final in every mode: never retried
            retry_delay=timedelta(seconds=0),
        )
