"""The checks of the faces' arguments: each fails without retries, naming the field, the value and what is allowed."""

from __future__ import annotations

from collections.abc import Sequence

from airflow_provider_cometflux.exceptions import CometFluxInputError


def _is_number(value: object) -> bool:
    """A real number, neither a bool nor NaN."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and value == value


def check_seconds(name: str, value: object, *, zero: bool = False) -> float:
    """
    :raises CometFluxInputError: when ``value`` is not a number of seconds above 0 (or >= 0 with ``zero``).
    """
    if not _is_number(value) or not (value >= 0 if zero else value > 0):  # type: ignore[operator]
        expected = "a number of seconds >= 0" if zero else "a number above 0"
        raise CometFluxInputError(f"{name}: {value!r} is not allowed; expected {expected}.")
    return float(value)  # type: ignore[arg-type]


def check_rate(name: str, value: object) -> float:
    """
    :raises CometFluxInputError: when ``value`` is not a number per minute above 0.
    """
    if not _is_number(value) or not value > 0:  # type: ignore[operator]
        raise CometFluxInputError(f"{name}: {value!r} is not allowed; expected a number per minute above 0.")
    return float(value)  # type: ignore[arg-type]


def check_count(name: str, value: object, *, low: int = 1, high: int | None = None) -> int:
    """
    :raises CometFluxInputError: when ``value`` is not an integer from ``low`` (to ``high``).
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        span = f"{low}..{high}" if high is not None else f">= {low}"
        raise CometFluxInputError(f"{name}: {value!r} is not allowed; expected an integer {span}.")
    return value


def check_queue(name: str, value: object) -> str | None:
    """
    :raises CometFluxInputError: when ``value`` is neither ``None`` nor a queue name (a non-empty string without
        surrounding spaces, as ``airflow triggerer --queues`` takes it).
    """
    if value is None:
        return None
    if not isinstance(value, str) or not value or value != value.strip() or "," in value:
        raise CometFluxInputError(
            f"{name}: {value!r} is not allowed; expected None or a queue name (non-empty, no spaces around it, "
            "no comma)."
        )
    return value


def check_usd(name: str, value: object) -> float | None:
    """
    :raises CometFluxInputError: when ``value`` is neither ``None`` nor a number of US dollars above 0.
    """
    if value is None:
        return None
    if not _is_number(value) or not value > 0 or value == float("inf"):  # type: ignore[operator]
        raise CometFluxInputError(f"{name}: {value!r} is not allowed; expected a number of US dollars above 0.")
    return float(value)  # type: ignore[arg-type]


def check_budget(max_cost_usd: float, model: str, estimates: Sequence[float | None], *, served: int) -> float:
    """
    The check before any create: the estimate of the predictions to create (prompts x images x price; those the
    reuse index serves are not among them) must be within ``max_cost_usd``.

    :param max_cost_usd: the budget.
    :param model: the model (named when it has no price).
    :param estimates: each prediction to create's estimate (``None`` when the model has no price).
    :param served: how many prompts the reuse index serves.
    :return: the estimate.
    :raises CometFluxBudgetError: naming the estimate and the budget, or the model without a price.
    """
    from airflow_provider_cometflux.cost import budget_refusal
    from airflow_provider_cometflux.exceptions import CometFluxBudgetError

    if any(estimate is None for estimate in estimates):
        raise CometFluxBudgetError(
            f"max_cost_usd: model {model!r} has no price, so nothing can be estimated against the budget "
            f"${max_cost_usd:.4f}; nothing was created. Give its price in the task's prices argument or the "
            'connection extra prices, e.g. {"' + model + '": 0.01} (USD per image).'
        )
    estimated = round(sum(e for e in estimates if e is not None), 6)
    if estimated > max_cost_usd + 1e-9:
        raise CometFluxBudgetError(
            budget_refusal(estimated, max_cost_usd, prompts=len(estimates) + served, served=served)
        )
    return estimated
