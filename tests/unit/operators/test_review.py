"""The review operator: images from upstream outputs, options known at run time, verdicts, redo rounds, skips."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_cometflux._compat import hitl_supported
from airflow_provider_cometflux.contract import KEPT, PENDING, REJECTED, XCOM_REVIEW
from airflow_provider_cometflux.exceptions import CometFluxInputError
from tests.unit.fakes import FakeStore, context

if not hitl_supported():  # Airflow 3.0: the module refuses to load (tests/unit/test_compat.py)
    pytest.skip("the review operator needs Airflow 3.1+", allow_module_level=True)

from airflow_provider_cometflux.operators.batch import CometFluxBatchOperator
from airflow_provider_cometflux.operators.review import (
    REDO_PARAM,
    CometFluxReviewOperator,
    flatten_images,
    option_label,
    prompt_param,
)
from airflow_provider_cometflux.provenance import load_manifest, load_record

PROMPTS = ["a red fox", "a blue heron", "a green frog", "a yellow finch"]


def batch_images(tmp_path: Path, prompts: list[str] = PROMPTS) -> list[list[str]]:
    """Stored images of a batch run against the simulator, with their sidecars and manifest."""
    op = CometFluxBatchOperator(
        task_id="generate", prompts=prompts, output_path=tmp_path.as_uri(), poll_interval=0.1, deferrable=False
    )
    return op.execute(context())


def review(images: Any, **kwargs: Any) -> CometFluxReviewOperator:
    return CometFluxReviewOperator(task_id="review", images=images, poll_interval=0.1, **kwargs)


def answer(chosen: list[str], params: dict[str, Any] | None = None, by: str = "rita") -> dict[str, Any]:
    """The event Airflow hands ``execute_complete`` once a reviewer answered (the form sends every field)."""
    form = {REDO_PARAM: False, **{prompt_param(i): "" for i in range(len(PROMPTS))}, **params} if params else {}
    return {
        "chosen_options": chosen,
        "params_input": form,
        "responded_at": datetime(2026, 12, 7, 15, 0, tzinfo=timezone.utc),
        "responded_by_user": {"id": by, "name": by},
    }


class ReviewTI:
    """A task instance as the review sees it: its own XComs, its place in the run."""

    def __init__(self) -> None:
        ctx = context(FakeStore())
        self.context = ctx
        ti = ctx["ti"]
        ti.task_id, ti.dag_id, ti.run_id = "review", "gallery", "manual__2026-12-07T15:00:00+00:00"
        self.ti = ti


def ask(op: CometFluxReviewOperator, ti: ReviewTI) -> dict[str, Any]:
    """What ``execute`` does before Airflow writes the HITL request: state pushed, options, form and body set."""
    state = op.prepare()
    ti.ti.xcom_push(key=XCOM_REVIEW, value=state)
    op.resolve(state)
    op.body = op.review_body(ti.context, state)
    return state


def test_flatten_takes_every_upstream_shape():
    assert flatten_images(["a", "b"]) == ["a", "b"]
    assert flatten_images([["a", "b"], None, ["c"]]) == ["a", "b", "c"]
    assert flatten_images(iter([[["a"], ["b"]], [["c"]]])) == ["a", "b", "c"]  # mapped batches
    for bad in ("", [""], [{"uri": "a"}], 7, [[[["deep"]]]]):
        with pytest.raises(CometFluxInputError, match="images"):
            flatten_images(bad)


def test_review_arguments_are_checked_at_parse_time():
    with pytest.raises(CometFluxInputError, match="options"):
        review(["x"], options=["a"])
    with pytest.raises(CometFluxInputError, match="max_rounds"):
        review(["x"], max_rounds=0)
    with pytest.raises(CometFluxInputError, match="params: prompt_1"):
        review(["x"], params={"prompt_1": "mine"})
    op = review(["x"], params={"channel": "web"})
    assert op.options == [] and op.multiple is True


def test_delivery_urls_are_refused_before_anything_is_asked():
    with pytest.raises(CometFluxInputError, match=r"images\[0\].*output_path"):
        review(["https://delivery.example/abc.webp"]).prepare()


def test_options_are_resolved_at_run_time_one_per_image_in_order(tmp_path, cometapi_connection):
    images = batch_images(tmp_path)
    op, ti = review(images, max_rounds=2), ReviewTI()
    state = ask(op, ti)
    assert op.options == [option_label(i, prompt) for i, prompt in enumerate(PROMPTS)]
    assert [image["uri"] for image in state["images"]] == [uri for per_prompt in images for uri in per_prompt]
    assert {image["verdict"] for image in state["images"]} == {PENDING}
    assert set(op.params) == {REDO_PARAM, *(prompt_param(i) for i in range(4))}
    # the body shows each prompt and its thumbnail through the plugin's route of this task instance
    for slot, prompt in enumerate(PROMPTS):
        assert prompt.split()[-1] in op.body
        assert f"/cometflux/thumb/gallery/manual__2026-12-07T15%3A00%3A00%2B00%3A00/review/-1/{slot})" in op.body


def test_the_answer_keeps_the_chosen_images_in_order_and_records_every_verdict(tmp_path, cometapi_connection):
    images = batch_images(tmp_path)
    op, ti = review(images), ReviewTI()
    ask(op, ti)
    resumed = review(images)  # Airflow resumes a fresh copy of the operator: the options come from the XCom
    kept = resumed.execute_complete(ti.context, answer([op.options[3], op.options[1]]))
    assert kept == [images[1][0], images[3][0]]
    state = ti.ti.xcoms[XCOM_REVIEW]
    assert [image["verdict"] for image in state["images"]] == [REJECTED, KEPT, REJECTED, KEPT]
    assert {image["by"] for image in state["images"]} == {"rita"}
    assert state["rounds"][0]["kept"] == [1, 3] and state["rounds"][0]["redo"] is False
    record = load_record(images[1][0])
    assert record.review[0]["verdict"] == KEPT and record.review[0]["round"] == 1
    assert record.review[0]["by"] == "rita" and record.review[0]["uri"] == images[1][0]
    rows = load_manifest(tmp_path / "manifest.jsonl")
    assert [row.review[0]["verdict"] for row in rows] == [REJECTED, KEPT, REJECTED, KEPT]


def test_keeping_none_skips_the_downstream_tasks(tmp_path, cometapi_connection):
    from airflow.providers.common.compat.sdk import DownstreamTasksSkipped
    from airflow.sdk import DAG

    images = batch_images(tmp_path, PROMPTS[:2])
    with DAG("gallery", schedule=None):
        op = review(images)
        downstream = CometFluxBatchOperator(task_id="publish", prompts=["x"])
        op >> downstream
    ti = ReviewTI()
    ask(op, ti)
    ti.context["task"] = op
    with pytest.raises(DownstreamTasksSkipped) as raised:
        op.execute_complete(ti.context, answer([]))
    assert [getattr(task, "task_id", task) for task in raised.value.tasks] == ["publish"]
    assert [image["verdict"] for image in ti.ti.xcoms[XCOM_REVIEW]["images"]] == [REJECTED, REJECTED]


def test_an_answer_outside_the_options_fails(tmp_path, cometapi_connection):
    op, ti = review(batch_images(tmp_path, PROMPTS[:1])), ReviewTI()
    ask(op, ti)
    with pytest.raises(ValueError, match="not in"):
        review([]).execute_complete(ti.context, answer(["9: not an image"]))


def test_redo_makes_new_versions_once_per_round_then_asks_again(tmp_path, cometapi_connection, monkeypatch):
    images = batch_images(tmp_path)
    creates = cometapi_connection.stats["creates"]
    op, ti = review(images, max_rounds=2), ReviewTI()
    ask(op, ti)
    asked: list[dict[str, Any]] = []
    monkeypatch.setattr(
        CometFluxReviewOperator, "_ask", lambda self, ctx, state: asked.append(json.loads(json.dumps(state)))
    )
    first = answer([op.options[0]], {REDO_PARAM: True, prompt_param(2): "a green frog on a lily pad"})
    review(images, max_rounds=2).execute_complete(ti.context, first)
    assert cometapi_connection.stats["creates"] == creates + 3  # images 2, 3 and 4, once
    (state,) = asked
    assert state["round"] == 2 and state["rounds"][0]["redo"] is True
    slots = state["images"]
    assert slots[0]["uri"] == images[0][0] and slots[0]["verdict"] == KEPT
    assert all(slot["round"] == 2 and slot["verdict"] == PENDING for slot in slots[1:])
    assert slots[2]["prompt"] == "a green frog on a lily pad" and slots[1]["prompt"] == PROMPTS[1]
    new = load_record(slots[1]["uri"])
    assert new.input["seed"] != load_record(images[1][0]).input.get("seed") and new.input["prompt"] == PROMPTS[1]
    assert ti.ti.xcoms[f"{XCOM_REVIEW}_round_2_ids"] == [slot["prediction_id"] for slot in slots[1:]]
    # the rejected originals carry their verdict; the second answer decides the new versions only
    assert load_record(images[2][0]).review[0]["verdict"] == REJECTED
    ti.ti.xcom_push(key=XCOM_REVIEW, value=state)
    monkeypatch.undo()
    kept = review(images, max_rounds=2).execute_complete(ti.context, answer([op.options[2]], {REDO_PARAM: True}))
    assert kept == [images[0][0], slots[2]["uri"]]  # no third round: max_rounds reached
    final = ti.ti.xcoms[XCOM_REVIEW]
    assert [r["round"] for r in final["rounds"]] == [1, 2]
    assert cometapi_connection.stats["creates"] == creates + 3
    assert load_record(slots[2]["uri"]).review[0] | {"at": None} == {
        "uri": slots[2]["uri"],
        "verdict": KEPT,
        "by": "rita",
        "at": None,
        "round": 2,
        "task_id": "review",
        "run_id": "manual__2026-12-07T15:00:00+00:00",
    }
