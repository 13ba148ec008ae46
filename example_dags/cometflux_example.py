"""
Generate images with FLUX through CometAPI, keep durable copies, and use them downstream.

Two patterns:

* ``generate``: one operator creates the prediction, waits for it in the triggerer (deferrable) and copies
  the images into ``output_path``; ``describe`` reads the stored URIs and their metadata from XCom.
* ``submit`` + ``wait_for_image``: submit without waiting, then let a deferrable sensor wait for the
  prediction id that ``submit`` pushed to XCom.

The images land in ``<output_path>/<run id>/`` (not ``{{ ds }}``: a run triggered from the UI or the REST
API has no logical date); set the ``COMETFLUX_OUTPUT_PATH`` environment variable
(or the ``output_path`` param when triggering) to any ObjectStoragePath URI: ``file:///data/images``,
``s3://bucket/x``... In the Airflow UI (3.1+) each task instance has an *Images* tab and the run an *Image gallery*.
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import DAG, Param, task

from airflow_provider_cometflux.operators.flux import CometFluxPredictionOperator
from airflow_provider_cometflux.sensors.prediction import CometFluxPredictionSensor

OUTPUT_PATH = os.environ.get("COMETFLUX_OUTPUT_PATH", "file:///tmp/cometflux-images")
#: A folder per run, named after the run id (which every run has, unlike ``ds``) without its ``:``, ``+`` and ``.``.
RUN_FOLDER = "{{ run_id | replace(':', '') | replace('+', '') | replace('.', '') }}"

with DAG(
    dag_id="cometflux_example",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["cometapi", "flux", "example"],
    params={
        "prompt": Param("a lighthouse on a cliff at dawn, watercolour", type="string"),
        "output_path": Param(OUTPUT_PATH, type="string"),
    },
) as dag:
    generate = CometFluxPredictionOperator(
        task_id="generate",
        model="black-forest-labs/flux-schnell",
        prompt="{{ params.prompt }}",
        input={"aspect_ratio": "16:9", "num_outputs": 2, "output_format": "png"},
        output_path="{{ params.output_path }}/" + RUN_FOLDER,
        deferrable=True,
        defer_after=0,  # hand the wait to the triggerer at once; the default first polls 5 s in the worker
        poll_interval=2.0,
        timeout=600,
    )

    @task
    def describe(uris: list[str], ti=None) -> dict:
        """A downstream step: read the stored URIs, their checksums and the prediction from XCom."""
        images = ti.xcom_pull(task_ids="generate", key="images")
        prediction = ti.xcom_pull(task_ids="generate", key="prediction")
        for image in images:
            print(f"{image['uri']}: {image['bytes']} bytes, sha256 {image['sha256']}, {image['content_type']}")
        print(f"Prediction {prediction['id']} took {(prediction.get('metrics') or {}).get('predict_time')} s")
        return {"count": len(uris), "uris": uris}

    describe(generate.output)

    submit = CometFluxPredictionOperator(
        task_id="submit",
        model="black-forest-labs/flux-1.1-pro",
        prompt="a product photo of a ceramic mug, studio light",
        input={"output_format": "jpg", "safety_tolerance": 2},
        wait_for_completion=False,
    )

    wait_for_image = CometFluxPredictionSensor(
        task_id="wait_for_image",
        prediction_id="{{ ti.xcom_pull(task_ids='submit', key='prediction_id') }}",
        output_path="{{ params.output_path }}/" + RUN_FOLDER,
        deferrable=True,
        poke_interval=2.0,
        timeout=600,
    )

    submit >> wait_for_image
