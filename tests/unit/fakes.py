"""The little of a task's context that the faces' unit tests need (real Airflow runs are in tests/integration)."""

from __future__ import annotations

import json
from typing import Any


class FakeTI:
    """Records XComs as Airflow would (JSON round trip)."""

    def __init__(self, task_id: str = "generate") -> None:
        self.xcoms: dict[str, Any] = {}
        self.task_id = task_id
        self.map_index = -1
        self.try_number = 1

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = json.loads(json.dumps(value))

    def xcom_pull(self, task_ids: str, key: str, map_indexes: int = -1) -> Any:
        return self.xcoms.get(key)


class FakeStore:
    """The task state store of Airflow 3.3+, in memory."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.writes = 0

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.writes += 1
        self.values[key] = json.loads(json.dumps(value))


def context(store: FakeStore | None = None, *, try_number: int = 1) -> dict[str, Any]:
    ctx: dict[str, Any] = {"ti": FakeTI()}
    ctx["ti"].try_number = try_number
    if store is not None:
        ctx["task_state_store"] = store
    return ctx


def task_deferred() -> type[BaseException]:
    try:
        from airflow.sdk.exceptions import TaskDeferred
    except ImportError:  # Airflow 3.0
        from airflow.exceptions import TaskDeferred  # type: ignore[no-redef,attr-defined]
    return TaskDeferred


async def first_event(trigger: Any) -> dict[str, Any]:
    """Run a trigger to its first event (and close the loop's shared session)."""
    from airflow_provider_cometflux.hooks.cometapi import close_async_session

    try:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("the trigger ended without an event")
    finally:
        await close_async_session()
