"""What an image costs: the dated price table, overrides, estimates, totals and the budget while creating."""

from __future__ import annotations

import pytest

from airflow_provider_cometflux import cost
from airflow_provider_cometflux.checks import check_budget, check_usd
from airflow_provider_cometflux.exceptions import CometFluxBudgetError, CometFluxInputError
from airflow_provider_cometflux.schema import MODELS

SCHNELL = "black-forest-labs/flux-schnell"
FLUX2 = "black-forest-labs/flux-2-pro"


def test_the_default_table_is_dated_sourced_and_prices_only_known_models():
    assert cost.PRICES_DATE and "Replicate" in cost.PRICES_SOURCE
    assert cost.DEFAULT_PRICES[SCHNELL] == cost.Price(0.003)  # Replicate's list price, per image
    assert cost.DEFAULT_PRICES[FLUX2].per == cost.PER_MEGAPIXEL
    assert set(cost.DEFAULT_PRICES) <= set(MODELS)


@pytest.mark.parametrize(
    ("model_input", "megapixels"),
    [
        ({}, 1.0),
        ({"resolution": "2 MP"}, 2.0),
        ({"resolution": "0.5 MP"}, 0.5),
        ({"aspect_ratio": "custom", "width": 2000, "height": 1000}, 2.0),
        ({"aspect_ratio": "16:9", "width": 2000, "height": 1000}, 1.0),  # width/height only count with custom
        ({"megapixels": "0.25"}, 0.25),
    ],
)
def test_megapixels_come_from_the_input(model_input, megapixels):
    assert cost.megapixels(model_input) == megapixels


def test_an_estimate_is_images_times_the_price_per_image_or_per_megapixel():
    prices = cost.price_table()
    assert cost.estimate(SCHNELL, {"prompt": "a", "num_outputs": 4}, prices) == 0.012
    assert cost.estimate(FLUX2, {"prompt": "a", "resolution": "2 MP"}, prices) == 0.03
    assert cost.estimate("someone/else", {"prompt": "a"}, prices) is None


def test_the_connection_then_the_task_override_the_table():
    account = cost.parse_prices({SCHNELL: 0.002}, "connection extra prices")
    task = cost.parse_prices({SCHNELL: {"usd": 0.001, "per": "image"}, "me/mine": 0.5}, "prices")
    assert cost.price_table(account)[SCHNELL].usd == 0.002
    table = cost.price_table(account, task)
    assert table[SCHNELL].usd == 0.001 and table["me/mine"] == cost.Price(0.5)


@pytest.mark.parametrize(
    ("given", "named"),
    [
        ([0.1], "prices: [0.1] is not allowed"),
        ({SCHNELL: -1}, "prices['black-forest-labs/flux-schnell']: -1 is not allowed"),
        ({SCHNELL: "cheap"}, "'cheap' is not allowed"),
        ({SCHNELL: True}, "True is not allowed"),
        ({SCHNELL: {"usd": 0.1, "per": "second"}}, "prices['black-forest-labs/flux-schnell'].per: 'second'"),
    ],
)
def test_bad_prices_name_the_model_and_the_value(given, named):
    with pytest.raises(CometFluxInputError, match="expected") as caught:
        cost.parse_prices(given, "prices")
    assert named in str(caught.value)


def test_a_prediction_is_priced_by_the_images_it_made():
    prices = cost.price_table()
    made = cost.image_count({"metrics": {"image_count": 3}}, outputs=1)
    assert made == 3 and cost.image_count({"metrics": {}}, outputs=2) == 2
    assert cost.prediction_cost(SCHNELL, {}, made, prices) == {"usd": 0.009, "images": 3}
    assert cost.prediction_cost("me/unknown", {}, 1, prices) == {"usd": None, "images": 1}


def test_the_total_counts_reused_images_at_zero():
    costs = [{"usd": 0.003, "images": 1}, {"usd": 0.0, "images": 2}, None]
    assert cost.total(costs, reused=[False, True]) == {"usd": 0.003, "images": 3, "predictions": 2, "reused": 1}
    assert cost.total([{"usd": None, "images": 1}])["usd"] is None
    assert cost.total([]) == {"usd": 0.0, "images": 0, "predictions": 0, "reused": 0}


def test_the_budget_check_names_the_estimate_and_the_budget():
    assert check_budget(0.01, SCHNELL, [0.003, 0.003], served=1) == 0.006
    with pytest.raises(CometFluxBudgetError) as caught:
        check_budget(0.005, SCHNELL, [0.003, 0.003], served=1)
    assert "estimate $0.0060 for 3 prediction(s) (1 served by reuse_path" in str(caught.value)
    assert "budget $0.0050" in str(caught.value)
    with pytest.raises(CometFluxBudgetError, match="'me/unknown' has no price"):
        check_budget(1.0, "me/unknown", [None], served=0)


@pytest.mark.parametrize("value", [0, -1, "1", True, float("nan"), float("inf")])
def test_max_cost_usd_must_be_dollars_above_zero(value):
    with pytest.raises(CometFluxInputError, match=r"max_cost_usd: .* expected a number of US dollars above 0"):
        check_usd("max_cost_usd", value)


def test_while_creating_spent_plus_in_flight_stays_within_the_budget():
    payloads = [{"prompt": str(i)} for i in range(4)]
    budget = cost.CreateBudget(0.007, SCHNELL, payloads, cost.price_table())
    assert budget.allows(0)
    budget.commit(0)  # in flight at its estimate
    budget.commit(1, {"status": "succeeded", "output": ["u"], "metrics": {"image_count": 1}})
    assert budget.spent == pytest.approx(0.006) and not budget.allows(2)
    assert budget.stop_message(2).startswith(cost.BUDGET_STOP)
    budget.commit(0, {"status": "failed"})  # a failed prediction is not charged
    assert budget.allows(2)
    budget.release(1)
    assert budget.spent == 0.0


def test_every_default_price_says_where_it_was_read():
    from airflow_provider_cometflux.cost import DEFAULT_PRICES, PRICE_SOURCES

    assert set(PRICE_SOURCES) == set(DEFAULT_PRICES) and all(PRICE_SOURCES.values())
