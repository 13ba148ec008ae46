"""Provenance sidecars and batch manifests: what they hold, how they are written, and reading them back."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_cometflux.exceptions import CometFluxInputError, ProvenanceFormatError
from airflow_provider_cometflux.provenance import (
    SIDECAR_FORMAT,
    ImageRecord,
    ManifestRecord,
    PredictionRecord,
    load_manifest,
    load_sidecar,
    manifest_row,
    sidecar_record,
    write_manifest,
    write_sidecar,
)
from airflow_provider_cometflux.testing.pytest_plugin import SIMULATOR_API_KEY
from tests.unit.fakes import context

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
DATA_URI = "data:image/png;base64," + base64.b64encode(PNG).decode()


def prediction(pid: str = "p1abc", **extra: Any) -> dict[str, Any]:
    """An XCom ``prediction`` value as the completion path pushes it."""
    value: dict[str, Any] = {
        "id": pid,
        "model": "black-forest-labs/flux-dev",
        "version": "v1",
        "status": "succeeded",
        "error": None,
        "created_at": "2026-11-25T10:00:00.000Z",
        "started_at": "2026-11-25T10:00:01.000Z",
        "completed_at": "2026-11-25T10:00:04.000Z",
        "metrics": {"predict_time": 2.9, "image_count": 1},
        "output": [f"https://replicate.delivery/{pid}/out-0.png?token=abc"],
        "web_url": f"https://replicate.com/p/{pid}",
        "input": {"prompt": "a red fox", "seed": 7, "image": {"data_uri": True, "bytes": 72, "sha256": "ab"}},
    }
    value.update(extra)
    return value


def image_entry(folder: Path, pid: str = "p1abc", index: int = 0, data: bytes = PNG) -> dict[str, Any]:
    path = folder / f"{pid}-{index}.png"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {
        "uri": path.as_uri(),
        "source_url": f"https://replicate.delivery/{pid}/out-{index}.png?token=abc",
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "content_type": "image/png",
    }


def test_sidecar_record_holds_the_provenance_and_nothing_else(tmp_path):
    images = [image_entry(tmp_path)]
    record = sidecar_record(prediction(), images)
    assert record["format"] == SIDECAR_FORMAT == "cometflux.prediction/1"
    assert record["prediction_id"] == "p1abc"
    assert record["model"] == "black-forest-labs/flux-dev" and record["version"] == "v1"
    assert record["status"] == "succeeded" and record["error"] is None
    assert (record["created_at"], record["started_at"], record["completed_at"]) == (
        "2026-11-25T10:00:00.000Z",
        "2026-11-25T10:00:01.000Z",
        "2026-11-25T10:00:04.000Z",
    )
    assert record["metrics"] == {"predict_time": 2.9, "image_count": 1}
    assert record["input"]["seed"] == 7 and record["input"]["prompt"] == "a red fox"
    (image,) = record["images"]
    assert image == {
        "uri": images[0]["uri"],
        "sha256": images[0]["sha256"],
        "bytes": len(PNG),
        "content_type": "image/png",
        "source_url": "https://replicate.delivery/p1abc/out-0.png",  # no query: a signed URL's token stays out
    }
    assert "output" not in record and "logs" not in record
    json.dumps(record)  # JSON-ready as is


def test_sidecar_never_holds_a_data_uri_or_a_secret(tmp_path):
    from airflow.sdk.log import mask_secret

    mask_secret("sk-live-0000SECRET")
    value = prediction(
        input={
            "prompt": "a fox, key sk-live-0000SECRET",
            "input_image": DATA_URI,
            "extra_images": [DATA_URI, {"nested": DATA_URI}],
            "api_token": "plain-token-value",
        }
    )
    record = sidecar_record(value, [])
    text = json.dumps(record)
    assert "data:" not in text and "sk-live-0000SECRET" not in text and "plain-token-value" not in text
    expected = {"data_uri": True, "bytes": len(PNG), "sha256": hashlib.sha256(PNG).hexdigest()}
    assert record["input"]["input_image"] == expected
    assert record["input"]["extra_images"] == [expected, {"nested": expected}]
    assert record["input"]["prompt"] == "a fox, key ***"


def test_without_a_secrets_masker_sensitive_names_are_still_hidden(monkeypatch):
    try:
        from airflow.sdk._shared import secrets_masker
    except ImportError:  # Airflow 3.0/3.1
        from airflow.sdk.execution_time import secrets_masker  # type: ignore[no-redef]

    calls = []

    def no_masker(*args, **kwargs):
        calls.append(args)
        raise RuntimeError("Logging Configuration Error! No SecretsMasker found!")

    monkeypatch.setattr(secrets_masker, "redact", no_masker)
    record = sidecar_record(prediction(input={"prompt": "a fox", "extra": {"api_key": "k-123"}, "seed": 1}), [])
    assert calls  # the masker was asked, and failed
    assert record["input"] == {"prompt": "a fox", "extra": {"api_key": "***"}, "seed": 1}


@pytest.mark.parametrize("as_uri", [True, False])
def test_write_sidecar_names_it_after_the_prediction_and_replaces_it_on_retry(tmp_path, as_uri):
    folder = tmp_path / "images"
    record = sidecar_record(prediction(), [image_entry(folder)])
    uri = write_sidecar(folder.as_uri() if as_uri else str(folder), record)
    assert uri == (folder / "p1abc.json").as_uri()
    assert json.loads((folder / "p1abc.json").read_text()) == record
    again = dict(record, status="succeeded", metrics={"predict_time": 1.0})
    assert write_sidecar(folder.as_uri(), again) == uri
    assert json.loads((folder / "p1abc.json").read_text())["metrics"] == {"predict_time": 1.0}
    assert sorted(p.name for p in folder.iterdir()) == ["p1abc-0.png", "p1abc.json"]  # no temporary left


def test_write_sidecar_accepts_an_object_storage_path(tmp_path):
    from airflow.sdk import ObjectStoragePath

    folder = ObjectStoragePath((tmp_path / "osp").as_uri())
    uri = write_sidecar(folder, sidecar_record(prediction("p2"), []))
    assert load_sidecar(uri).prediction_id == "p2"


def test_a_failed_write_leaves_nothing_visible(tmp_path, monkeypatch):
    from airflow.sdk import ObjectStoragePath

    def broken_rename(self, target):
        raise OSError("disk gone")

    monkeypatch.setattr(ObjectStoragePath, "rename", broken_rename)
    with pytest.raises(OSError, match="disk gone"):
        write_sidecar(tmp_path, sidecar_record(prediction(), []))
    with pytest.raises(OSError, match="disk gone"):
        write_manifest(tmp_path, [manifest_row(0, "x", record=None, failure=None, sidecar_uri=None)])
    assert list(tmp_path.iterdir()) == []


def test_a_reader_never_sees_a_partial_sidecar(tmp_path):
    """Rewrite a large sidecar again and again while another thread reads it: every read is a whole one."""
    big = [image_entry(tmp_path / "img", index=i) for i in range(2000)]
    record = sidecar_record(prediction(), big)
    write_sidecar(tmp_path, record)
    stop = threading.Event()
    reads: list[int] = []
    errors: list[Exception] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                reads.append(len(load_sidecar(tmp_path / "p1abc.json").images))
            except Exception as exc:  # a partial file would fail to parse
                errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for _ in range(30):
            write_sidecar(tmp_path, record)
    finally:
        stop.set()
        thread.join()
    assert errors == [] and reads and set(reads) == {2000}


@pytest.mark.parametrize("pid", ["", "../escape", "a/b", None])
def test_a_sidecar_name_must_be_a_prediction_id(tmp_path, pid):
    record = dict(sidecar_record(prediction(), []), prediction_id=pid)
    with pytest.raises(CometFluxInputError):
        write_sidecar(tmp_path, record)
    assert list(tmp_path.iterdir()) == []


def test_load_sidecar_gives_typed_records(tmp_path):
    folder = tmp_path / "images"
    images = [image_entry(folder, index=0), image_entry(folder, index=1, data=PNG + b"1")]
    loaded = load_sidecar(write_sidecar(folder, sidecar_record(prediction(), images)))
    assert isinstance(loaded, PredictionRecord) and loaded.format == SIDECAR_FORMAT
    assert loaded.prediction_id == "p1abc" and loaded.model == "black-forest-labs/flux-dev"
    assert loaded.completed_at == "2026-11-25T10:00:04.000Z" and loaded.metrics["predict_time"] == 2.9
    assert loaded.input["seed"] == 7
    assert all(isinstance(image, ImageRecord) for image in loaded.images)
    for image in loaded.images:  # every image the sidecar names is on disk with that digest and size
        data = Path(image.uri.removeprefix("file://")).read_bytes()
        assert (hashlib.sha256(data).hexdigest(), len(data)) == (image.sha256, image.bytes)
    assert load_sidecar(folder / "p1abc.json") == loaded  # a local path reads the same


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ({"format": "cometflux.prediction/2", "prediction_id": "p"}, "'cometflux.prediction/2' is not one"),
        ({"prediction_id": "p"}, "no 'format' field"),
        ({"format": SIDECAR_FORMAT}, "no 'prediction_id'"),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_load_sidecar_refuses_what_it_cannot_read(tmp_path, content, fragment):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ProvenanceFormatError, match=fragment) as caught:
        load_sidecar(path)
    assert "p.json" in str(caught.value)


def batch_rows(folder: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Three prompts: two succeeded (sidecars written), one failed at the service."""
    rows, sidecars = [], []
    for index, pid in ((0, "pA"), (2, "pC")):
        record = sidecar_record(
            prediction(pid, input={"prompt": f"kite {index}", "seed": index}), [image_entry(folder, pid)]
        )
        uri = write_sidecar(folder, record)
        sidecars.append(uri)
        rows.append((index, manifest_row(index, f"kite {index}", record=record, failure=None, sidecar_uri=uri)))
    failure = {"index": 1, "prompt": "kite 1", "prediction_id": "pB", "status": "failed", "message": "refused"}
    rows.append((1, manifest_row(1, "kite 1", record=None, failure=failure, sidecar_uri=None)))
    return [row for _, row in sorted(rows, key=lambda item: item[0])], sidecars


def test_manifest_has_one_line_per_prompt_with_the_same_columns(tmp_path):
    rows, _ = batch_rows(tmp_path)
    uri = write_manifest(tmp_path, rows)
    assert uri == (tmp_path / "manifest.jsonl").as_uri()
    lines = (tmp_path / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 3
    parsed = [json.loads(line) for line in lines]
    assert [p["index"] for p in parsed] == [0, 1, 2]
    assert len({frozenset(p) for p in parsed}) == 1  # one table: every line has every column
    assert all(p["format"] == SIDECAR_FORMAT for p in parsed)
    assert parsed[1]["status"] == "failed" and parsed[1]["error"] == "refused" and parsed[1]["images"] == []
    assert parsed[1]["prediction_id"] == "pB" and parsed[1]["sidecar"] is None
    assert parsed[0]["status"] == "succeeded" and parsed[0]["sidecar"] == (tmp_path / "pA.json").as_uri()
    assert write_manifest(tmp_path, rows, name="run-2.jsonl").endswith("/run-2.jsonl")
    with pytest.raises(ValueError, match="plain file name"):
        write_manifest(tmp_path, rows, name="../up.jsonl")


def test_load_manifest_gives_typed_records_matching_the_files(tmp_path):
    rows, sidecars = batch_rows(tmp_path)
    records = load_manifest(write_manifest(tmp_path, rows))
    assert all(isinstance(r, ManifestRecord) for r in records)
    assert [(r.index, r.prompt, r.status, r.prediction_id) for r in records] == [
        (0, "kite 0", "succeeded", "pA"),
        (1, "kite 1", "failed", "pB"),
        (2, "kite 2", "succeeded", "pC"),
    ]
    assert [r.succeeded for r in records] == [True, False, True]
    assert records[1].error == "refused" and records[1].images == ()
    for record in (records[0], records[2]):
        sidecar = load_sidecar(record.sidecar)
        assert sidecar.prediction_id == record.prediction_id and sidecar.images == record.images
        assert record.input["seed"] == record.index
        (image,) = record.images
        data = Path(image.uri.removeprefix("file://")).read_bytes()
        assert hashlib.sha256(data).hexdigest() == image.sha256
    assert [r.sidecar for r in records if r.sidecar] == sidecars


def test_load_manifest_refuses_an_unknown_format_with_its_line(tmp_path):
    rows, _ = batch_rows(tmp_path)
    path = Path(write_manifest(tmp_path, rows).removeprefix("file://"))
    lines = path.read_text().splitlines()
    lines[2] = json.dumps(dict(json.loads(lines[2]), format="cometflux.prediction/9"))
    path.write_text("\n".join(lines) + "\n\n")
    with pytest.raises(ProvenanceFormatError, match=r"line 3: .*'cometflux.prediction/9' is not one"):
        load_manifest(path)
    path.write_text(lines[0] + "\n{not json\n")
    with pytest.raises(ProvenanceFormatError, match="line 2: not JSON"):
        load_manifest(path)


def test_pandas_reads_the_manifest_as_is(tmp_path):
    pd = pytest.importorskip("pandas")
    rows, _ = batch_rows(tmp_path)
    uri = write_manifest(tmp_path, rows)
    frame = pd.read_json(uri.removeprefix("file://"), lines=True)
    assert list(frame["index"]) == [0, 1, 2]
    assert list(frame["status"]) == ["succeeded", "failed", "succeeded"]
    assert frame.loc[1, "error"] == "refused"
    images = frame.explode("images").dropna(subset=["images"])
    assert sorted(image["uri"].rsplit("/", 1)[1] for image in images["images"]) == ["pA-0.png", "pC-0.png"]
    for image in images["images"]:
        data = Path(image["uri"].removeprefix("file://")).read_bytes()
        assert hashlib.sha256(data).hexdigest() == image["sha256"] and len(data) == image["bytes"]


def test_duckdb_reads_the_manifest_as_is(tmp_path):
    duckdb = pytest.importorskip("duckdb")
    rows, _ = batch_rows(tmp_path)
    path = write_manifest(tmp_path, rows).removeprefix("file://")
    con = duckdb.connect()
    try:
        got = con.execute(
            "SELECT index, status, prediction_id, len(images), input.seed FROM read_json_auto(?) ORDER BY index",
            [path],
        ).fetchall()
        shas = con.execute(
            "SELECT prediction_id, unnest(images).sha256 FROM read_json_auto(?) ORDER BY prediction_id", [path]
        ).fetchall()
    finally:
        con.close()
    assert got == [(0, "succeeded", "pA", 1, 0), (1, "failed", "pB", 0, None), (2, "succeeded", "pC", 1, 2)]
    assert shas == [(pid, hashlib.sha256(PNG).hexdigest()) for pid in ("pA", "pC")]


# Through the real path: the faces against the simulator on loopback write the sidecars and the manifest.


def test_the_operator_writes_a_sidecar_that_matches_its_images(cometapi_connection, tmp_path):
    from airflow_provider_cometflux.operators.flux import CometFluxPredictionOperator

    ctx = context()
    op = CometFluxPredictionOperator(
        task_id="generate",
        prompt="a red fox",
        input={"num_outputs": 2, "seed": 11, "output_format": "png"},
        output_path=(tmp_path / "out").as_uri(),
        poll_interval=0.1,
        deferrable=False,
    )
    uris = op.execute(ctx)
    pid = ctx["ti"].xcoms["prediction_id"]
    sidecar = load_sidecar(tmp_path / "out" / f"{pid}.json")
    assert sidecar.prediction_id == pid and sidecar.status == "succeeded"
    assert sidecar.model == "black-forest-labs/flux-schnell"
    assert sidecar.input["seed"] == 11 and sidecar.input["prompt"] == "a red fox"
    assert sidecar.created_at and sidecar.completed_at
    assert [image.uri for image in sidecar.images] == uris
    assert [dict(vars(image)) for image in sidecar.images] == [
        dict(entry, source_url=entry["source_url"].split("?")[0]) for entry in ctx["ti"].xcoms["images"]
    ]
    for image in sidecar.images:
        data = Path(image.uri.removeprefix("file://")).read_bytes()
        assert hashlib.sha256(data).hexdigest() == image.sha256 and len(data) == image.bytes
        assert image.content_type == "image/png"
    assert SIMULATOR_API_KEY not in (tmp_path / "out" / f"{pid}.json").read_text()  # the connection's key


def test_the_batch_operator_writes_a_manifest_and_a_sidecar_per_success(cometapi_connection, tmp_path):
    from airflow_provider_cometflux.operators.batch import CometFluxBatchOperator

    prompts = ["a red kite", "a blue kite [sim:failed=kite refused]", "a green kite"]
    ctx = context()
    results = CometFluxBatchOperator(
        task_id="generate",
        prompts=prompts,
        input={"output_format": "png", "seed": 5},
        output_path=str(tmp_path / "batch"),
        fail_on_error=False,
        poll_interval=0.1,
        deferrable=False,
    ).execute(ctx)
    records = load_manifest(tmp_path / "batch" / "manifest.jsonl")
    assert [(r.index, r.prompt) for r in records] == list(enumerate(prompts))
    assert [r.status for r in records] == ["succeeded", "failed", "succeeded"]
    assert "kite refused" in (records[1].error or "") and records[1].images == ()
    ids = ctx["ti"].xcoms["prediction_ids"]
    assert [r.prediction_id for r in records] == ids
    for record, uris in zip(records, results, strict=True):
        assert [image.uri for image in record.images] == uris
        if record.succeeded:
            assert record.sidecar is not None
            assert load_sidecar(record.sidecar).images == record.images
            assert record.input["prompt"] == record.prompt and record.input["seed"] == 5
    pd = pytest.importorskip("pandas")
    frame = pd.read_json(tmp_path / "batch" / "manifest.jsonl", lines=True)
    assert list(frame["prediction_id"]) == ids and list(frame["status"]) == [r.status for r in records]


def test_recording_the_same_verdicts_twice_adds_them_once(tmp_path):
    """A resumed review task may record its verdicts again: sidecars and manifest lines keep each one once."""
    from airflow_provider_cometflux.provenance import record_verdicts

    rows, sidecars = batch_rows(tmp_path)
    write_manifest(tmp_path, rows)
    verdict = {"index": 0, "verdict": "kept", "by": "reviewer", "at": "2026-12-07T10:00:00+00:00", "round": 1}
    for _ in range(2):
        record_verdicts(tmp_path, {"pA": [verdict]})
    assert load_sidecar(sidecars[0]).review == (verdict,)
    by_id = {row.prediction_id: row for row in load_manifest(tmp_path / "manifest.jsonl")}
    assert by_id["pA"].review == (verdict,) and by_id["pC"].review == ()
