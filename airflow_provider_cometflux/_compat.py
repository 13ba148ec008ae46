"""Every difference between the supported Airflow releases (3.0 to 3.3), in one place."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from airflow import __version__ as AIRFLOW_VERSION
from airflow.triggers.base import BaseTrigger
from packaging.version import Version

try:
    from airflow.sdk import BaseHook
except ImportError:  # Airflow 3.0
    from airflow.hooks.base import BaseHook  # type: ignore[no-redef,attr-defined]

try:
    from airflow.sdk import BaseOperator, BaseSensorOperator, PokeReturnValue, conf
except ImportError:  # Airflow 3.0
    from airflow.configuration import conf  # type: ignore[no-redef,assignment]
    from airflow.sdk import BaseOperator, BaseSensorOperator, PokeReturnValue

try:
    from airflow.sdk.exceptions import AirflowException, AirflowFailException
except ImportError:  # Airflow 3.0
    from airflow.exceptions import AirflowException, AirflowFailException  # type: ignore[no-redef]

try:
    from airflow.sdk.exceptions import AirflowSensorTimeout
except ImportError:  # Airflow 3.0-3.1
    from airflow.exceptions import AirflowSensorTimeout  # type: ignore[no-redef,attr-defined]

try:
    from airflow.sdk.bases.decorator import determine_kwargs
except ImportError:  # Airflow 3.0-3.1: the TaskFlow helper that picks a function's arguments lived in airflow.utils
    from airflow.utils.operator_helpers import determine_kwargs  # type: ignore[no-redef,attr-defined]
try:  # Airflow 3.2+: the Task SDK's class, which workers load without Airflow core's plugin manager
    from airflow.sdk.plugins_manager import AirflowPlugin
except ImportError:  # Airflow 3.0-3.1
    from airflow.plugins_manager import AirflowPlugin  # type: ignore[no-redef,assignment]

#: Airflow 3.3+ calls a trigger's ``on_kill`` when a user kills a deferred task, which cancels its predictions.
TRIGGER_ON_KILL = hasattr(BaseTrigger, "on_kill")


def ui_plugins_supported() -> bool:
    """:return: whether this Airflow has UI plugins (external views and FastAPI apps in the UI, 3.1+)."""
    return Version(AIRFLOW_VERSION).release[:2] >= (3, 1)


def hitl_supported() -> bool:
    """:return: whether this Airflow has Human-in-the-loop operators (3.1+), which the review operator builds on."""
    return ui_plugins_supported()


def hitl_classes() -> tuple[Any, Any]:
    """
    Airflow's Human-in-the-loop operator and the mixin that skips downstream tasks (3.1+).

    :raises ImportError: "needs Airflow 3.1+" on an older Airflow (a DAG importing the review operator fails to
        parse with it).
    """
    if not hitl_supported():
        raise ImportError(
            f"CometFluxReviewOperator needs Airflow 3.1+ (it builds on Airflow's Human-in-the-loop operators); "
            f"this is Airflow {AIRFLOW_VERSION}."
        )
    from airflow.providers.standard.operators.hitl import HITLOperator
    from airflow.providers.standard.utils.skipmixin import SkipMixin

    return HITLOperator, SkipMixin


def redact(value: Any) -> Any:
    """
    Airflow's own secret masking of ``value`` (registered secrets and values under sensitive names become ``***``).

    :param value: what to mask.
    :raises ImportError: no masker in this Airflow.
    :raises RuntimeError: the masker is not set up (logging not configured).
    """
    try:
        from airflow.sdk._shared.secrets_masker import redact as masker_redact
    except ImportError:  # Airflow 3.0/3.1
        from airflow.sdk.execution_time.secrets_masker import redact as masker_redact  # type: ignore[no-redef]
    return masker_redact(value)


def amask_secret_function() -> Callable[[str], Awaitable[None]]:
    """
    :return: a coroutine function registering a secret with the masker without blocking the event loop: Airflow's
        ``amask_secret`` (3.2+), or, on older releases whose ``mask_secret`` waits for the triggerer's loop, that
        one called off the loop.
    """
    try:
        from airflow.sdk.log import amask_secret
    except ImportError:  # Airflow 3.0-3.1
        from airflow.sdk.log import mask_secret
        from asgiref.sync import sync_to_async

        return sync_to_async(mask_secret)
    return amask_secret


__all__ = [
    "AIRFLOW_VERSION",
    "TRIGGER_ON_KILL",
    "AirflowException",
    "AirflowFailException",
    "AirflowPlugin",
    "AirflowSensorTimeout",
    "BaseHook",
    "BaseOperator",
    "BaseSensorOperator",
    "PokeReturnValue",
    "amask_secret_function",
    "conf",
    "determine_kwargs",
    "hitl_classes",
    "hitl_supported",
    "redact",
    "ui_plugins_supported",
]
