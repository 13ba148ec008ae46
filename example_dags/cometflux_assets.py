"""
Asset-driven pipelines: a DAG that generates images updates an asset, and a downstream DAG runs on it.

``cometflux_asset_producer`` generates images into durable storage and lists the asset as an outlet; the operator
adds the stored URIs and the prediction id to the asset event's ``extra``. ``cometflux_asset_consumer`` is
scheduled on that asset and reads the URIs from the event that triggered it.
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import DAG, Asset, task

from airflow_provider_cometflux.operators.flux import CometFluxPredictionOperator

OUTPUT_PATH = os.environ.get("COMETFLUX_OUTPUT_PATH", "file:///tmp/cometflux-images")
#: A folder per run, named after the run id (which every run has, unlike ``ds``) without its ``:``, ``+`` and ``.``.
RUN_FOLDER = "{{ run_id | replace(':', '') | replace('+', '') | replace('.', '') }}"

#: The generated product images; the event's ``extra`` says which files are new.
PRODUCT_IMAGES = Asset("cometflux_product_images")

with DAG(
    dag_id="cometflux_asset_producer",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["cometapi", "flux", "example"],
):
    CometFluxPredictionOperator(
        task_id="generate_product_shot",
        prompt="a minimalist product shot of a glass teapot on linen",
        input={"aspect_ratio": "4:5", "output_format": "webp"},
        output_path=f"{OUTPUT_PATH}/products/{RUN_FOLDER}",
        outlets=[PRODUCT_IMAGES],
        deferrable=True,
    )

with DAG(
    dag_id="cometflux_asset_consumer",
    schedule=[PRODUCT_IMAGES],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["cometapi", "flux", "example"],
):

    @task
    def publish(triggering_asset_events=None) -> list[str]:
        """Read the new images from the asset events that triggered this run."""
        uris: list[str] = []
        for event in triggering_asset_events[PRODUCT_IMAGES]:
            uris.extend(event.extra.get("images", []))
            print(f"prediction {event.extra.get('prediction_id')} added {event.extra.get('images')}")
        return uris

    publish()
