"""
The review in a real browser: a reviewer opens the review task's *Required Actions* page in headless Chromium,
sees the four thumbnails (served by the plugin, decoded) with their prompts, chooses two in the form's options
field with the mouse and responds; the downstream task receives exactly those two. A viewer, who may not answer,
gets 403 from Airflow's HITL API.

``COMETFLUX_REVIEW_SCREENSHOT=docs/review.png`` keeps the page's screenshot (the two chosen) there: the README's.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.browser.test_gallery import ROOT, browser  # noqa: F401  (the Chromium fixture)
from tests.hitl_run import DAGS_TEST_HITL, REVIEWER, VIEWER, ReviewRun, dags_test_answers_hitl, review_run
from tests.integration.dags.cometflux_review_it import PROMPTS

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not dags_test_answers_hitl(), reason=DAGS_TEST_HITL),
]

DAGS = ROOT / "tests" / "integration" / "dags"


def page_state(driver: Any) -> dict[str, Any]:
    return dict(
        driver.execute_script(
            "return {text: document.body ? document.body.innerText : '',"
            " images: Array.from(document.images).filter(i => i.src.includes('/cometflux/thumb/'))"
            ".map(i => ({w: i.naturalWidth, done: i.complete, src: i.src}))}"
        )
    )


def open_required_action(driver: Any, run: ReviewRun, timeout: float = 90) -> dict[str, Any]:
    """The review's Required Actions page as the reviewer sees it, once its four thumbnails and its form show."""
    driver.get(run.url("/api/v2/version"))
    driver.add_cookie({"name": "_token", "value": run.token(REVIEWER), "path": "/"})
    run_id = quote(run.run_id() or "", safe="")
    driver.get(run.url(f"/dags/{run.dag_id}/runs/{run_id}/tasks/review/required_actions?map_index=-1"))
    deadline = time.monotonic() + timeout
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        state = page_state(driver)
        if len(state["images"]) >= 4 and all(i["done"] for i in state["images"]) and "Respond" in state["text"]:
            return state
        time.sleep(0.5)
    raise AssertionError(f"the Required Actions page did not show four thumbnails: {state}")


def tick(driver: Any, option: str, timeout: float = 20) -> None:
    """
    Choose ``option`` as a reviewer does: click the form's options field (Airflow renders a multiple-choice HITL
    task's options as a multi-select), then click the option in the menu it opens.
    """
    from selenium.webdriver.common.by import By

    field = driver.find_element(By.ID, "element_chosen_options")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", field)
    field.click()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        shown = [o for o in driver.find_elements(By.CSS_SELECTOR, "[role=option]") if o.is_displayed()]
        matches = [o for o in shown if o.text.strip() == option]
        if matches:
            matches[0].click()
            return
        time.sleep(0.2)
    raise AssertionError(f"no option {option!r} in the menu: {[o.text for o in shown]}")


def chosen(driver: Any, options: list[str]) -> list[str]:
    """Which of ``options`` the form's options field shows as chosen, in the order it shows them."""
    text = driver.execute_script("return document.getElementById('element_chosen_options').innerText")
    return [line.strip() for line in str(text).splitlines() if line.strip() in options]


def respond(driver: Any) -> None:
    from selenium.webdriver.common.by import By

    (button,) = [b for b in driver.find_elements(By.TAG_NAME, "button") if b.text.strip() == "Respond"]
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", button)
    button.click()


@pytest.mark.cometapi_simulator(run_seconds=0.2, api_key="review-key")
def test_a_reviewer_keeps_two_of_four_in_chromium_and_downstream_gets_those(
    browser: Any,  # noqa: F811
    tmp_path: Path,
    cometapi_simulator: Any,
):
    with review_run(tmp_path / "home", "it_review", DAGS, cometapi_simulator) as run:
        request = run.wait_for_request("review")
        keep = [request["options"][0], request["options"][2]]
        denied = run.answer("review", VIEWER, keep)
        assert denied.status_code == 403, denied.text

        state = open_required_action(browser, run)
        assert len(state["images"]) == 4 and all(i["w"] > 0 for i in state["images"]), state
        for prompt in PROMPTS:
            assert prompt in state["text"], prompt
        for option in keep:
            tick(browser, option)
        assert chosen(browser, request["options"]) == keep, chosen(browser, request["options"])
        shot = Path(os.environ.get("COMETFLUX_REVIEW_SCREENSHOT") or run.home / "review.png")
        shot = shot if shot.is_absolute() else ROOT / shot
        browser.save_screenshot(str(shot))
        if shot.parent != run.home:
            shutil.copy(shot, run.home / "review.png")
        respond(browser)
        deadline = time.monotonic() + 60
        while not run.responded("review"):
            assert time.monotonic() < deadline, f"no response recorded after Respond: {page_state(browser)['text']}"
            time.sleep(1)

        states = run.finish()
        assert states == {"generate": "success", "review": "success", "publish": "success"}, run.output()[-4000:]
        generated = run.xcom("generate")
        received = json.loads((run.home / "results" / "it_review.json").read_text())
        assert received == [generated[0][0], generated[2][0]]
