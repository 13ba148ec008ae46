"""DAGs for the spend tests: reuse across runs (``reuse_path``), what each image cost, and ``max_cost_usd``.

``COMETFLUX_IT_RUN`` names the run's own output folder (a second run of the same DAG copies into a new one),
``COMETFLUX_IT_SEED`` the seed, ``COMETFLUX_IT_BUDGET`` the budget; each downstream task writes what it read from
XCom to ``COMETFLUX_IT_RESULTS/<dag_id>.json``.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG, task

from airflow_provider_cometflux.operators.batch import CometFluxBatchOperator
from airflow_provider_cometflux.operators.flux import CometFluxPredictionOperator

OUTPUT = os.environ.get("COMETFLUX_IT_OUTPUT", "file:///tmp/cometflux-it")
RESULTS = Path(os.environ.get("COMETFLUX_IT_RESULTS", "/tmp/cometflux-it-results"))
RUN = os.environ.get("COMETFLUX_IT_RUN", "first")
SEED = int(os.environ.get("COMETFLUX_IT_SEED", "7"))
BUDGET = float(os.environ.get("COMETFLUX_IT_BUDGET", "1.0"))
REUSE = OUTPUT + "/reuse-index"


@task
def record(upstream: str, map_indexes: list[int] | None = None, ti=None, dag_run=None) -> None:
    """Read the upstream task's XComs as any downstream task would, and write them down for the test."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    keys = ("return_value", "prediction", "predictions", "images", "cost", "prediction_id")
    if map_indexes is None:
        seen = {key: ti.xcom_pull(task_ids=upstream, key=key) for key in keys}
    else:
        seen = {key: [ti.xcom_pull(task_ids=upstream, key=key, map_indexes=i) for i in map_indexes] for key in keys}
    (RESULTS / f"{dag_run.dag_id}.json").write_text(json.dumps(seen))


def _dag(dag_id: str) -> DAG:
    return DAG(dag_id=dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False)


with _dag("it_reuse"):  # deferred, so the new success is added to the index after the trigger
    generate = CometFluxPredictionOperator(
        task_id="generate",
        prompt="a lighthouse at dawn",
        input={"seed": SEED, "num_outputs": 2, "output_format": "png"},
        output_path=OUTPUT + "/" + RUN,
        reuse_path=REUSE,
        max_cost_usd=0.01,
        deferrable=True,
        defer_after=0,
        poll_interval=0.3,
        timeout=60,
    )
    generate >> record("generate")

with _dag("it_reuse_batch"):
    generate = CometFluxBatchOperator(
        task_id="generate",
        prompts=["a fox", "an owl", "a hare"],
        input={"seed": SEED, "output_format": "png"},
        output_path=OUTPUT + "/" + RUN,
        reuse_path=REUSE,
        max_cost_usd=BUDGET,
        deferrable=False,
        poll_interval=0.3,
        timeout=60,
    )
    generate >> record("generate")

with _dag("it_reuse_mapped"):  # two mapped tasks with the same input, one index entry
    generate = CometFluxPredictionOperator.partial(
        task_id="generate",
        output_path=OUTPUT + "/" + RUN,
        reuse_path=REUSE,
        deferrable=False,
        poll_interval=0.3,
        timeout=60,
    ).expand(input=[{"prompt": "a heron", "seed": SEED}, {"prompt": "a heron", "seed": SEED}])
    generate >> record("generate", map_indexes=[0, 1])

with _dag("it_budget"):
    CometFluxPredictionOperator(
        task_id="generate",
        prompt="a lighthouse at dawn",
        input={"num_outputs": 4},
        output_path=OUTPUT + "/" + RUN,
        max_cost_usd=BUDGET,
        retries=2,  # a refusal is not retried
        timeout=60,
    )
