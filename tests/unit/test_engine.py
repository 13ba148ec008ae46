"""What the operators and the sensor share: the checked download settings, outputs, deferral, lineage."""

from __future__ import annotations

import logging
import time

import pytest

from airflow_provider_cometflux._compat import TRIGGER_ON_KILL
from airflow_provider_cometflux.engine import DEFER_GRACE, Engine, defer_timeout
from airflow_provider_cometflux.exceptions import CometFluxInputError
from airflow_provider_cometflux.lineage import PREDICTION_FACET
from airflow_provider_cometflux.triggers.prediction import CometFluxPredictionTrigger


def engine(**kwargs) -> Engine:
    options = {"max_output_bytes": 1024, "download_timeout": 30.0}
    options.update(kwargs)
    return Engine("cometapi_x", **options)


@pytest.mark.parametrize(
    "bad", [{"max_output_bytes": 0}, {"download_timeout": -1}, {"download_concurrency": 0}], ids=lambda b: next(iter(b))
)
def test_bad_download_settings_fail_naming_the_field(bad):
    with pytest.raises(CometFluxInputError, match=next(iter(bad))):
        engine(**bad)


def test_outputs_take_the_rendered_folder_and_the_inputs_output_format():
    outputs = engine(download_concurrency=3).outputs("/tmp/out", {"output_format": "png", "seed": 1})
    assert (outputs.output_path, outputs.output_format, outputs.max_bytes, outputs.timeout) == (
        "/tmp/out",
        "png",
        1024,
        30.0,
    )
    assert outputs.download_concurrency == 3 and outputs.stored
    assert engine().outputs(None).output_format is None and not engine().outputs(None).stored


def test_the_hook_is_of_the_tasks_connection_and_made_once():
    shared = engine()
    assert shared.hook.cometapi_conn_id == "cometapi_x" and shared.hook is shared.hook


def test_the_prediction_trigger_holds_the_id_and_numbers_only(caplog):
    end_time = time.time() + 60
    log = logging.getLogger("cometflux.test")
    with caplog.at_level(logging.INFO, logger=log.name):
        trigger = engine().prediction_trigger("p1abc", poll_interval=1.5, end_time=end_time, log=log)
    assert ("cannot cancel prediction p1abc" in caplog.text) is not TRIGGER_ON_KILL  # a trigger's on_kill: 3.3+
    assert isinstance(trigger, CometFluxPredictionTrigger)
    kwargs = trigger.serialize()[1]
    assert kwargs["prediction_id"] == "p1abc" and kwargs["cometapi_conn_id"] == "cometapi_x"
    assert kwargs["poll_interval"] == 1.5 and kwargs["end_time"] == end_time


@pytest.mark.parametrize("bad", ["", " cometflux", "a,b", 3])
def test_a_bad_trigger_queue_fails_naming_the_field(bad):
    with pytest.raises(CometFluxInputError, match=f"trigger_queue: {bad!r} is not allowed"):
        engine(trigger_queue=bad)


class _Deferring:
    """What ``Engine.defer`` uses of a task: its ``queue`` (Airflow's trigger queue) and ``defer``."""

    def __init__(self) -> None:
        self.queue = "default"
        self.deferred_with_queue: str | None = None

    def defer(self, **kwargs) -> None:
        self.deferred_with_queue = self.queue  # what Airflow's task runner reads when the deferral is raised
        raise RuntimeError("deferred")


@pytest.mark.parametrize(("trigger_queue", "queue"), [(None, "default"), ("cometflux", "cometflux")])
def test_a_trigger_queue_is_the_queue_the_trigger_is_deferred_with(trigger_queue, queue):
    task = _Deferring()
    log = logging.getLogger("cometflux.test")
    trigger = engine().prediction_trigger("p1abc", poll_interval=1.0, end_time=time.time() + 60, log=log)
    with pytest.raises(RuntimeError, match="deferred"):
        engine(trigger_queue=trigger_queue).defer(task, trigger, time.time() + 60)  # type: ignore[arg-type]
    assert task.deferred_with_queue == queue


def test_airflow_lets_a_deferred_task_run_to_its_deadline_plus_a_grace():
    assert defer_timeout(time.time() + 100).total_seconds() == pytest.approx(100 + DEFER_GRACE, abs=1)
    assert defer_timeout(time.time() - 100).total_seconds() == DEFER_GRACE


def test_lineage_names_the_predictions_ran_and_the_folder():
    shared = engine()
    shared.prediction_ids = ["p1", "p2"]
    lineage = shared.lineage("black-forest-labs/flux-schnell", "/tmp/out", failed=True)
    assert [d.name for d in lineage.outputs] == ["/tmp/out"]
    assert lineage.run_facets[PREDICTION_FACET].predictionIds == ["p1", "p2"]
    assert lineage.run_facets[PREDICTION_FACET].failed is True


def test_every_face_hands_its_trigger_queue_to_the_engine():
    from airflow.sdk import DAG, task

    from airflow_provider_cometflux.operators.batch import CometFluxBatchOperator
    from airflow_provider_cometflux.operators.flux import CometFluxPredictionOperator
    from airflow_provider_cometflux.sensors.prediction import CometFluxPredictionSensor

    with DAG("trigger_queue_faces", schedule=None):
        faces = [
            CometFluxPredictionOperator(task_id="flux", prompt="a fox", trigger_queue="cometflux"),
            CometFluxBatchOperator(task_id="batch", prompts=["a fox"], trigger_queue="cometflux"),
            CometFluxPredictionSensor(task_id="sensor", prediction_id="p1abc", trigger_queue="cometflux"),
        ]

        @task.cometflux(trigger_queue="cometflux")
        def drawn() -> str:
            return "a fox"

        faces.append(drawn().operator)
    assert [face.engine.trigger_queue for face in faces] == ["cometflux"] * 4
    assert CometFluxPredictionOperator(task_id="plain", prompt="a fox").engine.trigger_queue is None
