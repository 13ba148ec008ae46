"""
A nightly catalogue that pays once per image: ``reuse_path`` keeps an index of earlier successes, ``max_cost_usd``
caps what one run may spend, and XCom ``cost`` says what it did spend.

Every run asks for the same product shots. The first run creates them; a later run (a re-run, a backfill, a cleared
task) finds each prompt with the same model and the same whole input in ``<output_path>/reuse-index`` and copies the
stored images into its own folder without any request (its XCom ``cost`` shows them as ``reused`` at $0). Change a
prompt or a ``seed`` and only that image is created again. The seed is fixed per image: without a seed the same
prompt and settings also give back the stored image, so set a seed per variant you want.

``max_cost_usd`` fails the run before any request when its estimate (prompts x images x price, less what the index
serves) is above it; the prices are Replicate's public list prices unless the connection's ``prices`` extra (or the
operator's ``prices``) says what your account pays.
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import DAG, task

from airflow_provider_cometflux.operators.batch import CometFluxBatchOperator

OUTPUT_PATH = os.environ.get("COMETFLUX_OUTPUT_PATH", "file:///tmp/cometflux-images")
#: A folder per run, named after the run id (which every run has, unlike ``ds``) without its ``:``, ``+`` and ``.``.
RUN_FOLDER = "{{ run_id | replace(':', '') | replace('+', '') | replace('.', '') }}"

PRODUCTS = [
    "a ceramic teapot on a linen cloth, studio light",
    "a leather notebook on an oak desk, studio light",
    "a glass water bottle on a concrete shelf, studio light",
]

with DAG(
    dag_id="cometflux_spend",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["cometapi", "flux", "example"],
):
    shots = CometFluxBatchOperator(
        task_id="product_shots",
        prompts=PRODUCTS,
        model="black-forest-labs/flux-schnell",
        input={"aspect_ratio": "4:3", "output_format": "png", "seed": 1234},
        output_path=f"{OUTPUT_PATH}/catalogue/{RUN_FOLDER}",
        reuse_path=f"{OUTPUT_PATH}/catalogue/reuse-index",
        max_cost_usd=0.05,  # 3 images at flux-schnell's $0.003 fit; a list of thousands would be refused
        deferrable=True,
    )

    @task
    def report(ti=None) -> dict:
        """What the run spent: ``{"usd", "images", "predictions", "reused"}``."""
        cost = ti.xcom_pull(task_ids="product_shots", key="cost")
        print(f"${cost['usd']} for {cost['images']} images, {cost['reused']} of {cost['predictions']} reused")
        return cost

    shots >> report()
