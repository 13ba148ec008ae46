"""
A TaskFlow pipeline from rows of data to stored images: ``@task.cometflux`` turns each row into a prompt (and a
seed), one mapped task per row, and a downstream task reads the stored images back.

The decorated function runs in the worker and returns the prompt (a ``str``) or, as here, a whole model input (a
``dict`` with ``prompt``) merged over the decorator's ``input``; the task then creates the prediction, waits in the
triggerer and returns the stored URIs. The images land in ``<output_path>/taskflow/<run id>/`` (not ``{{ ds }}``:
a run triggered from the UI or the REST API has no logical date).
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from airflow.sdk import DAG, ObjectStoragePath, task

OUTPUT_PATH = os.environ.get("COMETFLUX_OUTPUT_PATH", "file:///tmp/cometflux-images")
#: A folder per run, named after the run id (which every run has, unlike ``ds``) without its ``:``, ``+`` and ``.``.
RUN_FOLDER = "{{ run_id | replace(':', '') | replace('+', '') | replace('.', '') }}"

with DAG(
    dag_id="cometflux_taskflow",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["cometapi", "flux", "example"],
):

    @task
    def products() -> list[dict[str, Any]]:
        """The rows to illustrate: in a real pipeline, a query or a file."""
        return [
            {"sku": "mug-01", "name": "enamel camping mug", "colour": "forest green"},
            {"sku": "lamp-07", "name": "brass desk lamp", "colour": "brushed gold"},
            {"sku": "chair-12", "name": "folding wooden chair", "colour": "natural oak"},
        ]

    @task.cometflux(
        model="black-forest-labs/flux-schnell",
        input={"aspect_ratio": "1:1", "output_format": "png"},
        output_path=f"{OUTPUT_PATH}/taskflow/{RUN_FOLDER}",
        deferrable=True,
    )
    def product_shot(product: dict[str, Any], backdrop: str) -> dict[str, Any]:
        """One row's prompt; a seed from the SKU, so a rerun draws the same picture."""
        prompt = f"studio product photo of a {product['colour']} {product['name']}, {backdrop}"
        return {"prompt": prompt, "seed": sum(map(ord, product["sku"]))}

    @task
    def catalogue(per_product: list[list[str]]) -> list[dict[str, Any]]:
        """Read every stored image back (here: its size), as a downstream step publishing them would."""
        entries = [{"uri": uri, "bytes": ObjectStoragePath(uri).stat().st_size} for uris in per_product for uri in uris]
        for entry in entries:
            print(f"{entry['uri']}: {entry['bytes']} bytes")
        return entries

    catalogue(product_shot.partial(backdrop="soft grey backdrop").expand(product=products()))
