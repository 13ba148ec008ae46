"""The DAG the browser test runs: a single prediction, mapped predictions and a batch with a refused prompt, all
stored, plus one prediction kept only as delivery URLs (shown while alive)."""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_cometflux.operators.batch import CometFluxBatchOperator
from airflow_provider_cometflux.operators.flux import CometFluxPredictionOperator

OUTPUT = os.environ.get("COMETFLUX_OUTPUT_PATH", "file:///tmp/cometflux-browser")
RUN_FOLDER = "{{ run_id | replace(':', '') | replace('+', '') | replace('.', '') }}"
#: The prompts the test looks for on the pages.
SINGLE = "a lighthouse on a cliff at dawn, watercolour"
MAPPED = ["a red bicycle leaning on a brick wall", "a bowl of ramen seen from above"]
BATCH = ["an isometric tiny greenhouse", "a paper boat on a puddle", "a refused prompt [sim:failed]"]
UNSTORED = "a fox in the snow, kept as delivery URLs"

with DAG("cometflux_browser", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    CometFluxPredictionOperator(
        task_id="single",
        prompt=SINGLE,
        input={"aspect_ratio": "16:9", "num_outputs": 2, "output_format": "png", "seed": 7},
        output_path=f"{OUTPUT}/{RUN_FOLDER}",
    )
    CometFluxPredictionOperator.partial(
        task_id="mapped",
        input={"aspect_ratio": "1:1", "output_format": "png"},
        output_path=f"{OUTPUT}/{RUN_FOLDER}",
    ).expand(prompt=MAPPED)
    CometFluxBatchOperator(
        task_id="batch",
        prompts=BATCH,
        input={"aspect_ratio": "3:2", "output_format": "png", "seed": 42},
        output_path=f"{OUTPUT}/{RUN_FOLDER}",
        fail_on_error=False,
    )
    CometFluxPredictionOperator(task_id="unstored", prompt=UNSTORED, input={"output_format": "png"})
