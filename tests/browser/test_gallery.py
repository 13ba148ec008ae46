"""
The Images view and the gallery in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``, installed through ``scripts/apt-ensure`` when missing) driven by Selenium against a real API
server, logged in as a viewer. Every picture must be decoded (``naturalWidth > 0``) and its prompt on the page.

``COMETFLUX_GALLERY_SCREENSHOT=docs/gallery.png`` keeps the gallery's screenshot there (the README's picture).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from tests.browser.conftest import DAG_ID, UIServer
from tests.browser.dags.cometflux_browser import BATCH, MAPPED, SINGLE, UNSTORED

pytestmark = pytest.mark.browser

ROOT = Path(__file__).parents[2]
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1440,1100",
    "--force-device-scale-factor=1",
]


def ensure_chromium() -> None:
    if os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER):
        return
    proc = subprocess.run(
        [str(ROOT / "scripts" / "apt-ensure"), "chromium", "chromium-driver"], capture_output=True, text=True
    )
    assert proc.returncode == 0 and os.path.exists(CHROMEDRIVER), proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    ensure_chromium()
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not look for a browser to download
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    service = Service(CHROMEDRIVER, log_output=str(tmp_path_factory.mktemp("chromedriver") / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        pid = service.process.pid if service.process else None
        with contextlib.suppress(Exception):
            driver.quit()
        if pid is not None:  # the driver's browser is gone with quit(); the driver itself, by its PID
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)


def ui_path(ui: UIServer, task_id: str | None = None, map_index: int | None = None) -> str:
    path = f"/dags/{DAG_ID}/runs/{quote(ui.run_id, safe='')}"
    if task_id is None:
        return ui.url(path + "/plugin/cometflux-gallery")
    path += f"/tasks/{task_id}"
    if map_index is not None:
        path += f"/mapped/{map_index}"
    return ui.url(path + "/plugin/cometflux-images")


def log_in(driver: Any, ui: UIServer) -> None:
    """The UI authenticates with the JWT in the ``_token`` cookie; set it as the login page would."""
    driver.get(ui.url("/api/v2/version"))
    driver.add_cookie({"name": "_token", "value": ui.token(), "path": "/"})


def open_view(driver: Any, url: str, expect_images: int, timeout: float = 60) -> dict[str, Any]:
    """
    Open a UI page, enter the plugin's frame and wait until its pictures are loaded.

    :return: the frame's text and, per picture, ``naturalWidth`` and ``complete``.
    """
    from selenium.webdriver.common.by import By

    driver.switch_to.default_content()
    driver.get(url)
    deadline = time.monotonic() + timeout
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        driver.switch_to.default_content()
        frames = driver.find_elements(By.CSS_SELECTOR, "iframe[src*='/cometflux/']")
        if frames:
            driver.switch_to.frame(frames[0])
            state = driver.execute_script(
                "return {text: document.body ? document.body.innerText : '',"
                " images: Array.from(document.images).map(i => ({w: i.naturalWidth, done: i.complete, src: i.src}))}"
            )
            images = state["images"]
            if len(images) >= expect_images and all(i["done"] for i in images):
                return state
        time.sleep(0.5)
    raise AssertionError(f"{url}: the plugin's view did not load {expect_images} pictures: {state}")


def test_the_plugin_is_listed_by_the_api_server(ui_server: UIServer):
    resp = requests.get(
        ui_server.url("/api/v2/plugins"), headers={"Authorization": f"Bearer {ui_server.token()}"}, timeout=30
    )
    assert resp.status_code == 200, resp.text
    (plugin,) = [p for p in resp.json()["plugins"] if p["name"] == "cometflux"]
    assert [app["url_prefix"] for app in plugin["fastapi_apps"]] == ["/cometflux"]
    assert {view["destination"] for view in plugin["external_views"]} == {"task_instance", "dag_run"}


def test_without_credentials_the_routes_answer_401_or_403_and_never_bytes(ui_server: UIServer):
    run = quote(ui_server.run_id, safe="")
    routes = [f"/cometflux/ti/{DAG_ID}/{run}/single", f"/cometflux/run/{DAG_ID}/{run}"]
    routes += [f"/cometflux/image/{DAG_ID}/{run}/single/-1/{i}" for i in (0, 1)]
    token = ui_server.token()
    for route in routes:
        plain = requests.get(ui_server.url(route), timeout=30)
        assert plain.status_code == 401, (route, plain.status_code)
        forged = requests.get(ui_server.url(route), cookies={"_token": token[:-6] + "AAAAAA"}, timeout=30)
        assert forged.status_code in (401, 403), (route, forged.status_code)
        for resp in (plain, forged):
            assert b"\x89PNG" not in resp.content and SINGLE not in resp.text
        allowed = requests.get(ui_server.url(route), cookies={"_token": token}, timeout=30)
        assert allowed.status_code == 200, (route, allowed.text[:500])
    image = requests.get(ui_server.url(routes[2]), headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert image.headers["content-type"] == "image/png" and image.content.startswith(b"\x89PNG")
    stored = sorted(p for p in ui_server.images.rglob("*-0.png") if p.read_bytes() == image.content)
    assert len(stored) == 1, "the bytes are the stored file's"
    for attempt in (
        f"/cometflux/image/{DAG_ID}/{run}/single/-1/..%2F..%2F..%2Fetc%2Fpasswd",
        f"/cometflux/image/{DAG_ID}/{run}/..%2F..%2Fsingle/-1/0",
        f"/cometflux/image/{DAG_ID}/{run}/unstored/-1/0",
        f"/cometflux/image/{DAG_ID}/{run}/single/-1/9",
    ):
        resp = requests.get(ui_server.url(attempt), headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert resp.status_code in (404, 422), (attempt, resp.status_code)
        assert b"root:" not in resp.content and b"\x89PNG" not in resp.content


def test_the_views_show_decoded_pictures_and_their_prompts_in_chromium(browser: Any, ui_server: UIServer):
    log_in(browser, ui_server)

    single = open_view(browser, ui_path(ui_server, "single"), expect_images=2)
    assert len(single["images"]) == 2 and all(i["w"] > 0 for i in single["images"]), single
    assert SINGLE in single["text"] and "16:9" in single["text"] and "black-forest-labs/flux-schnell" in single["text"]

    mapped = open_view(browser, ui_path(ui_server, "mapped", 1), expect_images=1)
    assert [i["w"] > 0 for i in mapped["images"]] == [True], mapped
    assert MAPPED[1] in mapped["text"] and MAPPED[0] not in mapped["text"]

    batch = open_view(browser, ui_path(ui_server, "batch"), expect_images=2)
    assert len(batch["images"]) == 2 and all(i["w"] > 0 for i in batch["images"]), batch
    text = batch["text"]
    assert text.index(BATCH[0]) < text.index(BATCH[1]) < text.index(BATCH[2])
    assert "NSFW content detected" in text  # the refused prompt's error

    gallery = open_view(browser, ui_path(ui_server), expect_images=7)
    assert len(gallery["images"]) == 7 and all(i["w"] > 0 for i in gallery["images"]), gallery
    for prompt in (SINGLE, *MAPPED, *BATCH, UNSTORED):
        assert prompt in gallery["text"], prompt
    delivery = [i for i in gallery["images"] if "/cometflux/thumb/" not in i["src"]]
    assert len(delivery) == 1, "the unstored prediction's live delivery URL"

    browser.switch_to.default_content()
    shot = Path(os.environ.get("COMETFLUX_GALLERY_SCREENSHOT") or ui_server.home / "gallery.png")
    if not shot.is_absolute():
        shot = ROOT / shot
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    if shot.parent != ui_server.home:
        shutil.copy(shot, ui_server.home / "gallery.png")
