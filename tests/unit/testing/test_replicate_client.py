"""The official ``replicate`` client reads the simulator's answers as it reads the service's (skipped without it)."""

from __future__ import annotations

import pytest

from airflow_provider_cometflux.testing.simulator import CometAPISimulator
from tests.unit.testing.conftest import KEY, SCHNELL, decode

replicate = pytest.importorskip("replicate")


@pytest.fixture
def client_and_sim():  # type: ignore[no-untyped-def]
    with CometAPISimulator(run_seconds=0.2, api_key=KEY, requests_per_second=100) as sim:
        yield replicate.Client(api_token=KEY, base_url=f"{sim.base_url}/replicate"), sim


def test_a_prediction_through_the_official_client(client_and_sim) -> None:  # type: ignore[no-untyped-def]
    client, _sim = client_and_sim
    prediction = client.models.predictions.create(
        model=SCHNELL, input={"prompt": "a lighthouse", "aspect_ratio": "16:9", "num_outputs": 2}
    )
    assert prediction.status == "starting" and prediction.version == "hidden"
    prediction.wait()
    assert prediction.status == "succeeded" and prediction.error is None
    assert len(prediction.output) == 2
    assert set(prediction.metrics) == {"predict_time", "total_time", "image_count"}
    import requests

    assert decode(requests.get(prediction.output[0], timeout=30).content) == ("WEBP", (1344, 768))
    again = client.predictions.get(prediction.id)
    assert again.id == prediction.id and again.status == "succeeded"


def test_refusals_reach_the_official_client_as_replicate_errors(client_and_sim) -> None:  # type: ignore[no-untyped-def]
    client, _sim = client_and_sim
    from replicate.exceptions import ReplicateError

    with pytest.raises(ReplicateError) as unknown:
        client.models.predictions.create(model="nobody/nomodel", input={"prompt": "a"})
    assert unknown.value.status == 404 and unknown.value.detail == "The requested resource could not be found."
    with pytest.raises(ReplicateError) as invalid:
        client.models.predictions.create(model=SCHNELL, input={"prompt": "a", "num_outputs": 9})
    assert invalid.value.status == 422 and invalid.value.title == "Input validation failed"
    assert invalid.value.detail == "- input.num_outputs: Must be less than or equal to 4\n"


def test_cancel_through_the_official_client(client_and_sim) -> None:  # type: ignore[no-untyped-def]
    client, sim = client_and_sim
    prediction = client.models.predictions.create(model=SCHNELL, input={"prompt": "a cat [sim:stuck]"})
    prediction.cancel()
    prediction.reload()
    assert prediction.status == "canceled"
    assert sim.cancel_requests == [prediction.id]
