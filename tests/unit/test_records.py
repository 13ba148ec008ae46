"""Nothing paid before a foreseeable storage failure; what a stored image, a mapped task or a failed prompt records."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_cometflux import storage
from airflow_provider_cometflux.completion import XCOM_PREDICTION, XCOM_PREDICTION_ID, quote_prompt
from airflow_provider_cometflux.contract import SIDECAR_FORMAT
from airflow_provider_cometflux.exceptions import (
    CometFluxBatchFailedError,
    CometFluxInputError,
    OutputStorageError,
    PredictionFailedError,
    RecordNotFoundError,
)
from airflow_provider_cometflux.operators.batch import CometFluxBatchOperator
from airflow_provider_cometflux.operators.flux import CometFluxPredictionOperator
from airflow_provider_cometflux.provenance import (
    load_manifest,
    load_manifests,
    load_record,
    manifest_row,
    write_manifest,
)
from tests.unit.fakes import context


def operator(**kwargs: Any) -> CometFluxPredictionOperator:
    options: dict[str, Any] = {"task_id": "generate", "poll_interval": 0.1, "deferrable": False}
    options.update(kwargs)
    return CometFluxPredictionOperator(**options)


def batch(**kwargs: Any) -> CometFluxBatchOperator:
    options: dict[str, Any] = {"task_id": "generate", "poll_interval": 0.1, "deferrable": False}
    options.update(kwargs)
    return CometFluxBatchOperator(**options)


def unwritable(tmp_path: Path) -> str:
    """A folder no one can create, root included: its parent is a regular file."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    return str(blocker / "images")


# -- 1. nothing paid before a foreseeable failure ---------------------------------------------------------------


def test_a_writable_folder_passes_and_keeps_no_probe(tmp_path):
    storage.check_writable(str(tmp_path / "new" / "folder"))
    assert (tmp_path / "new" / "folder").is_dir()
    assert list((tmp_path / "new" / "folder").iterdir()) == []


def test_a_memory_folder_passes():
    from airflow.sdk.io.store import attach
    from fsspec.implementations.memory import MemoryFileSystem

    fs = MemoryFileSystem()
    attach("memory", fs=fs)
    storage.check_writable("memory://cometflux-check/run")
    assert not [name for name in fs.find("/cometflux-check") if storage.PROBE_PREFIX in name]


@pytest.mark.parametrize("make", [operator, batch])
def test_an_unwritable_output_path_fails_without_retries_and_creates_nothing(cometapi_connection, tmp_path, make):
    folder = unwritable(tmp_path)
    task = make(prompt="a fox", output_path=folder) if make is operator else make(prompts=["a"], output_path=folder)
    with pytest.raises(CometFluxInputError) as caught:
        task.execute(context())
    message = str(caught.value)
    assert folder in message and "cannot be written to" in message and "Error" in message  # path and reason
    assert "Nothing was created or paid for" in message
    assert cometapi_connection.stats["creates"] == 0
    assert not cometapi_connection.predictions


def test_without_waiting_output_path_is_not_checked(cometapi_connection, tmp_path):
    operator(prompt="a fox", output_path=unwritable(tmp_path), wait_for_completion=False).execute(context())
    assert cometapi_connection.stats["creates"] == 1


@pytest.mark.cometapi_simulator(run_seconds=0.1)
def test_a_storage_failure_after_a_success_names_the_prediction_and_the_way_back(
    cometapi_connection, tmp_path, monkeypatch
):
    monkeypatch.setattr(storage, "check_writable", lambda folder: None)  # the store fails only after the create
    ctx = context()
    with pytest.raises(OutputStorageError) as caught:
        operator(prompt="a fox", output_path=unwritable(tmp_path)).execute(ctx)
    pid = ctx["ti"].xcoms[XCOM_PREDICTION_ID]
    message = str(caught.value)
    assert caught.value.prediction_id == pid and f"Prediction {pid} succeeded" in message
    assert "delivery URLs for about an hour" in message and "http" in message
    assert "Airflow 3.3+ a retry reattaches" in message and "before Airflow 3.3 a retry creates" in message
    assert ctx["ti"].xcoms[XCOM_PREDICTION]["status"] == "succeeded"  # recorded, its delivery URLs with it
    again = pickle.loads(pickle.dumps(caught.value))
    assert again.prediction_id == pid and str(again) == message


@pytest.mark.cometapi_simulator(run_seconds=0.1)
def test_a_batchs_storage_failure_is_a_failed_prompt_naming_its_prediction(cometapi_connection, tmp_path, monkeypatch):
    from airflow_provider_cometflux.completion import XCOM_FAILURES

    monkeypatch.setattr(storage, "check_writable", lambda folder: None)
    ctx = context()
    with pytest.raises(CometFluxBatchFailedError, match="about an hour"):
        batch(prompts=["a"], output_path=unwritable(tmp_path)).execute(ctx)
    (failure,) = ctx["ti"].xcoms[XCOM_FAILURES]
    assert (
        failure["status"] == "not_stored" and f"Prediction {failure['prediction_id']} succeeded" in failure["message"]
    )


# -- 2. records reachable from the images -----------------------------------------------------------------------


@pytest.mark.cometapi_simulator(run_seconds=0.1)
def test_load_record_finds_the_sidecar_of_a_stored_image(cometapi_connection, tmp_path):
    from airflow.sdk import ObjectStoragePath

    ctx = context()
    uris = operator(prompt="a fox", output_path=str(tmp_path)).execute(ctx)
    for image in (uris[0], ObjectStoragePath(uris[0])):
        record = load_record(image)
        assert record.prediction_id == ctx["ti"].xcoms[XCOM_PREDICTION_ID]
        assert record.input["prompt"] == "a fox" and record.images[0].uri == uris[0]


def test_load_record_says_clearly_when_there_is_none(tmp_path):
    image = tmp_path / "p1-0.webp"
    image.write_bytes(b"x")
    with pytest.raises(RecordNotFoundError, match=r"no record beside it .*p1\.json does not exist"):
        load_record(str(image))
    with pytest.raises(RecordNotFoundError, match="not an image this provider stored"):
        load_record(str(tmp_path / "holiday.jpeg"))
    with pytest.raises(FileNotFoundError):  # also what a caller of plain files catches
        load_record(str(image))


@pytest.mark.cometapi_simulator(run_seconds=0.1)
def test_a_mapped_prediction_writes_its_own_manifest(cometapi_connection, tmp_path):
    for map_index, prompt in enumerate(["a fox", "a kite"]):
        ctx = context()
        ctx["ti"].map_index = map_index
        operator(prompt=prompt, output_path=str(tmp_path)).execute(ctx)
    ctx = context()
    ctx["ti"].map_index = 2
    with pytest.raises(PredictionFailedError):
        operator(prompt="a cat [sim:failed=no cats]", output_path=str(tmp_path), input={"seed": 3}).execute(ctx)
    assert not (tmp_path / "manifest.jsonl").exists()
    (row,) = load_manifest(str(tmp_path / "manifest-1.jsonl"))
    assert row.index == 1 and row.prompt == "a kite" and row.succeeded and row.sidecar
    rows = load_manifests(str(tmp_path))
    assert [(row.index, row.status) for row in rows] == [(0, "succeeded"), (1, "succeeded"), (2, "failed")]
    failed = rows[2]
    assert failed.prediction_id and "no cats" in (failed.error or "")
    assert failed.model == "black-forest-labs/flux-schnell" and failed.input["seed"] == 3 and failed.created_at


def test_an_unmapped_prediction_writes_no_manifest(cometapi_connection, tmp_path):
    operator(prompt="a fox", output_path=str(tmp_path)).execute(context())
    assert load_manifests(str(tmp_path)) == []


def test_load_manifests_reads_every_manifest_of_a_folder_in_map_index_order(tmp_path):
    def rows(*prompts: str) -> list[dict[str, Any]]:
        return [
            manifest_row(i, p, record=None, failure={"status": "failed"}, sidecar_uri=None)
            for i, p in enumerate(prompts)
        ]

    write_manifest(tmp_path, rows("ten"), name="manifest-10.jsonl")
    write_manifest(tmp_path, rows("two"), name="manifest-2.jsonl")
    write_manifest(tmp_path, rows("batch", "batch"), name="manifest.jsonl")
    (tmp_path / "manifest-x.jsonl").write_text("not one of ours")
    (tmp_path / "notes.jsonl").write_text("nor this")
    assert [row.prompt for row in load_manifests(tmp_path)] == ["batch", "batch", "two", "ten"]
    assert load_manifests(tmp_path / "absent") == []


@pytest.mark.cometapi_simulator(run_seconds=0.1)
def test_failed_batch_rows_carry_the_model_the_input_and_the_creation_time(cometapi_connection, tmp_path):
    with pytest.raises(CometFluxBatchFailedError):
        batch(prompts=["a", "b [sim:failed=nope]"], input={"seed": 5}, output_path=str(tmp_path)).execute(context())
    lines = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    failed = lines[1]
    assert failed["format"] == SIDECAR_FORMAT and failed["status"] == "failed"
    assert failed["model"] == "black-forest-labs/flux-schnell"
    assert failed["input"] == {"prompt": "b [sim:failed=nope]", "seed": 5}
    assert failed["created_at"] and failed["prediction_id"]


def test_a_failed_rows_inline_image_is_recorded_as_its_size_and_digest():
    uri = "data:image/png;base64,iVBORw0KGgo="
    row = manifest_row(
        0,
        "a",
        record=None,
        failure={"status": "failed", "message": "no"},
        sidecar_uri=None,
        details={"model": "o/m", "input": {"prompt": "a", "image": uri, "api_key": "k"}, "created_at": "t"},
    )
    assert row["input"]["image"]["data_uri"] is True and "base64" not in json.dumps(row)
    assert row["input"]["api_key"] == "***" and row["model"] == "o/m" and row["created_at"] == "t"


def test_warnings_quote_prompts_whole_escaped_and_cut_only_at_the_stated_length():
    long = "a red fox jumping over a lazy dog in the snow at dawn, cinematic lighting, 35mm"
    assert quote_prompt(long) == repr(long)
    assert quote_prompt("fox\n\x1b[31mred") == "'fox\\n\\x1b[31mred'"
    quoted = quote_prompt("x" * 250)
    assert quoted == repr("x" * 200) + " (cut at 200 characters)"


@pytest.mark.cometapi_simulator(run_seconds=0.1)
def test_the_batch_failure_message_quotes_the_whole_prompt(cometapi_connection):
    prompt = "a very long prompt about a fox in the snow that goes well past sixty characters [sim:failed=nope]"
    with pytest.raises(CometFluxBatchFailedError) as caught:
        batch(prompts=[prompt]).execute(context())
    assert repr(prompt) in str(caught.value)
