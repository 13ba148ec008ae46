"""OpenLineage: dataset names for output folders, the prediction run facet, and the provider kept optional."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from airflow_provider_cometflux.lineage import (
    EXTERNAL_SOURCE,
    PREDICTION_FACET,
    dataset_name,
    operator_lineage,
)
from tests.unit.fakes import context

pytest.importorskip("airflow.providers.openlineage")

MODEL = "black-forest-labs/flux-schnell"


@pytest.mark.parametrize(
    ("folder", "expected"),
    [
        ("file:///data/images/", ("file", "/data/images")),
        ("file:///data/images", ("file", "/data/images")),
        ("/data/images/run-1", ("file", "/data/images/run-1")),
        ("file://nas01/share/images", ("file://nas01", "/share/images")),
        ("s3://my-bucket/flux/out/", ("s3://my-bucket", "flux/out")),
        ("s3://aws_default@my-bucket/flux", ("s3://my-bucket", "flux")),  # the connection id is not in the name
        ("s3a://my-bucket/flux", ("s3://my-bucket", "flux")),
        ("gs://my-bucket/a/b", ("gs://my-bucket", "a/b")),
        ("gcs://my-bucket/a/b", ("gs://my-bucket", "a/b")),
        ("s3://my-bucket", ("s3://my-bucket", "/")),
        ("abfs://container/dir", ("abfs://container", "dir")),
    ],
)
def test_output_folders_are_named_as_openlineage_names_object_storage(folder, expected):
    assert dataset_name(folder) == expected


def test_a_relative_folder_is_named_by_its_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert dataset_name("out/images") == ("file", str(tmp_path / "out" / "images"))


def test_local_names_match_the_airflow_file_asset_converter():
    """The common.io provider names ``file://`` assets; a folder reported by us must be the same dataset."""
    from airflow.providers.common.io.assets.file import convert_asset_to_openlineage
    from airflow.sdk import Asset

    theirs = convert_asset_to_openlineage(Asset(uri="file:///data/images"), None)
    assert dataset_name("file:///data/images") == (theirs.namespace, theirs.name)


def test_one_dataset_per_output_folder_and_the_prediction_ids_as_a_run_facet():
    lineage = operator_lineage(
        model=MODEL,
        prediction_ids=["p1", "p2", "", "p3"],
        output_folders=["s3://bucket/flux", "s3://bucket/flux/", "file:///data/out"],
    )
    assert [(d.namespace, d.name) for d in lineage.outputs] == [("s3://bucket", "flux"), ("file", "/data/out")]
    assert lineage.inputs == []
    facet = lineage.run_facets[PREDICTION_FACET]
    assert (facet.model, facet.predictionIds, facet.failed) == (MODEL, ["p1", "p2", "p3"], False)
    assert "externalQuery" not in lineage.run_facets  # several ids: only our facet lists them


def test_a_single_prediction_is_also_the_standard_external_query_facet():
    lineage = operator_lineage(model=MODEL, prediction_ids=["p1"], output_folders=["/data/out"], failed=True)
    external = lineage.run_facets["externalQuery"]
    assert (external.externalQueryId, external.source) == ("p1", EXTERNAL_SOURCE)
    assert lineage.run_facets[PREDICTION_FACET].failed is True


def test_without_an_output_folder_only_the_run_facet():
    lineage = operator_lineage(model=MODEL, prediction_ids=["p1"], output_folders=[])
    assert lineage.outputs == [] and lineage.inputs == []
    assert lineage.run_facets[PREDICTION_FACET].predictionIds == ["p1"]


def test_an_unknown_model_is_none_not_an_empty_name():
    lineage = operator_lineage(model="", prediction_ids=["p1"], output_folders=[])
    assert lineage.run_facets[PREDICTION_FACET].model is None


def test_the_facets_serialize_into_an_openlineage_event():
    from openlineage.client.event_v2 import Job, Run, RunEvent, RunState
    from openlineage.client.serde import Serde
    from openlineage.client.uuid import generate_new_uuid

    lineage = operator_lineage(model=MODEL, prediction_ids=["p1"], output_folders=["s3://bucket/flux"])
    event = RunEvent(
        eventType=RunState.COMPLETE,
        eventTime="2026-11-25T10:00:00Z",
        run=Run(runId=str(generate_new_uuid()), facets=lineage.run_facets),
        job=Job(namespace="default", name="dag.generate"),
        producer="test",
        outputs=lineage.outputs,
    )
    data = json.loads(Serde.to_json(event))
    facet = data["run"]["facets"][PREDICTION_FACET]
    assert facet["predictionIds"] == ["p1"] and facet["model"] == MODEL and facet["failed"] is False
    assert facet["_producer"] and facet["_schemaURL"].startswith("https://")
    assert data["run"]["facets"]["externalQuery"]["externalQueryId"] == "p1"
    assert data["outputs"] == [{"namespace": "s3://bucket", "name": "flux", "facets": {}}]


def test_the_facet_class_pickles_by_its_module_name():
    import pickle

    from airflow_provider_cometflux import lineage

    facet = operator_lineage(model=MODEL, prediction_ids=["p1"], output_folders=[]).run_facets[PREDICTION_FACET]
    assert type(facet) is lineage.CometFluxPredictionRunFacet
    assert pickle.loads(pickle.dumps(facet)) == facet


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[2],
    )


def test_importing_the_package_and_its_faces_imports_no_openlineage():
    proc = _python(
        """
        import sys
        import airflow_provider_cometflux.lineage, airflow_provider_cometflux.provenance
        import airflow_provider_cometflux.operators.flux, airflow_provider_cometflux.operators.batch
        import airflow_provider_cometflux.sensors.prediction
        # Airflow's provider discovery loads every provider's get_provider_info (and so its package): not ours
        discovery = {"airflow.providers.openlineage", "airflow.providers.openlineage.get_provider_info"}
        print(sorted(m for m in sys.modules if "openlineage" in m and m not in discovery))
        """
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "[]"


def test_without_the_provider_lineage_is_none_and_nothing_breaks():
    proc = _python(
        """
        import sys

        DISCOVERY = {"airflow.providers.openlineage", "airflow.providers.openlineage.get_provider_info"}

        class NoOpenLineage:
            def find_spec(self, name, path=None, target=None):
                # as if not installed, except the provider info Airflow's provider discovery reads
                if "openlineage" in name and name not in DISCOVERY:
                    raise ModuleNotFoundError(f"No module named {name!r}")
                return None

        sys.meta_path.insert(0, NoOpenLineage())
        from airflow_provider_cometflux.lineage import operator_lineage
        from airflow_provider_cometflux.operators.flux import CometFluxPredictionOperator

        op = CometFluxPredictionOperator(task_id="t", prompt="x", output_path="/tmp/x")
        print(operator_lineage(model="m/n", prediction_ids=["p"], output_folders=["/tmp/x"]))
        print(op.get_openlineage_facets_on_complete(None))
        """
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-2:] == ["None", "None"]  # after any log lines the release prints


def test_the_providers_extractor_reads_a_finished_operator(cometapi_connection, tmp_path):
    """The OpenLineage provider's own extractor, on an operator that ran against the simulator."""
    from airflow.providers.openlineage.extractors.base import DefaultExtractor

    from airflow_provider_cometflux.operators.flux import CometFluxPredictionOperator

    ctx = context()
    op = CometFluxPredictionOperator(
        task_id="generate",
        prompt="a red fox",
        output_path=(tmp_path / "out").as_uri(),
        poll_interval=0.1,
        deferrable=False,
    )
    op.execute(ctx)
    pid = ctx["ti"].xcoms["prediction_id"]
    lineage = DefaultExtractor(op).extract_on_complete(None)
    assert [(d.namespace, d.name) for d in lineage.outputs] == [("file", str(tmp_path / "out"))]
    assert lineage.run_facets[PREDICTION_FACET].predictionIds == [pid]
    assert lineage.run_facets[PREDICTION_FACET].model == MODEL
    failed = DefaultExtractor(op).extract_on_failure(None)
    assert failed.run_facets[PREDICTION_FACET].failed is True


def test_the_run_facet_carries_what_the_task_cost():
    cost = {"usd": 0.006, "images": 3, "predictions": 2, "reused": 1}
    lineage = operator_lineage(model=MODEL, prediction_ids=["p1"], output_folders=[], cost=cost)
    facet = lineage.run_facets[PREDICTION_FACET]
    assert (facet.costUsd, facet.images, facet.reusedPredictions) == (0.006, 3, 1)
    assert (
        operator_lineage(model=MODEL, prediction_ids=["p1"], output_folders=[]).run_facets[PREDICTION_FACET].costUsd
        is None
    )
