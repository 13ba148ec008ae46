"""The README's table of models is generated from the schema (``scripts/models_table.py``), never hand-copied."""

from __future__ import annotations

import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_readmes_models_table_is_the_generated_one() -> None:
    script = runpy.run_path(str(ROOT / "scripts" / "models_table.py"))
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start, end = script["START"], script["END"]
    assert readme.count(start) == 1 and readme.count(end) == 1, "the README lost its models table markers"
    shown = readme.split(start, 1)[1].split(end, 1)[0].strip()
    assert shown == script["render"](), (
        "README.md's models table differs from schema.MODELS: run `PYTHONPATH=. python scripts/models_table.py` "
        "and paste its output between the markers."
    )


def test_the_table_has_a_row_per_model() -> None:
    from airflow_provider_cometflux.schema import MODELS

    rows = runpy.run_path(str(ROOT / "scripts" / "models_table.py"))["render"]().splitlines()[2:]
    assert [row.split(" | ")[0].strip("| `") for row in rows] == list(MODELS)
