"""The UI plugin's routes with FastAPI's TestClient: Airflow's own auth checks, traversal attempts, escaping.

Authentication is Airflow's: tokens are signed by the real SimpleAuthManager and checked by Airflow's
``requires_access_dag``. Unit tests have no metadata database, so its two lookups that need one (the DAG's team,
revoked tokens) are answered here, and the records are served through the app's ``task_images_source`` dependency
(the real database reader runs in ``tests/browser`` against a real API server).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient
from PIL import Image

from airflow_provider_cometflux.plugins import CometFluxUIPlugin, ui_plugins_supported
from airflow_provider_cometflux.plugins.records import TaskImages, task_images

pytestmark = pytest.mark.skipif(not ui_plugins_supported(), reason="UI plugins need Airflow 3.1+")

NOW = datetime.now(timezone.utc)
DAG, RUN = "flux", "manual__2026-12-02T10:00:00+00:00"
PID = "p1abc"


def png(color: str = "red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), color).save(buf, format="PNG")
    return buf.getvalue()


def prediction(pid: str = PID, prompt: str = "a lighthouse", **extra: Any) -> dict[str, Any]:
    record = {
        "id": pid,
        "model": "black-forest-labs/flux-schnell",
        "version": "",
        "status": "succeeded",
        "error": None,
        "created_at": (NOW - timedelta(minutes=6)).isoformat(),
        "started_at": (NOW - timedelta(minutes=6)).isoformat(),
        "completed_at": (NOW - timedelta(minutes=5)).isoformat(),
        "metrics": {"predict_time": 1.25},
        "output": [f"https://delivery.test/{pid}-0.png"],
        "web_url": f"https://replicate.com/p/{pid}",
        "input": {"prompt": prompt, "aspect_ratio": "16:9", "seed": 7, "output_format": "png"},
    }
    record.update(extra)
    return record


class Records:
    """The records the app is given, by (task_id, map_index)."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, int], TaskImages] = {}

    def add(self, task_id: str, xcoms: dict[str, Any], map_index: int = -1, state: str = "success") -> None:
        self.items[(task_id, map_index)] = task_images(task_id, map_index, state, xcoms, now=NOW)

    def read(self, dag_id: str, run_id: str, *, task_id: str | None = None, map_index: int | None = None) -> Any:
        if (dag_id, run_id) != (DAG, RUN):
            return []
        return [
            item
            for (t, m), item in sorted(self.items.items())
            if (task_id is None or t == task_id) and (map_index is None or m == map_index)
        ]


@pytest.fixture
def auth(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Airflow's SimpleAuthManager, with a viewer who may not read the DAG ``secret``."""
    import airflow.api_fastapi.app as api_app
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager
    from airflow.models.dag import DagModel

    monkeypatch.setenv("AIRFLOW__CORE__AUTH_MANAGER", f"{SimpleAuthManager.__module__}.SimpleAuthManager")
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "False")
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "unit-test-secret-" + "0123456789abcdef" * 4)
    monkeypatch.setattr(DagModel, "get_team_name", staticmethod(lambda dag_id, **kw: None), raising=False)
    try:  # Airflow 3.2+: revoked tokens are looked up in the database, which these tests do not have
        from airflow.models.revoked_token import RevokedToken
    except ImportError:
        pass
    else:
        monkeypatch.setattr(RevokedToken, "is_revoked", classmethod(lambda cls, jti, **kw: False))
    state = getattr(api_app, "_AuthManagerState", None)  # Airflow 3.3 keeps the manager there, 3.1-3.2 in the module
    holder, attribute = (state, "instance") if state is not None else (api_app, "auth_manager")
    previous = getattr(holder, attribute)
    setattr(holder, attribute, None)
    manager = api_app.create_auth_manager()
    allowed = manager.is_authorized_dag

    def is_authorized_dag(*, method: str, user: Any, access_entity: Any = None, details: Any = None) -> bool:
        if details is not None and details.id == "secret":
            return False
        return allowed(method=method, user=user, access_entity=access_entity, details=details)

    monkeypatch.setattr(manager, "is_authorized_dag", is_authorized_dag)
    yield manager
    setattr(holder, attribute, previous)


@pytest.fixture
def records() -> Records:
    return Records()


@pytest.fixture
def client(auth: Any, records: Records) -> TestClient:
    from airflow_provider_cometflux.plugins.app import create_app, task_images_source

    (entry,) = CometFluxUIPlugin().fastapi_apps
    assert entry["url_prefix"] == "/cometflux"
    app = create_app()
    app.dependency_overrides[task_images_source] = lambda: records.read
    return TestClient(app)


def token(auth: Any, role: str = "viewer") -> str:
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    return auth.generate_jwt(SimpleAuthManagerUser(username="vera", role=role))


@pytest.fixture
def viewer(auth: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(auth)}"}


@pytest.fixture
def stored(tmp_path: Path, records: Records) -> bytes:
    """A task that stored one PNG under ``tmp_path``."""
    data = png()
    target = tmp_path / f"{PID}-0.png"
    target.write_bytes(data)
    records.add(
        "generate",
        {
            "prediction_id": PID,
            "prediction": prediction(),
            "images": [
                {
                    "uri": target.as_uri(),
                    "source_url": "https://delivery.test/x.png",
                    "sha256": "ab" * 32,
                    "bytes": len(data),
                    "content_type": "image/png",
                }
            ],
            "return_value": [target.as_uri()],
        },
    )
    return data


ROUTES = [
    f"/ti/{DAG}/{RUN}/generate?map_index=-1",
    f"/run/{DAG}/{RUN}",
    f"/image/{DAG}/{RUN}/generate/-1/0",
    f"/thumb/{DAG}/{RUN}/generate/-1/0",
    f"/kept/{DAG}/{RUN}.zip",
]


@pytest.mark.parametrize("route", ROUTES)
def test_without_credentials_every_route_answers_401_and_no_bytes(client: TestClient, stored: bytes, route: str):
    response = client.get(route)
    assert response.status_code == 401
    assert stored not in response.content and "lighthouse" not in response.text


@pytest.mark.parametrize("route", ROUTES)
def test_a_forged_token_is_refused(client: TestClient, auth: Any, stored: bytes, route: str):
    forged = token(auth)[:-4] + "AAAA"
    for headers, cookies in (({"Authorization": f"Bearer {forged}"}, {}), ({}, {"_token": forged})):
        client.cookies.clear()
        client.cookies.update(cookies)
        response = client.get(route, headers=headers)
        assert response.status_code in (401, 403)
        assert stored not in response.content


@pytest.mark.parametrize("route", [r.replace(f"/{DAG}/", "/secret/") for r in ROUTES])
def test_a_user_who_may_not_read_the_dag_gets_403(client: TestClient, viewer: dict[str, str], route: str):
    assert client.get(route, headers=viewer).status_code == 403


def test_the_ui_cookie_authenticates_and_the_image_is_streamed_with_its_type(
    client: TestClient, auth: Any, stored: bytes
):
    client.cookies.set("_token", token(auth))
    response = client.get(f"/image/{DAG}/{RUN}/generate/-1/0")
    assert response.status_code == 200
    assert response.content == stored
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-content-type-options"] == "nosniff"


def test_the_task_instance_view_shows_the_picture_and_what_made_it(
    client: TestClient, viewer: dict[str, str], stored: bytes
):
    response = client.get(f"/ti/{DAG}/{RUN}/generate", params={"map_index": "-1"}, headers=viewer)
    assert response.status_code == 200
    page = response.text
    assert '<a class="pic" href="/image/flux/' in page and '/generate/-1/0"' in page
    assert '<img src="/thumb/flux/' in page
    for text in ("a lighthouse", "black-forest-labs/flux-schnell", "16:9", ">7<", ">png<", "succeeded", "1.25 s"):
        assert text in page
    assert PID in page and "ab" * 32 in page
    assert "script-src" not in response.headers["content-security-policy"]
    assert "frame-ancestors 'self'" in response.headers["content-security-policy"]


def test_an_unfilled_map_index_placeholder_shows_every_map_index_in_order(
    client: TestClient, viewer: dict[str, str], records: Records
):
    for i in (2, 0, 1):
        records.add("fan", {"prediction_id": f"p{i}", "prediction": prediction(f"p{i}", f"prompt number {i}")}, i)
    page = client.get(f"/ti/{DAG}/{RUN}/fan?map_index={{MAP_INDEX}}", headers=viewer).text
    positions = [page.index(f"prompt number {i}") for i in range(3)]
    assert positions == sorted(positions)
    one = client.get(f"/ti/{DAG}/{RUN}/fan?map_index=1", headers=viewer).text
    assert "prompt number 1" in one and "prompt number 0" not in one


def test_html_from_xcom_is_escaped(client: TestClient, viewer: dict[str, str], records: Records):
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    records.add(
        "evil",
        {
            "prediction_ids": ['p"><b>id', None],
            "failures": [{"index": 1, "prompt": evil, "prediction_id": None, "status": "not_created", "message": evil}],
            "predictions": [prediction('p"><b>id', evil, model=evil), None],
            "return_value": [["javascript:alert(1)"], []],
        },
    )
    for route in (f"/ti/{DAG}/{RUN}/evil", f"/run/{DAG}/{RUN}"):
        page = client.get(route, headers=viewer).text
        assert "<script>alert" not in page and "<img src=x" not in page and "<b>id" not in page
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
        assert "javascript:" not in page


def test_a_live_delivery_url_is_shown_and_an_expired_one_says_so(
    client: TestClient, viewer: dict[str, str], records: Records
):
    fresh = prediction("pfresh", "fresh one", completed_at=(NOW - timedelta(minutes=10)).isoformat())
    old = prediction("pold", "old one", completed_at=(NOW - timedelta(hours=2)).isoformat())
    records.add("fresh", {"prediction_id": "pfresh", "prediction": fresh, "return_value": fresh["output"]})
    records.add("old", {"prediction_id": "pold", "prediction": old, "return_value": old["output"]})
    page = client.get(f"/run/{DAG}/{RUN}", headers=viewer).text
    assert 'src="https://delivery.test/pfresh-0.png"' in page
    assert "https://delivery.test/pold-0.png" not in page
    assert "delivery URL has expired" in page
    # a delivery URL is never served through the image route
    assert client.get(f"/image/{DAG}/{RUN}/fresh/-1/0", headers=viewer).status_code == 404


def test_a_batch_shows_every_prompt_in_order_and_a_failed_prompt_its_error(
    client: TestClient, viewer: dict[str, str], records: Records
):
    records.add(
        "batch",
        {
            "prediction_ids": ["pa", "pb", "pc"],
            "predictions": [prediction("pa", "first prompt"), None, prediction("pc", "third prompt")],
            "failures": [
                {"index": 1, "prompt": "second prompt", "prediction_id": "pb", "status": "failed", "message": "NSFW"}
            ],
            "return_value": [["https://delivery.test/pa-0.png"], [], ["https://delivery.test/pc-0.png"]],
        },
        state="failed",
    )
    page = client.get(f"/ti/{DAG}/{RUN}/batch", headers=viewer).text
    assert page.index("first prompt") < page.index("second prompt") < page.index("third prompt")
    assert "NSFW" in page and 'class="status failed"' in page


def test_an_older_batch_without_predictions_still_shows_its_pictures_and_failures(
    client: TestClient, viewer: dict[str, str], records: Records
):
    records.add(
        "old_batch",
        {
            "prediction_ids": ["pa", None],
            "failures": [
                {"index": 1, "prompt": "lost", "prediction_id": None, "status": "not_created", "message": "429"}
            ],
            "return_value": [["https://delivery.test/pa-0.png"], []],
        },
    )
    page = client.get(f"/ti/{DAG}/{RUN}/old_batch", headers=viewer).text
    assert "(prompt not recorded)" in page and "lost" in page and "429" in page
    # no completed_at and no XCom time: the URL's age is unknown, so it is not offered as a picture
    assert "delivery URL has expired" in page


@pytest.mark.parametrize(
    "uri",
    [
        "file:///etc/passwd",
        "file:///tmp/../etc/p1abc-0.png",
        "file:///tmp/./p1abc-0.png",
        "file:///tmp/p1abc-0.png?x=1",
        "file:///tmp/other-0.png",
        "file:///tmp/p1abc-0.svg",
        "https://evil.test/p1abc-0.png",
        "/etc/p1abc-0.png",
    ],
)
def test_a_recorded_uri_that_storage_would_not_write_is_never_read(
    client: TestClient, viewer: dict[str, str], records: Records, uri: str
):
    records.add("t", {"prediction_id": PID, "prediction": prediction(), "images": [{"uri": uri, "bytes": 1}]})
    response = client.get(f"/image/{DAG}/{RUN}/t/-1/0", headers=viewer)
    assert response.status_code == 404
    assert "root:" not in response.text


@pytest.mark.parametrize(
    ("route", "codes"),
    [
        (f"/image/{DAG}/{RUN}/generate/-1/1", {404}),
        (f"/image/{DAG}/{RUN}/generate/-2/0", {422}),
        (f"/image/{DAG}/{RUN}/generate/-1/..%2F..%2Fetc%2Fpasswd", {404, 422}),
        (f"/image/{DAG}/{RUN}/generate/-1/%2Fetc%2Fpasswd", {404, 422}),
        (f"/image/{DAG}/{RUN}/..%2F..%2Fgenerate/-1/0", {404}),
        (f"/image/{DAG}/..%2F{RUN}/generate/-1/0", {404}),
        (f"/image/~/{RUN}/generate/-1/0", {403, 404}),
        ("/image/flux/../../etc/passwd", {404}),
    ],
)
def test_traversal_and_other_addresses_get_no_bytes(
    client: TestClient, viewer: dict[str, str], stored: bytes, route: str, codes: set[int]
):
    response = client.get(route, headers=viewer)
    assert response.status_code in codes
    assert stored not in response.content


def test_a_stored_image_changed_after_the_task_is_refused(
    client: TestClient, viewer: dict[str, str], stored: bytes, tmp_path: Path
):
    (tmp_path / f"{PID}-0.png").write_bytes(stored + b"appended")
    assert client.get(f"/image/{DAG}/{RUN}/generate/-1/0", headers=viewer).status_code == 409


def test_images_in_other_object_storage_are_read_through_objectstoragepath(
    client: TestClient, viewer: dict[str, str], records: Records
):
    from airflow.sdk import ObjectStoragePath
    from airflow.sdk.io.store import attach
    from fsspec.implementations.memory import MemoryFileSystem

    attach("memory", fs=MemoryFileSystem())  # a store that is not disk, as a connection's store would be
    data = png("blue")
    target = ObjectStoragePath(f"memory://cometflux-unit/{PID}-0.png")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    records.add("mem", {"prediction_id": PID, "prediction": prediction(), "images": [{"uri": str(target)}]})
    response = client.get(f"/image/{DAG}/{RUN}/mem/-1/0", headers=viewer)
    assert response.status_code == 200 and response.content == data


def test_the_plugin_is_loaded_from_its_entry_point():
    from importlib.metadata import entry_points

    (entry,) = [e for e in entry_points(group="airflow.plugins") if e.name == "cometflux"]
    plugin = entry.load()()
    views = {view["destination"]: view for view in plugin.external_views}
    assert views["task_instance"]["href"] == "/cometflux/ti/{DAG_ID}/{RUN_ID}/{TASK_ID}?map_index={MAP_INDEX}"
    assert views["dag_run"]["href"] == "/cometflux/run/{DAG_ID}/{RUN_ID}"


def review_xcom(uris: list[str], verdicts: list[str], pids: list[str]) -> dict[str, Any]:
    """A review task's XCom ``review`` after one answered round."""
    images = [
        {
            "slot": i,
            "uri": uri,
            "prompt": f"prompt {i}",
            "prediction_id": pid,
            "model": "black-forest-labs/flux-schnell",
            "sha256": "",
            "bytes": None,
            "content_type": "image/png",
            "round": 1,
            "verdict": verdict,
            "by": "rita",
            "at": NOW.isoformat(),
        }
        for i, (uri, verdict, pid) in enumerate(zip(uris, verdicts, pids, strict=True))
    ]
    rounds = [{"round": 1, "by": "rita", "at": NOW.isoformat(), "kept": [], "redo": False, "images": images}]
    return {"round": 1, "max_rounds": 1, "options": [], "images": images, "rounds": rounds}


@pytest.fixture
def reviewed(tmp_path: Path, records: Records) -> list[Path]:
    """A batch of three stored PNGs and a review that kept the first and the last."""
    files = []
    for i, color in enumerate(("red", "green", "blue")):
        target = tmp_path / f"p{i}-0.png"
        target.write_bytes(png(color))
        files.append(target)
    records.add(
        "generate",
        {
            "prediction_ids": ["p0", "p1", "p2"],
            "predictions": [prediction(f"p{i}", f"prompt {i}") for i in range(3)],
            "images": [[{"uri": f.as_uri(), "bytes": f.stat().st_size, "sha256": ""}] for f in files],
            "return_value": [[f.as_uri()] for f in files],
        },
    )
    records.add(
        "review", {"review": review_xcom([f.as_uri() for f in files], ["kept", "rejected", "kept"], ["p0", "p1", "p2"])}
    )
    return files


def test_verdicts_show_as_badges_on_the_reviewed_images_and_in_the_review_task(
    client: TestClient, viewer: dict[str, str], reviewed: list[Path]
):
    page = client.get(f"/run/{DAG}/{RUN}", headers=viewer).text
    assert page.count('class="verdict kept"') == 4 and page.count('class="verdict rejected"') == 2
    view = client.get(f"/ti/{DAG}/{RUN}/review", headers=viewer).text
    assert view.count('class="verdict kept"') == 2 and "prompt 1" in view
    assert client.get(f"/image/{DAG}/{RUN}/review/-1/2", headers=viewer).content == reviewed[2].read_bytes()


def test_the_gallery_filters_by_verdict_task_and_status(
    client: TestClient, viewer: dict[str, str], reviewed: list[Path]
):
    page = client.get(f"/run/{DAG}/{RUN}", params={"verdict": "kept", "task": "generate"}, headers=viewer).text
    assert page.count("<img ") == 2 and "prompt 1" not in page.split("</form>")[1]
    page = client.get(f"/run/{DAG}/{RUN}", params={"status": "failed"}, headers=viewer).text
    assert "No image matches these filters." in page


def test_the_gallery_pages_its_cards(client: TestClient, viewer: dict[str, str], records: Records):
    records.add("many", {"prediction_ids": [f"p{i}" for i in range(100)], "return_value": [[] for _ in range(100)]})
    page = client.get(f"/run/{DAG}/{RUN}", headers=viewer).text
    assert page.count('class="card"') == 48 and "page 1 of 3" in page and "page=2" in page
    last = client.get(f"/run/{DAG}/{RUN}", params={"page": 3}, headers=viewer).text
    assert last.count('class="card"') == 4 and "page=2" in last


def test_thumbnails_are_small_webp_made_once(
    client: TestClient, viewer: dict[str, str], records: Records, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    cache = tmp_path / "cache"
    monkeypatch.setenv("COMETFLUX_THUMBNAIL_CACHE", str(cache))
    buf = io.BytesIO()
    Image.new("RGB", (1024, 768), "red").save(buf, format="PNG")
    big = tmp_path / "big" / "pbig-0.png"
    big.parent.mkdir()
    big.write_bytes(buf.getvalue())
    image = {"uri": big.as_uri(), "bytes": big.stat().st_size, "sha256": "cd" * 32}
    records.add("big", {"prediction_id": "pbig", "prediction": prediction("pbig"), "images": [image]})
    response = client.get(f"/thumb/{DAG}/{RUN}/big/-1/0", headers=viewer)
    assert response.status_code == 200 and response.headers["content-type"] == "image/webp"
    assert Image.open(io.BytesIO(response.content)).size == (320, 240)
    (made,) = cache.iterdir()
    first = made.stat().st_mtime_ns
    assert client.get(f"/thumb/{DAG}/{RUN}/big/-1/0", headers=viewer).content == response.content
    assert [p.name for p in cache.iterdir()] == [made.name] and made.stat().st_mtime_ns >= first
    again = {**viewer, "If-None-Match": response.headers["etag"]}
    assert client.get(f"/thumb/{DAG}/{RUN}/big/-1/0", headers=again).status_code == 304


def test_the_kept_images_download_as_one_zip(client: TestClient, viewer: dict[str, str], reviewed: list[Path]):
    import zipfile

    response = client.get(f"/kept/{DAG}/{RUN}.zip", headers=viewer)
    assert response.status_code == 200 and response.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert archive.namelist() == ["0001-p0-0.png", "0002-p2-0.png"]
        assert archive.read("0002-p2-0.png") == reviewed[2].read_bytes()


def test_no_zip_without_a_kept_image(client: TestClient, viewer: dict[str, str], stored: bytes):
    assert client.get(f"/kept/{DAG}/{RUN}.zip", headers=viewer).status_code == 404


def test_the_thumbnail_cache_stays_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from airflow_provider_cometflux.plugins import thumbnails

    cache = tmp_path / "cache"
    monkeypatch.setenv("COMETFLUX_THUMBNAIL_CACHE", str(cache))
    monkeypatch.setattr(thumbnails, "MAX_ENTRIES", 3)
    monkeypatch.setattr(thumbnails, "TRIM_EVERY", 1)
    from airflow.sdk import ObjectStoragePath

    for i in range(6):
        image = tmp_path / f"p{i}-0.png"
        image.write_bytes(png(("red", "green", "blue", "white", "black", "gray")[i]))
        data = thumbnails.thumbnail(ObjectStoragePath(image.as_uri()), uri=image.as_uri(), sha256="", size=i)
        assert data is not None and data[:4] == b"RIFF"
    assert len(list(cache.iterdir())) == 3


def test_a_card_shows_its_cost_and_the_run_gallery_the_runs_total(
    client: TestClient, viewer: dict[str, str], records: Records
):
    paid = prediction("ppaid", "paid for", cost={"usd": 0.006, "images": 2}, reused_from=None)
    reused = prediction(
        "pold", "reused one", cost={"usd": 0.0, "images": 1}, reused_from={"prediction_id": "pold", "stored_in": "x"}
    )
    records.add("paid", {"prediction_id": "ppaid", "prediction": paid, "return_value": paid["output"]})
    records.add("reused", {"prediction_id": "pold", "prediction": reused, "return_value": reused["output"]})
    records.add("older", {"prediction_id": "pnone", "prediction": prediction("pnone", "before costs were recorded")})
    page = client.get(f"/run/{DAG}/{RUN}", headers=viewer).text
    assert "$0.0060 in total" in page
    assert "<dt>cost</dt><dd>$0.0060" in page and "$0.0000" in page and "(reused from pold)" in page
    one = client.get(f"/ti/{DAG}/{RUN}/older", headers=viewer).text
    assert "<dt>cost</dt>" not in one and "in total" not in one


def test_trimming_the_thumbnail_cache_spares_parts_being_written_and_skips_vanished_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Two requests at once: one trims the folder while the other writes its part and renames it."""
    from airflow_provider_cometflux.plugins import thumbnails

    monkeypatch.setattr(thumbnails, "MAX_ENTRIES", 2)
    for i in range(4):
        (tmp_path / f"t{i}.webp").write_bytes(b"RIFF")
        os.utime(tmp_path / f"t{i}.webp", (1000 + i, 1000 + i))
    writing = tmp_path / ".part-abc.webp"
    writing.write_bytes(b"RIFF")
    listed = os.scandir

    def renamed_meanwhile(folder: Any) -> Any:
        entries = list(listed(folder))
        (tmp_path / "t3.webp").rename(tmp_path / "t3-moved.webp")  # after the listing, before its stat
        return iter(entries)

    with monkeypatch.context() as patched:  # os.scandir itself (Path.iterdir uses it on Python 3.13): only here
        patched.setattr(thumbnails.os, "scandir", renamed_meanwhile)
        thumbnails._bound(tmp_path)
    assert writing.exists()  # a part being written is no thumbnail, and too young to be a crash's leftover
    assert sorted(p.name for p in tmp_path.iterdir()) == [".part-abc.webp", "t1.webp", "t2.webp", "t3-moved.webp"]
