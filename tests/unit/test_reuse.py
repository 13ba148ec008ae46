"""The reuse index under ``reuse_path``: its key, entries written whole, images checked by sha256 before reuse."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from pathlib import Path

import pytest

from airflow_provider_cometflux.contract import REUSE_FORMAT
from airflow_provider_cometflux.models import public_input
from airflow_provider_cometflux.reuse import ReuseIndex, copy_images, reuse_key, reused_event

SCHNELL = "black-forest-labs/flux-schnell"
PNG = b"\x89PNG\r\n\x1a\n" + b"pixels" * 100


def data_uri(raw: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(raw).decode()


def stored(folder: Path, pid: str = "p1", count: int = 2) -> list[dict]:
    folder.mkdir(parents=True, exist_ok=True)
    images = []
    for i in range(count):
        path = folder / f"{pid}-{i}.png"
        path.write_bytes(PNG + bytes([i]))
        images.append(
            {
                "uri": path.as_uri(),
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                "bytes": path.stat().st_size,
                "content_type": "image/png",
            }
        )
    return images


def added(tmp_path: Path, model_input: dict, pid: str = "p1") -> ReuseIndex:
    index = ReuseIndex(tmp_path / "index")
    images = stored(tmp_path / "first", pid)
    index.add(SCHNELL, model_input, {"id": pid, "status": "succeeded", "output": ["u"]}, images, "file:///first")
    return index


def test_the_key_is_the_model_and_the_whole_input_with_inline_images_by_digest():
    base = {"prompt": "a cat", "seed": 1, "image": data_uri(b"one")}
    assert reuse_key(SCHNELL, base) == reuse_key(SCHNELL, dict(reversed(list(base.items()))))  # order-free
    assert reuse_key(SCHNELL, base) != reuse_key(SCHNELL, {**base, "seed": 2})
    assert reuse_key(SCHNELL, base) != reuse_key("black-forest-labs/flux-dev", base)
    assert reuse_key(SCHNELL, base) != reuse_key(SCHNELL, {**base, "image": data_uri(b"two")})
    assert reuse_key(SCHNELL, base) == reuse_key(SCHNELL, public_input(base))  # a recorded input keys the same
    listed = {"prompt": "a cat", "input_images": [data_uri(b"one"), data_uri(b"two")]}
    assert reuse_key(SCHNELL, listed) != reuse_key(SCHNELL, {**listed, "input_images": [data_uri(b"one")]})


def test_a_success_is_found_again_with_its_images_checked(tmp_path):
    index = added(tmp_path, {"prompt": "a cat", "seed": 1})
    (entry_file,) = (tmp_path / "index").iterdir()
    data = json.loads(entry_file.read_text())
    assert data["format"] == REUSE_FORMAT and entry_file.name == f"{data['key']}.json"
    entry = index.lookup(SCHNELL, {"seed": 1, "prompt": "a cat"})
    assert entry is not None and entry["prediction_id"] == "p1" and entry["stored_in"] == "file:///first"
    assert index.lookup(SCHNELL, {"prompt": "a cat", "seed": 2}) is None
    event = reused_event(entry)
    assert event["status"] == "succeeded" and event["prediction_id"] == "p1" and event["reused_from"] == entry


def test_copies_land_in_this_runs_folder_byte_identical(tmp_path):
    index = added(tmp_path, {"prompt": "a cat"})
    entry = index.lookup(SCHNELL, {"prompt": "a cat"})
    copies = copy_images(entry, tmp_path / "second")
    assert [Path(c.uri).name for c in copies] == ["p1-0.png", "p1-1.png"]
    for copy, image in zip(copies, entry["images"], strict=True):
        assert (tmp_path / "second" / Path(copy.uri).name).read_bytes() == (
            tmp_path / "first" / Path(copy.uri).name
        ).read_bytes()
        assert copy.sha256 == image["sha256"]
    assert copy_images(entry, tmp_path / "first") is not None  # copying onto itself only checks
    assert not [p for p in (tmp_path / "second").iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("damage", ["changed", "deleted"])
def test_an_image_changed_or_gone_is_a_miss_and_copies_nothing(tmp_path, damage, caplog):
    index = added(tmp_path, {"prompt": "a cat"})
    entry = index.lookup(SCHNELL, {"prompt": "a cat"})
    image = tmp_path / "first" / "p1-1.png"
    if damage == "changed":
        image.write_bytes(b"something else")
    else:
        image.unlink()
    assert index.lookup(SCHNELL, {"prompt": "a cat"}) is None
    assert "gone or changed" in caplog.text
    assert copy_images(entry, tmp_path / "second") is None
    assert not (tmp_path / "second" / "p1-1.png").exists()


@pytest.mark.parametrize("text", ["{not json", json.dumps({"format": "other/9"}), json.dumps([1])])
def test_a_damaged_entry_is_a_miss_not_an_error(tmp_path, text):
    index = added(tmp_path, {"prompt": "a cat"})
    (entry_file,) = (tmp_path / "index").iterdir()
    entry_file.write_text(text)
    assert index.lookup(SCHNELL, {"prompt": "a cat"}) is None


def _writer(folder: str, pid: str, rounds: int) -> None:
    index = ReuseIndex(folder)
    for _ in range(rounds):
        index.add(SCHNELL, {"prompt": "same"}, {"id": pid, "status": "succeeded"}, [{"uri": "u", "sha256": pid}], pid)


def test_tasks_adding_the_same_key_at_once_leave_a_whole_readable_entry(tmp_path):
    folder = tmp_path / "index"
    ReuseIndex(folder).add(SCHNELL, {"prompt": "same"}, {"id": "p0"}, [{"uri": "u", "sha256": "p0"}], "p0")
    (entry_file,) = folder.iterdir()
    failed: list[BaseException] = []

    def write(pid: str) -> None:
        try:
            _writer(str(folder), pid, 40)
        except BaseException as exc:
            failed.append(exc)

    writers = [threading.Thread(target=write, args=(f"p{n}",)) for n in (1, 2)]
    for writer in writers:
        writer.start()
    seen = set()
    try:
        while any(writer.is_alive() for writer in writers):
            seen.add(json.loads(entry_file.read_text())["prediction_id"])  # never a partial file
    finally:
        for writer in writers:
            writer.join(timeout=60)
    assert not failed
    assert json.loads(entry_file.read_text())["prediction_id"] in {"p1", "p2"} and seen
    assert [p.name for p in folder.iterdir()] == [entry_file.name]  # no temporary file left


def test_a_recorded_inline_image_keys_as_the_data_uri_sent():
    from airflow_provider_cometflux.completion import recordable

    sent = {"prompt": "a cat", "image": data_uri(PNG)}
    assert reuse_key(SCHNELL, recordable(sent)) == reuse_key(SCHNELL, sent)
