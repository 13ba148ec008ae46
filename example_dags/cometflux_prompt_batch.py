"""
Many prompts in one task: the batch operator creates every prediction from the worker at the service's pace, then
one trigger watches them all (no worker slot held while the model runs).

It returns the stored URIs per prompt, in prompt order, and records each prompt's prediction (with its input) or
why it failed. The images land in ``<output_path>/prompt-batch/<run id>/`` with a ``manifest.jsonl`` (not
``{{ ds }}``: a run triggered from the UI or the REST API has no logical date). In the Airflow UI (3.1+) the task's
*Images* tab shows every prompt in order, a failed one with its error.
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import DAG, Param

from airflow_provider_cometflux.operators.batch import CometFluxBatchOperator

OUTPUT_PATH = os.environ.get("COMETFLUX_OUTPUT_PATH", "file:///tmp/cometflux-images")
#: A folder per run, named after the run id (which every run has, unlike ``ds``) without its ``:``, ``+`` and ``.``.
RUN_FOLDER = "{{ run_id | replace(':', '') | replace('+', '') | replace('.', '') }}"

with DAG(
    dag_id="cometflux_prompt_batch",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["cometapi", "flux", "example"],
    params={
        "prompts": Param(
            [
                "a red bicycle leaning on a brick wall, morning light",
                "a bowl of ramen seen from above, film photo",
                "an isometric illustration of a tiny greenhouse",
            ],
            type="array",
        ),
    },
):
    CometFluxBatchOperator(
        task_id="generate_batch",
        prompts="{{ params.prompts | tojson }}",
        model="black-forest-labs/flux-schnell",
        input={"aspect_ratio": "3:2", "output_format": "png", "seed": 42},
        output_path=f"{OUTPUT_PATH}/prompt-batch/{RUN_FOLDER}",
        deferrable=True,
        fail_on_error=False,  # a refused prompt is reported (XCom failures, the Images tab); the others are kept
    )
