"""Image inputs sent inline: paths, file:// and storage URIs, task outputs; counts, sizes and content, per field."""

from __future__ import annotations

import base64
import io

import pytest

from airflow_provider_cometflux import schema
from airflow_provider_cometflux.exceptions import CometFluxInputError
from airflow_provider_cometflux.inputs import check_request_size, inline_images, sniff
from airflow_provider_cometflux.storage import as_storage_path

PRO = "black-forest-labs/flux-2-pro"
DEV2 = "black-forest-labs/flux-2-dev"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 8
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 8
GIF = b"GIF89a" + b"\x00" * 8
WEBP = b"RIFF\x10\x00\x00\x00WEBPVP8 "


@pytest.fixture
def memory_store():
    """Attach fsspec's in-memory filesystem as Airflow's ``memory://`` object store (a store that is not disk)."""
    from airflow.sdk.io.store import attach
    from fsspec.implementations.memory import MemoryFileSystem

    return attach("memory", fs=MemoryFileSystem())


def data_uri(mime: str, raw: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(raw).decode()}"


@pytest.mark.parametrize(
    ("head", "mime"),
    [(PNG, "image/png"), (JPEG, "image/jpeg"), (GIF, "image/gif"), (WEBP, "image/webp"), (b"hello", None)],
)
def test_content_is_sniffed(head, mime):
    assert sniff(head) == mime


def test_every_kind_of_reference_becomes_what_the_service_reads(tmp_path, memory_store):
    (tmp_path / "a.png").write_bytes(PNG)
    (tmp_path / "b.bin").write_bytes(JPEG)  # the content decides, not the name
    as_storage_path("memory://cometflux-inputs/c.webp").write_bytes(WEBP)
    given = [
        str(tmp_path / "a.png"),
        f"file://{tmp_path}/b.bin",
        "memory://cometflux-inputs/c.webp",
        as_storage_path(f"file://{tmp_path}/a.png"),
        "https://example.com/d.png",
        data_uri("image/gif", GIF),
    ]
    out = inline_images(PRO, {"prompt": "p", "input_images": given})
    assert out["input_images"] == [
        data_uri("image/png", PNG),
        data_uri("image/jpeg", JPEG),
        data_uri("image/webp", WEBP),
        data_uri("image/png", PNG),
        "https://example.com/d.png",
        data_uri("image/gif", GIF),
    ]
    assert out["prompt"] == "p"


def test_single_image_inputs_and_a_tasks_one_item_output(tmp_path):
    (tmp_path / "a.png").write_bytes(PNG)
    model_input = {"image": str(tmp_path / "a.png"), "input_image": [f"file://{tmp_path}/a.png"], "image_prompt": None}
    out = inline_images("black-forest-labs/flux-dev", model_input)
    assert out["image"] == out["input_image"] == data_uri("image/png", PNG)
    assert out["image_prompt"] is None
    with pytest.raises(CometFluxInputError, match=r"^input\.input_image: 2 images are not allowed; expected one"):
        inline_images(PRO, {"input_image": ["https://x/a.png", "https://x/b.png"]})


def test_a_batchs_outputs_are_flattened_in_order(tmp_path):
    (tmp_path / "a.png").write_bytes(PNG)
    (tmp_path / "b.jpg").write_bytes(JPEG)
    batch_output = [[str(tmp_path / "a.png")], [], [str(tmp_path / "b.jpg"), "https://x/c.png"]]
    out = inline_images(PRO, {"input_images": batch_output})
    assert out["input_images"] == [data_uri("image/png", PNG), data_uri("image/jpeg", JPEG), "https://x/c.png"]


def test_the_models_count_limit_applies_before_any_file_is_read(tmp_path):
    missing = [str(tmp_path / f"none-{i}.png") for i in range(5)]
    match = rf"^input\.input_images: 5 images are too many for {DEV2}; .*at most 4"
    with pytest.raises(CometFluxInputError, match=match):
        inline_images(DEV2, {"input_images": missing})


def test_unchecked_inputs_lift_the_count_limit(tmp_path):
    (tmp_path / "a.png").write_bytes(PNG)
    out = inline_images(DEV2, {"input_images": [str(tmp_path / "a.png")] * 5}, unchecked=["input_images"])
    assert len(out["input_images"]) == 5


@pytest.mark.parametrize(
    ("item", "match"),
    [
        ("{tmp}/notes.txt", r"input\.input_images\.1: '.*notes\.txt' is not allowed; its content is not an image"),
        ("{tmp}/none.png", r"input\.input_images\.1: '.*none\.png' does not exist"),
        ("{tmp}", r"input\.input_images\.1: .* does not exist \(or is not a file\)"),
        (42, r"input\.input_images\.1: 42 is not allowed; expected an http\(s\) URL"),
        ("", r"input\.input_images\.1: '' is not allowed"),
        ("nosuchscheme://bucket/a.png", r"input\.input_images\.1: 'nosuchscheme://bucket/a\.png' could not be read"),
    ],
)
def test_a_bad_item_is_named_by_its_field_and_index(tmp_path, item, match):
    (tmp_path / "notes.txt").write_text("hello")
    value = item.format(tmp=tmp_path) if isinstance(item, str) else item
    with pytest.raises(CometFluxInputError, match=match):
        inline_images(PRO, {"input_images": ["https://x/a.png", value]})


def test_one_image_over_max_bytes(tmp_path):
    (tmp_path / "big.png").write_bytes(PNG + b"\x00" * 2000)
    match = r"^input\.image_prompt: .* is over 1000 bytes.*max_input_image_bytes"
    with pytest.raises(CometFluxInputError, match=match):
        inline_images("black-forest-labs/flux-pro", {"image_prompt": str(tmp_path / "big.png")}, max_bytes=1000)


def test_all_inline_images_together_are_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(schema, "MAX_INLINE_TOTAL_BYTES", 40)
    (tmp_path / "a.png").write_bytes(PNG)  # 16 bytes
    with pytest.raises(CometFluxInputError, match=r"^input\.input_images\.2: .* brings the images sent inline to 48"):
        inline_images(PRO, {"input_images": [str(tmp_path / "a.png")] * 3})


def test_the_request_size_bound_is_what_the_simulator_accepts():
    from airflow_provider_cometflux.testing.simulator.app import CometAPISimulator

    assert CometAPISimulator().max_request_bytes == schema.MAX_REQUEST_BYTES
    most = {"prompt": "p", "input_images": ["data:image/png;base64," + "A" * (schema.MAX_REQUEST_BYTES // 2)] * 2}
    with pytest.raises(CometFluxInputError, match=r"^input: the request would be \d+ bytes; a create may be at most"):
        check_request_size(most)
    check_request_size({"prompt": "p", "input_images": ["data:image/png;base64," + "A" * 1000]})


def test_a_real_image_from_pillow(tmp_path):
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="WEBP")
    (tmp_path / "x.webp").write_bytes(buffer.getvalue())
    out = inline_images(PRO, {"input_images": [str(tmp_path / "x.webp")]})
    assert out["input_images"][0].startswith("data:image/webp;base64,")
