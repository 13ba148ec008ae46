"""Every difference between the supported Airflow releases (3.0 to 3.3), in one place."""

from __future__ import annotations

from airflow.triggers.base import BaseTrigger

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

#: Airflow 3.3+ calls a trigger's ``on_kill`` when a user kills a deferred task, which cancels its predictions.
TRIGGER_ON_KILL = hasattr(BaseTrigger, "on_kill")

__all__ = [
    "TRIGGER_ON_KILL",
    "AirflowException",
    "AirflowFailException",
    "AirflowSensorTimeout",
    "BaseHook",
    "BaseOperator",
    "BaseSensorOperator",
    "PokeReturnValue",
    "conf",
    "determine_kwargs",
]
