"""DAGs for the ``@task.cometflux`` integration tests: rows of data -> prompts -> mapped image tasks -> a downstream
task reading the stored images back.

The output folder comes from ``COMETFLUX_IT_OUTPUT``; the downstream task records what it read (XComs and the
stored files) in ``COMETFLUX_IT_RESULTS/<dag_id>.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, ObjectStoragePath, task

OUTPUT = os.environ.get("COMETFLUX_IT_OUTPUT", "file:///tmp/cometflux-it")
RESULTS = Path(os.environ.get("COMETFLUX_IT_RESULTS", "/tmp/cometflux-it-results"))

ROWS = [
    {"city": "Lisbon", "mood": "sunny", "seed": 1},
    {"city": "Oslo", "mood": "snowy", "seed": 2},
    {"city": "Kyoto", "mood": "rainy", "seed": 3},
]


@task
def rows() -> list[dict[str, Any]]:
    """The data the prompts are made from (a query, a file, an API in a real pipeline)."""
    return ROWS


@task
def read_images(per_row: list[list[str]], ti=None, dag_run=None) -> int:
    """Read every stored image back, with the XComs of the mapped image task, and write them down for the test."""
    indexes = list(range(len(per_row)))
    stored = [
        {"uri": uri, "bytes": len(data), "png": data.startswith(b"\x89PNG"), "sha256": hashlib.sha256(data).hexdigest()}
        for uris in per_row
        for uri in uris
        for data in [ObjectStoragePath(uri).read_bytes()]
    ]
    seen = {
        "return_value": list(per_row),
        **{
            key: list(ti.xcom_pull(task_ids="draw", key=key, map_indexes=indexes))
            for key in ("prediction_id", "prediction", "model_input", "images")
        },
        "stored": stored,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{dag_run.dag_id}.json").write_text(json.dumps(seen))
    return len(stored)


for path in ("inline", "deferred"):
    with DAG(dag_id=f"it_decorator_{path}", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):

        @task.cometflux(
            model="black-forest-labs/flux-schnell",
            input={"aspect_ratio": "1:1", "output_format": "png"},
            output_path=OUTPUT + "/{{ dag.dag_id }}/{{ ti.map_index }}",
            deferrable=path == "deferred",
            defer_after=0,
            poll_interval=0.5,
            timeout=60,
        )
        def draw(row: dict[str, Any], style: str) -> dict[str, Any]:
            return {"prompt": f"{row['city']} on a {row['mood']} morning, {style}", "seed": row["seed"]}

        read_images(draw.partial(style="gouache").expand(row=rows()))


with DAG(dag_id="it_decorator_bad_return", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):

    @task.cometflux(retries=2)  # a refused return value fails without retries
    def draw(row: dict[str, Any]) -> Any:
        return [row["city"]]  # a list: neither a prompt nor a model input

    read_images(draw.expand(row=rows()))
