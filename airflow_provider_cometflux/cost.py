"""What an image costs: a dated table of public list prices, overrides, estimates before creating, and the tally.

Neither Replicate nor CometAPI says what a prediction cost (its metrics hold ``predict_time`` and ``image_count``),
so the provider prices each prediction itself: the model's price per image (FLUX.1) or per output megapixel
(FLUX.2), times the images it made (``metrics.image_count``, else its outputs) and, per megapixel, their size as
the input asks for it (``resolution``, or ``width`` x ``height`` with a ``custom`` aspect ratio). The defaults are
public list prices (:data:`PRICES_SOURCE`, :data:`PRICES_DATE`); an account's prices may differ, so the connection
extra ``prices`` and the operators' ``prices`` argument override them per model.

Pure data and arithmetic: no Airflow import, nothing here speaks HTTP.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from airflow_provider_cometflux.exceptions import CometFluxInputError

#: Where the default prices come from, and when they were read.
PRICES_SOURCE = "public list prices: Replicate's and Black Forest Labs' pages, per model in PRICE_SOURCES"
PRICES_DATE = "2026-10"
#: Units a price may be given in.
PER_IMAGE = "image"
PER_MEGAPIXEL = "megapixel"
UNITS = (PER_IMAGE, PER_MEGAPIXEL)
#: The message a prompt left uncreated by the budget carries (also how completion knows the task must fail).
BUDGET_STOP = "not created: max_cost_usd"


@dataclass(frozen=True)
class Price:
    """
    A model's price.

    :param usd: US dollars per unit.
    :param per: :data:`PER_IMAGE` or :data:`PER_MEGAPIXEL` (of each output image).
    """

    usd: float
    per: str = PER_IMAGE

    def describe(self) -> str:
        return f"${self.usd:g} per {self.per}"


#: Public list prices per model, as of :data:`PRICES_DATE` (:data:`PRICES_SOURCE`). FLUX.2 is priced per output
#: megapixel; input reference images (which Replicate also prices per megapixel) are not counted. A model without a
#: list price here (flux-2-dev, any other id) has no estimate until ``prices`` gives one.
DEFAULT_PRICES: dict[str, Price] = {
    "black-forest-labs/flux-schnell": Price(0.003),
    "black-forest-labs/flux-dev": Price(0.025),
    "black-forest-labs/flux-pro": Price(0.055),
    "black-forest-labs/flux-1.1-pro": Price(0.04),
    "black-forest-labs/flux-1.1-pro-ultra": Price(0.06),
    "black-forest-labs/flux-kontext-pro": Price(0.04),
    "black-forest-labs/flux-kontext-max": Price(0.08),
    "black-forest-labs/flux-2-pro": Price(0.015, PER_MEGAPIXEL),
    "black-forest-labs/flux-2-flex": Price(0.06, PER_MEGAPIXEL),
}

#: Where each default price was read (:data:`PRICES_DATE`). Two are not confirmed from a first-hand page and say so:
#: check them against your account before relying on a budget.
PRICE_SOURCES: dict[str, str] = {
    "black-forest-labs/flux-schnell": "Replicate's pricing page",
    "black-forest-labs/flux-dev": "not confirmed: Replicate's commonly quoted list price",
    "black-forest-labs/flux-pro": "Replicate's model page (black-forest-labs/flux-pro)",
    "black-forest-labs/flux-1.1-pro": "Black Forest Labs' pricing page (docs.bfl.ml)",
    "black-forest-labs/flux-1.1-pro-ultra": "Black Forest Labs' pricing page (docs.bfl.ml)",
    "black-forest-labs/flux-kontext-pro": "Black Forest Labs' pricing page (docs.bfl.ml)",
    "black-forest-labs/flux-kontext-max": "Black Forest Labs' pricing page (docs.bfl.ml)",
    "black-forest-labs/flux-2-pro": "not confirmed: resellers' listings ($0.015 to $0.03 per megapixel)",
    "black-forest-labs/flux-2-flex": "Black Forest Labs' list price",
}

#: ``resolution`` values (FLUX.2) -> megapixels; ``match_input_image`` is counted as the default, 1 MP.
_RESOLUTIONS = {"0.5 MP": 0.5, "1 MP": 1.0, "2 MP": 2.0, "4 MP": 4.0}
#: The megapixels of an image whose size the input does not say.
DEFAULT_MEGAPIXELS = 1.0


def parse_prices(value: object, where: str) -> dict[str, Price]:
    """
    Read prices as a user gives them: ``{"<owner/name>": <USD per image>}`` or ``{"<owner/name>": {"usd": 0.015,
    "per": "megapixel"}}``.

    :param value: the mapping (``None`` or empty: no override).
    :param where: what to name in an error (``prices``, ``connection 'cometapi_default' extra prices``).
    :raises CometFluxInputError: naming the model and the value, and what is allowed.
    """
    if value is None or value == "":
        return {}
    if not isinstance(value, Mapping):
        raise CometFluxInputError(
            f"{where}: {value!r} is not allowed; expected a mapping of model id to USD per image, "
            'e.g. {"black-forest-labs/flux-schnell": 0.003}.'
        )
    prices: dict[str, Price] = {}
    for model, given in value.items():
        usd, per = (given.get("usd"), given.get("per", PER_IMAGE)) if isinstance(given, Mapping) else (given, PER_IMAGE)
        if isinstance(usd, bool) or not isinstance(usd, (int, float)) or not math.isfinite(usd) or usd < 0:
            raise CometFluxInputError(
                f"{where}[{model!r}]: {given!r} is not allowed; expected a number of US dollars >= 0 per image, or "
                f'{{"usd": <number>, "per": "image" or "megapixel"}}.'
            )
        if per not in UNITS:
            raise CometFluxInputError(f"{where}[{model!r}].per: {per!r} is not allowed; expected one of {UNITS}.")
        prices[str(model)] = Price(float(usd), str(per))
    return prices


def price_table(*overrides: Mapping[str, Price]) -> dict[str, Price]:
    """The default table, each override applied in turn (the last wins: connection, then the task's argument)."""
    table = dict(DEFAULT_PRICES)
    for override in overrides:
        table.update(override)
    return table


def images_asked(model_input: Mapping[str, Any]) -> int:
    """How many images a prediction of this input makes: ``num_outputs``, else one."""
    count = model_input.get("num_outputs")
    return count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else 1


def megapixels(model_input: Mapping[str, Any]) -> float:
    """
    The megapixels of each image the input asks for: ``width`` x ``height`` with a ``custom`` aspect ratio,
    else ``resolution`` (FLUX.2) or ``megapixels`` (FLUX.1 schnell, dev), else :data:`DEFAULT_MEGAPIXELS`.
    """
    width, height = model_input.get("width"), model_input.get("height")
    if model_input.get("aspect_ratio") == "custom" and isinstance(width, int) and isinstance(height, int):
        return width * height / 1_000_000
    resolution = model_input.get("resolution")
    if isinstance(resolution, str) and resolution in _RESOLUTIONS:
        return _RESOLUTIONS[resolution]
    try:
        return float(model_input.get("megapixels") or DEFAULT_MEGAPIXELS)
    except (TypeError, ValueError):
        return DEFAULT_MEGAPIXELS


def image_cost(price: Price, model_input: Mapping[str, Any]) -> float:
    """The price of one image of this input."""
    return price.usd * (megapixels(model_input) if price.per == PER_MEGAPIXEL else 1.0)


def estimate(model: str, model_input: Mapping[str, Any], prices: Mapping[str, Price]) -> float | None:
    """What one prediction of this input should cost (``None`` when the model has no price)."""
    price = prices.get(model)
    return None if price is None else round(image_cost(price, model_input) * images_asked(model_input), 6)


def prediction_cost(
    model: str | None, model_input: Mapping[str, Any], images: int, prices: Mapping[str, Price]
) -> dict[str, Any]:
    """
    A finished prediction's record of its cost: ``{"usd", "images"}`` (``usd`` is ``None`` for a model without a
    price).

    :param images: the images it made (``metrics.image_count``, else its outputs).
    """
    price = prices.get(model or "")
    usd = None if price is None else round(image_cost(price, model_input) * images, 6)
    return {"usd": usd, "images": int(images)}


def image_count(prediction: Mapping[str, Any], outputs: int) -> int:
    """The images a prediction made, as the service counts them (``metrics.image_count``), else its outputs."""
    metrics = prediction.get("metrics")
    count = metrics.get("image_count") if isinstance(metrics, Mapping) else None
    return count if isinstance(count, int) and not isinstance(count, bool) and count >= 0 else outputs


def total(costs: Sequence[Mapping[str, Any] | None], *, reused: Sequence[bool] = ()) -> dict[str, Any]:
    """
    XCom ``cost``: ``{"usd", "images", "predictions", "reused"}`` over a task's recorded predictions; reused
    images cost 0. ``usd`` is ``None`` when a paid prediction's model has no price.

    :param costs: each recorded prediction's ``cost`` (``None`` entries are skipped).
    :param reused: per entry, whether its images were reused.
    """
    usd: float | None = 0.0
    images = predictions = reused_count = 0
    for i, cost in enumerate(costs):
        if not cost:
            continue
        predictions += 1
        images += int(cost.get("images") or 0)
        if i < len(reused) and reused[i]:
            reused_count += 1
            continue
        if cost.get("usd") is None or usd is None:
            usd = None
        else:
            usd += float(cost["usd"])
    return {
        "usd": None if usd is None else round(usd, 6),
        "images": images,
        "predictions": predictions,
        "reused": reused_count,
    }


def budget_refusal(estimated: float, budget: float, *, prompts: int, served: int) -> str:
    """The message of a task whose estimate passes its budget (nothing was created)."""
    return (
        f"max_cost_usd: the estimate ${estimated:.4f} for {prompts} prediction(s) "
        f"({served} served by reuse_path at no cost) is above the budget ${budget:.4f}; nothing was created or paid "
        "for. Raise max_cost_usd, send fewer prompts or images, or set prices if your account's differ."
    )


class CreateBudget:
    """
    ``max_cost_usd`` while a batch is created: what is spent (predictions answered finished, priced as they came
    out) plus what is in flight (created, priced at their estimate) plus the next create must stay within it.

    :param limit: ``max_cost_usd``.
    :param model: the model.
    :param payloads: each prompt's input.
    :param prices: the price table (every payload's model priced: the check before any create made sure).
    """

    def __init__(
        self, limit: float, model: str, payloads: Sequence[Mapping[str, Any]], prices: Mapping[str, Price]
    ) -> None:
        self.limit = limit
        self.model = model
        self.payloads = payloads
        self.prices = prices
        self.committed: dict[int, float] = {}

    def estimate(self, index: int) -> float:
        return estimate(self.model, self.payloads[index], self.prices) or 0.0

    @property
    def spent(self) -> float:
        """Spent plus in flight."""
        return sum(self.committed.values())

    def allows(self, index: int) -> bool:
        """Whether creating prompt ``index`` keeps spent plus in flight within the budget."""
        return self.spent + self.estimate(index) <= self.limit + 1e-9

    def commit(self, index: int, prediction: Mapping[str, Any] | None = None) -> None:
        """
        Count prompt ``index``'s prediction: at its estimate while it runs, at its cost once it succeeded, at 0 once
        it failed.
        """
        status = prediction.get("status") if prediction is not None else None
        if status == "succeeded" and prediction is not None:
            output = prediction.get("output")
            outputs = len(output) if isinstance(output, list) else int(bool(output))
            made = image_count(prediction, outputs)
            usd = prediction_cost(self.model, self.payloads[index], made, self.prices)["usd"]
            self.committed[index] = float(usd) if usd is not None else self.estimate(index)
        elif status in ("failed", "canceled", "aborted"):
            self.committed[index] = 0.0
        else:
            self.committed[index] = self.estimate(index)

    def release(self, index: int) -> None:
        """Prompt ``index``'s create was refused: nothing is in flight for it."""
        self.committed.pop(index, None)

    def stop_message(self, index: int) -> str:
        """Why prompt ``index`` was not created (begins with :data:`BUDGET_STOP`)."""
        return (
            f"{BUDGET_STOP} ${self.limit:.4f} would be passed: ${self.spent:.4f} spent or in flight, and this "
            f"prompt's estimate is ${self.estimate(index):.4f}"
        )
