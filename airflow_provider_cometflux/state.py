"""The task state store (Airflow 3.3+) as this provider uses it, and the request fingerprint that guards it.

A retried attempt reads the ids an earlier attempt saved and resumes them instead of paying again, but only for the
same request: same model, same inputs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import Context


def fingerprint(model: str, payloads: Sequence[Mapping[str, Any]]) -> str:
    """Identifies a request, so a retry resumes only predictions made for the same model and inputs."""
    text = json.dumps({"model": model, "inputs": list(payloads)}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class StateStore:
    """
    The task's state store (Airflow 3.3+) as this provider uses it: the ids of the predictions a task created,
    under one key, with the fingerprint of the request they were made for.

    :param context: the task's context.
    :param key: the key to use.
    :param request: the request's :func:`fingerprint`.
    """

    def __init__(self, context: Context, key: str, request: str) -> None:
        self._store = context.get("task_state_store")
        self.key = key
        self.request = request

    @property
    def available(self) -> bool:
        return self._store is not None

    def load(self, count: int) -> list[str | None] | None:
        """The ids saved for this request, if there are ``count`` of them."""
        if self._store is None:
            return None
        saved = self._store.get(self.key)
        if not isinstance(saved, dict) or saved.get("request") != self.request:
            return None
        ids = saved.get("prediction_ids")
        if not isinstance(ids, list) or len(ids) != count:
            return None
        return [pid if isinstance(pid, str) and pid else None for pid in ids]

    def save(self, ids: Sequence[str | None]) -> None:
        if self._store is not None and any(ids):
            self._store.set(self.key, {"request": self.request, "prediction_ids": list(ids)})
