"""The review operator in a real Airflow: ``airflow dags test`` with the answer given through Airflow's HITL REST
API by a user allowed to answer (a viewer gets 403), the kept images flowing downstream, a redo round."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_provider_cometflux.contract import KEPT, REJECTED, XCOM_REVIEW
from tests.hitl_run import DAGS_TEST_HITL, REVIEWER, VIEWER, dags_test_answers_hitl, review_run

pytestmark = [
    pytest.mark.services,  # an API server beside `dags test`: run one at a time
    pytest.mark.skipif(not dags_test_answers_hitl(), reason=DAGS_TEST_HITL),
]

DAGS = Path(__file__).parent / "dags"


def form(**values: object) -> dict[str, object]:
    """Every field of the review's form, as the page sends it."""
    return {"redo": False, **{f"prompt_{i}": "" for i in range(1, 5)}, **values}


@pytest.mark.cometapi_simulator(run_seconds=0.2, api_key="review-key")
def test_a_reviewer_keeps_two_of_four_and_downstream_receives_exactly_those(tmp_path, cometapi_simulator):
    with review_run(tmp_path / "home", "it_review", DAGS, cometapi_simulator) as run:
        request = run.wait_for_request("review")
        assert request["multiple"] is True and len(request["options"]) == 4
        assert request["options"][0].startswith("1: a red kite")
        assert "/cometflux/thumb/it_review/" in request["body"] and "blue heron" in request["body"]
        chosen = [request["options"][1], request["options"][3]]
        refused = run.answer("review", VIEWER, chosen)
        assert refused.status_code == 403, refused.text
        assert run.answer("review", REVIEWER, chosen).status_code == 200
        states = run.finish()
        assert states == {"generate": "success", "review": "success", "publish": "success"}, run.output()[-4000:]
        generated = run.xcom("generate")
        assert run.xcom("review") == [generated[1][0], generated[3][0]]
        received = json.loads((run.home / "results" / "it_review.json").read_text())
        assert received == [generated[1][0], generated[3][0]]
        review = run.xcom("review", XCOM_REVIEW)
        assert [image["verdict"] for image in review["images"]] == [REJECTED, KEPT, REJECTED, KEPT]
        assert {image["by"] for image in review["images"]} == {REVIEWER}


@pytest.mark.cometapi_simulator(run_seconds=0.2, api_key="review-key")
def test_a_redo_round_makes_new_versions_and_asks_again(tmp_path, cometapi_simulator):
    with review_run(tmp_path / "home", "it_review_redo", DAGS, cometapi_simulator) as run:
        request = run.wait_for_request("review")
        options = request["options"]
        creates = cometapi_simulator.stats["creates"]
        amended = form(redo=True, prompt_3="a green frog on a lily pad")
        assert run.answer("review", REVIEWER, [options[0]], amended).status_code == 200
        run.wait_for_request("review")  # asked again, with new versions of images 2, 3 and 4
        assert cometapi_simulator.stats["creates"] == creates + 3
        assert run.answer("review", REVIEWER, [options[2]], form()).status_code == 200
        states = run.finish()
        assert states["publish"] == "success", run.output()[-4000:]
        review = run.xcom("review", XCOM_REVIEW)
        assert [r["round"] for r in review["rounds"]] == [1, 2] and review["rounds"][0]["redo"] is True
        generated = run.xcom("generate")
        kept = run.xcom("review")
        assert kept[0] == generated[0][0] and kept[1] == review["images"][2]["uri"] != generated[2][0]
        assert review["images"][2]["prompt"] == "a green frog on a lily pad"
        assert cometapi_simulator.stats["creates"] == creates + 3
