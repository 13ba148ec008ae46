"""
A batch of prompts with dynamic task mapping: one mapped task per prompt, all images in one folder per run.

Each mapped task instance creates its own prediction and waits in the triggerer, so a hundred prompts hold no
worker slots while the model runs; ``collect`` gathers every stored URI in prompt order. The folder is
``<output_path>/batch/<run id>/`` (not ``{{ ds }}``: a run triggered from the UI or the REST API has no logical
date). In the Airflow UI (3.1+) the run's *Image gallery* shows every mapped index in order.
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import DAG, task

from airflow_provider_cometflux.operators.flux import CometFluxPredictionOperator

OUTPUT_PATH = os.environ.get("COMETFLUX_OUTPUT_PATH", "file:///tmp/cometflux-images")
#: A folder per run, named after the run id (which every run has, unlike ``ds``) without its ``:``, ``+`` and ``.``.
RUN_FOLDER = "{{ run_id | replace(':', '') | replace('+', '') | replace('.', '') }}"

PROMPTS = [
    "a red bicycle leaning on a brick wall, morning light",
    "a bowl of ramen seen from above, film photo",
    "an isometric illustration of a tiny greenhouse",
]

with DAG(
    dag_id="cometflux_batch",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["cometapi", "flux", "example"],
):
    generated = CometFluxPredictionOperator.partial(
        task_id="generate",
        model="black-forest-labs/flux-schnell",
        input={"aspect_ratio": "1:1", "output_format": "png"},
        output_path=f"{OUTPUT_PATH}/batch/{RUN_FOLDER}",
        deferrable=True,
    ).expand(prompt=PROMPTS)

    @task
    def collect(per_prompt: list[list[str]]) -> list[str]:
        """Flatten the mapped results: one list of URIs per prompt, in prompt order."""
        uris = [uri for uris in per_prompt for uri in uris]
        print(f"{len(uris)} images for {len(PROMPTS)} prompts")
        return uris

    collect(generated.output)
