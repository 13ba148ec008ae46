"""The contract names what tasks leave behind; the writers and the readers agree with it."""

from __future__ import annotations

import dataclasses

import pytest

from airflow_provider_cometflux import contract
from airflow_provider_cometflux.provenance import ManifestRecord, PredictionRecord, manifest_row, sidecar_record
from airflow_provider_cometflux.storage import StoredImage
from tests.unit.test_provenance import prediction

IMAGE = {"uri": "file:///d/p1abc-0.png", "source_url": None, "sha256": "ab", "bytes": 3, "content_type": "image/png"}


def test_xcom_images_entries_have_the_contract_fields() -> None:
    assert tuple(field.name for field in dataclasses.fields(StoredImage)) == contract.IMAGE_FIELDS


def test_sidecars_have_the_contract_fields_and_read_back() -> None:
    record = sidecar_record(prediction(), [IMAGE])
    assert set(record) == set(contract.SIDECAR_FIELDS)
    assert list(record["images"][0]) == list(contract.RECORD_IMAGE_FIELDS)
    assert set(contract.SIDECAR_FIELDS) - {"prediction_id"} <= {f.name for f in dataclasses.fields(PredictionRecord)}


@pytest.mark.parametrize("succeeded", [True, False])
def test_every_manifest_line_has_every_contract_field(succeeded: bool) -> None:
    record = sidecar_record(prediction(), [IMAGE]) if succeeded else None
    failure = None if succeeded else dict(zip(contract.FAILURE_FIELDS, (0, "x", None, "failed", "no"), strict=True))
    row = manifest_row(0, "x", record=record, failure=failure, sidecar_uri=None)
    assert list(row) == list(contract.MANIFEST_FIELDS)
    assert set(contract.MANIFEST_FIELDS) == {f.name for f in dataclasses.fields(ManifestRecord)}


def test_stored_names_read_back() -> None:
    name = contract.stored_image_name("p1abc", 2, "webp")
    assert name == "p1abc-2.webp" and contract.parse_stored_image_name(name) == ("p1abc", 2, "webp")
    assert contract.parse_stored_image_name("p1abc-2.bin") is None
    assert contract.parse_stored_image_name("../p1abc-2.png") is None
    assert contract.sidecar_name("p1abc") == "p1abc.json"


@pytest.mark.parametrize(
    ("map_index", "name"), [(None, "manifest.jsonl"), (-1, "manifest.jsonl"), (3, "manifest-3.jsonl")]
)
def test_manifest_name(map_index: int | None, name: str) -> None:
    assert contract.manifest_name(map_index) == name


def test_formats_extensions_and_content_types_agree() -> None:
    for ext, content_type in contract.FORMATS.values():
        assert contract.CONTENT_TYPES[ext] == content_type and contract.EXTENSIONS[content_type] == ext
