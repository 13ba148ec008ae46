"""The README's first DAG, taken from README.md itself and run as written with ``airflow dags test``."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from airflow_provider_cometflux.testing.pytest_plugin import SIMULATOR_API_KEY
from airflow_provider_cometflux.testing.simulator.cli import DEFAULT_API_KEY

README = Path(__file__).parents[2] / "README.md"
HEADING = "## Your first DAG"
MARKER = "<!-- first-dag"
PNG = b"\x89PNG\r\n\x1a\n"


def section(text: str, heading: str) -> str:
    """The text under ``heading``, up to the next heading of the same level."""
    start = text.index(heading + "\n")
    following = re.search(r"^## ", text[start + len(heading) :], re.MULTILINE)
    return text[start : start + len(heading) + following.start()] if following else text[start:]


def first_dag() -> tuple[str, str]:
    """The DAG id and the code of the python block marked ``first-dag`` under the first-DAG heading."""
    under = section(README.read_text(), HEADING)
    marked = under[under.index(MARKER) :]
    match = re.search(r"```python\n(.*?)```", marked, re.DOTALL)
    assert match, f"no python block after {MARKER} under {HEADING!r} in README.md"
    code = match.group(1)
    dag_id = re.search(r'with DAG\(\s*"([^"]+)"', code)
    assert dag_id, "the README's first DAG names no DAG id"
    return dag_id.group(1), code


def test_the_readme_commands_use_the_key_the_simulator_accepts():
    under = section(README.read_text(), HEADING)
    assert f'"password": "{DEFAULT_API_KEY}"' in under and DEFAULT_API_KEY == SIMULATOR_API_KEY
    assert f"airflow dags test {first_dag()[0]}" in under


def test_the_readme_first_dag_runs_as_written(dags_test, cometapi_simulator, tmp_path):
    dag_id, code = first_dag()
    folder = tmp_path / "readme_dags"
    folder.mkdir()
    (folder / "flux_first.py").write_text(code)  # the README says: save it as dags/flux_first.py

    result = dags_test(dag_id, folder=folder)

    assert result.returncode == 0, result.output[-4000:]
    assert result.states == {"generate": "success", "use": "success"}, result.output[-4000:]
    # the images are where the README says: $COMETFLUX_OUTPUT_PATH/<run folder>/<prediction id>-<n>.png
    uris = result.xcom("generate")
    pid = result.xcom("generate", "prediction_id")
    assert isinstance(uris, list) and len(uris) == 2  # num_outputs=2
    run_folder = re.sub(r"[:+.]", "", result.run_id)
    stored = tmp_path / "images" / run_folder
    assert [urlsplit(uri).path for uri in uris] == [str(stored / f"{pid}-{n}.png") for n in range(2)]
    for n in range(2):
        assert (stored / f"{pid}-{n}.png").read_bytes().startswith(PNG)
    assert (stored / f"{pid}.json").exists()  # the provenance sidecar beside them
    assert result.xcom("use") == uris  # the downstream task got the stored URIs
    prediction = result.xcom("generate", "prediction")
    assert prediction["status"] == "succeeded" and prediction["input"]["aspect_ratio"] == "16:9"
    assert prediction["input"]["prompt"] == "a lighthouse on a cliff at dawn, watercolour"
    assert cometapi_simulator.stats["created"] == 1
