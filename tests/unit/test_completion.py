"""What completion keeps of a task's input in its records."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import PurePosixPath

from airflow_provider_cometflux.completion import recordable


def test_the_input_is_kept_as_given_made_json_safe():
    kept = recordable({"prompt": "a fox", "seed": 7, "image": PurePosixPath("/data/fox.png")})
    assert kept == {"prompt": "a fox", "seed": 7, "image": "/data/fox.png"}
    assert json.loads(json.dumps(kept)) == kept


def test_an_inline_image_is_kept_as_its_size_and_digest_only():
    raw = b"\x89PNG fox"
    uri = "data:image/png;base64," + base64.b64encode(raw).decode()
    kept = recordable({"prompt": "a fox", "image_prompt": uri})
    assert kept["image_prompt"] == {"data_uri": True, "bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}


def test_prompts_the_budget_left_uncreated_are_recorded_then_the_task_fails(tmp_path):
    import pytest

    from airflow_provider_cometflux.completion import Outputs, complete_batch
    from airflow_provider_cometflux.cost import BUDGET_STOP
    from airflow_provider_cometflux.exceptions import CometFluxBudgetError
    from airflow_provider_cometflux.provenance import load_manifests
    from tests.unit.fakes import context

    ctx = context()
    stop = f"{BUDGET_STOP} $0.0030 would be passed"
    with pytest.raises(CometFluxBudgetError, match=r"2 of 2 prompts were not created: not created: max_cost_usd"):
        complete_batch(
            ctx,
            [None, None],
            prompts=["a", "b"],
            payloads=[{"prompt": "a"}, {"prompt": "b"}],
            prediction_ids=[None, None],
            create_errors={0: stop, 1: stop},
            hook=None,  # type: ignore[arg-type]  # nothing to download
            outputs=Outputs(str(tmp_path)),
            fail_on_error=False,  # a budget stop fails the task whatever fail_on_error says
        )
    rows = load_manifests(tmp_path)
    assert [(row.status, row.error) for row in rows] == [("not_created", stop)] * 2
    assert ctx["ti"].xcoms["cost"] == {"usd": 0.0, "images": 0, "predictions": 0, "reused": 0}
