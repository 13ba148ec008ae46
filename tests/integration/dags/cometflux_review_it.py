"""The review operator's integration DAG: a stored batch of four, reviewed by a person (through Airflow's HITL
REST API, as the Required Actions page answers), and a downstream task recording the images it received in
``COMETFLUX_IT_RESULTS/<dag_id>.json``."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG, task

from airflow_provider_cometflux._compat import hitl_supported
from airflow_provider_cometflux.operators.batch import CometFluxBatchOperator

OUTPUT = os.environ.get("COMETFLUX_OUTPUT_PATH", "file:///tmp/cometflux-review-it")
RESULTS = Path(os.environ.get("COMETFLUX_IT_RESULTS", "/tmp/cometflux-review-it-results"))
PROMPTS = ["a red kite over a beach", "a blue heron in reeds", "a green frog on a stone", "a yellow finch on a twig"]


@task
def publish(images: list[str], dag_run=None) -> None:
    """What a downstream task receives: the kept images only."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{dag_run.dag_id}.json").write_text(json.dumps(images))


def review_dag(dag_id: str, *, max_rounds: int) -> DAG:
    from airflow_provider_cometflux.operators.review import CometFluxReviewOperator

    with DAG(dag_id=dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:
        generate = CometFluxBatchOperator(
            task_id="generate",
            prompts=PROMPTS,
            input={"output_format": "png", "seed": 11},
            output_path=OUTPUT + "/{{ dag.dag_id }}",
            deferrable=False,
            poll_interval=0.3,
            timeout=60,
        )
        review = CometFluxReviewOperator(
            task_id="review",
            images=generate.output,
            subject="Which kites fly?",
            body="Keep the pictures good enough to publish.",
            max_rounds=max_rounds,
            poll_interval=0.3,
            timeout=60,
        )
        publish(review.output)
    return dag


if hitl_supported():  # Airflow 3.0 has no HITL: the folder's other DAGs must still parse there
    review_dag("it_review", max_rounds=1)
    review_dag("it_review_redo", max_rounds=2)
