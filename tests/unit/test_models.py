"""Output normalising, model ids, input validation, events and the retry policy."""

from __future__ import annotations

import logging

import pytest

from airflow_provider_cometflux.exceptions import CometFluxInputError
from airflow_provider_cometflux.models import (
    Prediction,
    build_input,
    normalize_output,
    parse_time,
    split_model,
    validate_input,
)
from tests.conftest import prediction_json


def test_output_string_or_list_becomes_a_list():
    assert normalize_output(None) == []
    assert normalize_output("https://a/1.png") == ["https://a/1.png"]
    assert normalize_output(["https://a/1.png", "http://a/2.png"]) == ["https://a/1.png", "http://a/2.png"]


@pytest.mark.parametrize("bad", ["file:///etc/passwd", ["javascript:alert(1)"], 42, [None]])
def test_output_that_is_not_http_is_refused(bad):
    with pytest.raises(ValueError, match=r"refusing|unexpected"):
        normalize_output(bad)


def test_prediction_view():
    p = Prediction(prediction_json(status="failed", error="NSFW content detected"))
    assert p.is_terminal and not p.succeeded
    assert p.failure_message() == (
        "Prediction p1abc ended with status 'failed': NSFW content detected. Change the prompt or input the service "
        "refused (or safety_tolerance), then run the task again."
    )
    assert p.web_url == "https://replicate.com/p/p1abc"
    summary = p.summary()
    assert summary["input"] == {"prompt": "a cat"} and "logs" not in summary and summary["status"] == "failed"


@pytest.mark.parametrize("model", ["black-forest-labs/flux-schnell", "acme/my.model_v2"])
def test_model_ids(model):
    assert split_model(model) == tuple(model.split("/"))


@pytest.mark.parametrize("model", ["flux", "a/b/c", "/x", "", None, "a b/c"])
def test_bad_model_ids(model):
    with pytest.raises(CometFluxInputError, match="model:"):
        split_model(model)


def test_prompt_merges_into_input_and_wins():
    assert build_input("new", {"prompt": "old", "seed": 1}) == {"prompt": "new", "seed": 1}
    assert build_input(None, {"prompt": "old"}) == {"prompt": "old"}


def test_input_must_be_json():
    with pytest.raises(CometFluxInputError, match="JSON"):
        build_input("a", {"seed": object()})
    with pytest.raises(CometFluxInputError, match="JSON"):
        build_input("a", {"guidance": float("nan")})
    with pytest.raises(CometFluxInputError, match="mapping"):
        build_input("a", ["not", "a", "dict"])  # type: ignore[arg-type]


@pytest.mark.parametrize("prompt", [None, "", "   ", 5])
def test_prompt_required(prompt):
    with pytest.raises(CometFluxInputError, match=r"input\.prompt"):
        validate_input("black-forest-labs/flux-schnell", {"prompt": prompt})


@pytest.mark.parametrize(
    ("model", "field", "value", "allowed"),
    [
        ("black-forest-labs/flux-schnell", "num_outputs", 5, "from 1 to 4"),
        ("black-forest-labs/flux-schnell", "num_inference_steps", 10, "from 1 to 4"),
        ("black-forest-labs/flux-schnell", "aspect_ratio", "7:3", "'16:9'"),
        ("black-forest-labs/flux-schnell", "output_format", "gif", "'webp', 'jpg', 'png'"),
        ("black-forest-labs/flux-schnell", "go_fast", "yes", "true or false"),
        ("black-forest-labs/flux-schnell", "seed", 1.5, "an integer"),
        ("black-forest-labs/flux-schnell", "num_outputs", True, "an integer"),
        ("black-forest-labs/flux-schnell", "megapixels", 1, "'1', '0.25'"),
        ("black-forest-labs/flux-dev", "guidance", 11, "from 0 to 10"),
        ("black-forest-labs/flux-dev", "prompt_strength", -0.1, "from 0 to 1"),
        ("black-forest-labs/flux-dev", "image", "/local/file.png", "URL"),
        ("black-forest-labs/flux-1.1-pro", "safety_tolerance", 0, "from 1 to 6"),
        ("black-forest-labs/flux-1.1-pro", "width", 2000, "from 256 to 1440"),
        ("black-forest-labs/flux-kontext-pro", "output_format", "webp", "'jpg', 'png'"),
        ("black-forest-labs/flux-kontext-max", "aspect_ratio", "custom", "match_input_image"),
    ],
)
def test_bad_inputs_name_field_value_and_allowed(model, field, value, allowed):
    with pytest.raises(CometFluxInputError) as info:
        validate_input(model, {"prompt": "a cat", field: value})
    text = str(info.value)
    assert f"input.{field}" in text and repr(value) in text and allowed in text


def test_good_inputs_pass():
    validate_input("black-forest-labs/flux-dev", {"prompt": "a", "num_inference_steps": 50, "guidance": 3.5})
    validate_input(
        "black-forest-labs/flux-1.1-pro", {"prompt": "a", "aspect_ratio": "custom", "width": 512, "height": 512}
    )
    validate_input("black-forest-labs/flux-kontext-pro", {"prompt": "a", "input_image": "https://x/y.png"})


def test_custom_aspect_needs_size():
    with pytest.raises(CometFluxInputError, match="custom"):
        validate_input("black-forest-labs/flux-1.1-pro", {"prompt": "a", "aspect_ratio": "custom"})


def test_unknown_key_warns(caplog):
    with caplog.at_level(logging.WARNING):
        validate_input("black-forest-labs/flux-schnell", {"prompt": "a", "guidance": 3})
    assert "input.guidance is not a known input" in caplog.text


def test_unknown_model_passes_through():
    validate_input("acme/other", {"prompt": "a", "anything": object()})


def _inline(raw: bytes) -> str:
    import base64

    return "data:image/png;base64," + base64.b64encode(raw).decode()


def test_public_input_keeps_each_inline_image_of_a_list_as_its_size_and_digest():
    import hashlib

    from airflow_provider_cometflux.models import public_input

    raw = b"\x89PNG\r\n\x1a\n" + b"\x01" * 40
    summary = {"data_uri": True, "bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
    kept = public_input(
        {
            "prompt": "p",
            "input_image": _inline(raw),
            "input_images": [_inline(raw), "https://x/a.png", [_inline(raw)]],
            "extra": {"nested": [_inline(raw)]},
        }
    )
    assert kept == {
        "prompt": "p",
        "input_image": summary,
        "input_images": [summary, "https://x/a.png", [summary]],
        "extra": {"nested": [summary]},
    }
    record = Prediction(prediction_json(input={"prompt": "p", "input_images": [_inline(raw)] * 3})).summary()
    assert record["input"]["input_images"] == [summary] * 3  # what events and XCom carry


def test_an_overridden_count_is_logged_without_the_image_data(caplog):
    images = [_inline(b"\x89PNG\r\n\x1a\n" + b"\x02" * 300)] * 5
    with caplog.at_level(logging.WARNING):
        validate_input(
            "black-forest-labs/flux-2-dev", {"prompt": "p", "input_images": images}, unchecked=["input_images"]
        )
    assert "input.input_images" in caplog.text and "'data_uri': True" in caplog.text
    assert "base64" not in caplog.text


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-12-08T02:30:00.500000Z", 1796697000.5),
        ("2026-12-08T03:30:00.500000+01:00", 1796697000.5),
        ("2026-12-08T02:30:00.5", 1796697000.5),  # naive: UTC; any number of digits
        ("2026-12-08T02:30:00.50000012Z", 1796697000.5),
        ("2026-12-08T02:30:00Z", 1796697000.0),
        ("", None),
        ("yesterday", None),
        (None, None),
        (17, None),
    ],
)
def test_prediction_timestamps_in_unix_seconds(value, expected):
    assert Prediction({"id": "p", "created_at": value}).epoch("created_at") == expected
    assert Prediction({"id": "p"}).epoch("completed_at") is None
    assert (parse_time(value) is None) is (expected is None)
