"""
Editing with reference images: make a character with flux-schnell, then three edits of it with flux-2-pro, each
given the character's stored image as a reference (``input_images``).

* ``character``: one flux-schnell image, copied into ``output_path``.
* ``edit``: three mapped flux-2-pro predictions (one per prompt of ``EDITS``), each with
  ``input={"input_images": character.output}``: the character task's stored URIs, resolved when the edit runs. The
  worker reads each stored file, checks it is an image, and sends it inline (as a data URI); the service cannot
  read a path of the worker's. The records (XCom ``prediction``, sidecars, manifests) keep the URIs as given, never
  the image data.
* ``show``: prints where every image is and what each edit was made from.

Every image lands in ``<output_path>/<run id>/``; in the Airflow UI (3.1+) the run's *Image gallery* shows the
character and its three edits, each with its prompt. Set ``COMETFLUX_OUTPUT_PATH`` (or the ``output_path`` param)
to any ObjectStoragePath URI: ``file:///data/images``, ``s3://bucket/x``...
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import DAG, Param, task

from airflow_provider_cometflux.operators.flux import CometFluxPredictionOperator

OUTPUT_PATH = os.environ.get("COMETFLUX_OUTPUT_PATH", "file:///tmp/cometflux-images")
#: A folder per run, named after the run id (which every run has, unlike ``ds``) without its ``:``, ``+`` and ``.``.
RUN_FOLDER = "{{ run_id | replace(':', '') | replace('+', '') | replace('.', '') }}"
#: The three edits of the character.
EDITS = [
    "the same character, now wearing a red winter coat, standing in falling snow",
    "the same character sitting at a cafe table, reading a newspaper, warm evening light",
    "the same character as a small clay figurine on a wooden desk, soft studio light",
]

with DAG(
    dag_id="cometflux_reference_edits",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["cometapi", "flux", "example"],
    params={
        "character": Param(
            "a friendly robot gardener with a straw hat, full body, plain background, storybook illustration",
            type="string",
        ),
        "output_path": Param(OUTPUT_PATH, type="string"),
    },
) as dag:
    character = CometFluxPredictionOperator(
        task_id="character",
        model="black-forest-labs/flux-schnell",
        prompt="{{ params.character }}",
        input={"aspect_ratio": "1:1", "output_format": "png"},
        output_path="{{ params.output_path }}/" + RUN_FOLDER,
        timeout=600,
    )

    edit = CometFluxPredictionOperator.partial(
        task_id="edit",
        model="black-forest-labs/flux-2-pro",
        # the character's stored image(s), read and sent inline by each edit's worker
        input={"input_images": character.output, "aspect_ratio": "match_input_image", "output_format": "png"},
        output_path="{{ params.output_path }}/" + RUN_FOLDER,
        timeout=600,
    ).expand(prompt=EDITS)

    @task
    def show(character_uris: list[str], edit_uris: list[list[str]], ti=None) -> dict:
        """Where each image is, and what each edit was made from (as recorded: URIs, never image data)."""
        print(f"character: {character_uris}")
        predictions = ti.xcom_pull(task_ids="edit", key="prediction", map_indexes=list(range(len(EDITS))))
        for prompt, uris, prediction in zip(EDITS, edit_uris, predictions, strict=True):
            print(f"{prompt!r}: {uris} from {prediction['input']['input_images']}")
        return {"character": character_uris, "edits": list(edit_uris)}

    show(character.output, edit.output)
