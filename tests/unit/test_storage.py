"""Durable copies against the simulator: whole or not at all, retries, expiry, other stores, memory, inputs."""

from __future__ import annotations

import hashlib
import time
import tracemalloc

import pytest
import requests

from airflow_provider_cometflux.exceptions import CometAPIError, CometFluxInputError, OutputExpiredError
from airflow_provider_cometflux.hooks.cometapi import CometAPIHook
from airflow_provider_cometflux.pacing import RetryPolicy
from airflow_provider_cometflux.storage import as_storage_path, store_outputs
from tests.compat import storage_uri

FAST = RetryPolicy(max_retries=3, base_delay=0.001, max_delay=0.01)


@pytest.fixture
def memory_store():
    """Attach fsspec's in-memory filesystem as Airflow's ``memory://`` object store (a store that is not disk)."""
    from airflow.sdk.io.store import attach
    from fsspec.implementations.memory import MemoryFileSystem

    return attach("memory", fs=MemoryFileSystem())


def finished_prediction(sim, prompt: str = "a cat", **inputs) -> tuple[str, list[str]]:
    """Create a prediction on the simulator and wait until it has its output URLs."""
    hook = CometAPIHook()
    pid = hook.create_prediction("black-forest-labs/flux-schnell", {"prompt": prompt, **inputs})["id"]
    for _ in range(200):
        done = hook.get_prediction(pid)
        if done["status"] == "succeeded":
            break
        time.sleep(0.05)
    assert done["status"] == "succeeded"
    return pid, done["output"]


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in as_storage_path(folder).iterdir())


def test_images_are_stored_whole_with_metadata(cometapi_connection, tmp_path):
    pid, urls = finished_prediction(cometapi_connection, num_outputs=2, output_format="webp")
    images = store_outputs(CometAPIHook(), urls, tmp_path.as_uri(), pid, output_format="webp")
    assert [i.uri for i in images] == [(tmp_path / f"{pid}-{n}.webp").as_uri() for n in range(2)]
    for image, url in zip(images, urls, strict=True):
        data = requests.get(url, timeout=10).content
        assert (tmp_path / image.uri.rsplit("/", 1)[-1]).read_bytes() == data
        assert (image.source_url, image.sha256, image.bytes, image.content_type) == (
            url,
            hashlib.sha256(data).hexdigest(),
            len(data),
            "image/webp",
        )
    assert leftovers(tmp_path.as_uri()) == [f"{pid}-0.webp", f"{pid}-1.webp"]


def test_store_other_than_local_disk(cometapi_connection, memory_store):
    pid, urls = finished_prediction(cometapi_connection, output_format="png")
    images = store_outputs(CometAPIHook(), urls, "memory://cometflux-test/run-1", pid)
    assert storage_uri(images[0].uri) == f"memory://cometflux-test/run-1/{pid}-0.png"
    stored = as_storage_path(images[0].uri).read_bytes()
    assert stored.startswith(b"\x89PNG") and hashlib.sha256(stored).hexdigest() == images[0].sha256


def test_cut_short_download_is_retried(cometapi_connection, tmp_path):
    sim = cometapi_connection
    pid, urls = finished_prediction(sim, output_format="png")
    sim.add_fault("file", "truncate", times=2)
    (image,) = store_outputs(CometAPIHook(retry_policy=FAST), urls, tmp_path, pid, output_format="png")
    assert image.bytes == len(requests.get(urls[0], timeout=10).content)
    assert leftovers(tmp_path) == [f"{pid}-0.png"]


def test_download_that_never_completes_leaves_nothing(cometapi_connection, tmp_path):
    sim = cometapi_connection
    pid, urls = finished_prediction(sim, output_format="png")
    sim.add_fault("file", "truncate", times=100)
    with pytest.raises(CometAPIError, match=r"download of \S+ (failed|stopped at)"):
        store_outputs(CometAPIHook(retry_policy=FAST), urls, tmp_path, pid, output_format="png")
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("status", [502, 503])
def test_transient_download_error_is_retried(cometapi_connection, tmp_path, status):
    sim = cometapi_connection
    pid, urls = finished_prediction(sim)
    sim.add_fault("file", "status", status=status, times=1)
    (image,) = store_outputs(CometAPIHook(retry_policy=FAST), urls, tmp_path, pid)
    assert image.uri.endswith(f"{pid}-0.webp")


@pytest.mark.parametrize("status", [403, 404, 410])
def test_expired_delivery_url(cometapi_connection, tmp_path, status):
    sim = cometapi_connection
    pid, urls = finished_prediction(sim)
    sim.add_fault("file", "expired", status=status, times=1)
    with pytest.raises(OutputExpiredError) as info:
        store_outputs(CometAPIHook(retry_policy=FAST), urls, tmp_path, pid)
    text = str(info.value)
    assert "expired" in text and pid in text and "output_path" in text
    assert leftovers(tmp_path) == []


def test_already_stored_output_is_not_downloaded_again(cometapi_connection, tmp_path):
    sim = cometapi_connection
    pid, urls = finished_prediction(sim, output_format="jpg")
    first = store_outputs(CometAPIHook(), urls, tmp_path, pid, output_format="jpg")
    downloads = sim.stats["downloads"]
    sim.add_fault("file", "expired", status=404, times=10)  # even an expired URL does not matter now
    second = store_outputs(CometAPIHook(), urls, tmp_path, pid, output_format="jpg")
    assert second == first and sim.stats["downloads"] == downloads


def test_content_type_must_match_output_format(cometapi_connection, tmp_path):
    pid, urls = finished_prediction(cometapi_connection, output_format="png")
    with pytest.raises(CometAPIError, match="output_format 'jpg' asks for 'image/jpeg'"):
        store_outputs(CometAPIHook(), urls, tmp_path, pid, output_format="jpg")
    assert leftovers(tmp_path) == []


def test_streaming_an_8mb_image_keeps_memory_flat(monkeypatch, tmp_path):
    """Peak traced memory while copying an 8 MB image stays under 2 MB (the simulator runs in another process)."""
    import json
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "airflow_provider_cometflux.testing.simulator", "--port", "0"]
    cmd += ["--run-seconds", "0.1", "--image-bytes", str(8 * 1024 * 1024)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().rsplit(" ", 1)[-1].strip()
        conn = {"conn_type": "cometapi", "host": base_url, "password": "sim-0123456789abcdef"}  # the CLI's default
        monkeypatch.setenv("AIRFLOW_CONN_COMETAPI_DEFAULT", json.dumps(conn))
        pid, urls = finished_prediction(None, output_format="png")
        hook = CometAPIHook()
        # a first copy elsewhere loads what any first copy loads (object storage, its filesystem): those imports
        # are paid once per process whatever the image's size, and are not what this test measures
        store_outputs(hook, urls, tmp_path / "warm-up", pid, output_format="png")
        tracemalloc.start()
        try:
            (image,) = store_outputs(hook, urls, tmp_path / "measured", pid, output_format="png")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert image.bytes >= 8 * 1024 * 1024
    assert peak < 2 * 1024 * 1024, f"copying raised traced memory by {peak} bytes"


def test_write_whole_replaces_the_file_and_leaves_no_temporary_one(tmp_path):
    from airflow_provider_cometflux.storage import write_whole

    uri = write_whole(tmp_path / "out", "notes.json", "first")
    assert write_whole(tmp_path / "out", "notes.json", "second ü") == uri
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["notes.json"]
    assert (tmp_path / "out" / "notes.json").read_text(encoding="utf-8") == "second ü"


def test_an_output_folder_that_cannot_be_made_says_what_to_do(cometapi_connection, tmp_path):
    done = CometAPIHook().create_prediction("black-forest-labs/flux-schnell", {"prompt": "a cat"}, wait=10)
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(CometFluxInputError, match=r"output_path: cannot write to .*a-file/images") as info:
        store_outputs(CometAPIHook(), done["output"], (tmp_path / "a-file" / "images").as_uri(), done["id"])
    assert "give the user the worker runs as write access" in str(info.value)


def test_an_output_folder_without_write_access_is_not_retried_as_a_download(cometapi_connection, tmp_path, monkeypatch):
    from airflow_provider_cometflux import storage

    done = CometAPIHook().create_prediction("black-forest-labs/flux-schnell", {"prompt": "a cat"}, wait=10)
    opened = []

    def refuse(self, mode="r", *args, **kwargs):
        opened.append(mode)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(type(as_storage_path(tmp_path.as_uri())), "open", refuse)
    sim = cometapi_connection
    before = sim.stats["downloads"]
    with pytest.raises(CometFluxInputError, match=r"Permission denied.*write access") as info:
        store_outputs(CometAPIHook(retry_policy=FAST), done["output"], tmp_path.as_uri(), done["id"])
    assert not isinstance(info.value, CometAPIError)
    assert opened == ["wb"] and sim.stats["downloads"] - before == 1  # one try: no download retries
    assert isinstance(storage.unwritable(tmp_path, PermissionError(13, "no")), CometFluxInputError)
