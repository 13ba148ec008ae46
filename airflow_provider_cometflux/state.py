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

    def load_reused(self) -> dict[int, dict[str, Any]]:
        """The reuse index entries an earlier attempt decided to serve, by position (for this request only)."""
        if self._store is None:
            return {}
        saved = self._store.get(self.key)
        if not isinstance(saved, dict) or saved.get("request") != self.request:
            return {}
        reused = saved.get("reused")
        if not isinstance(reused, dict):
            return {}
        return {int(index): dict(entry) for index, entry in reused.items() if isinstance(entry, dict)}

    def save(self, ids: Sequence[str | None], reused: Mapping[int, Mapping[str, Any]] | None = None) -> None:
        """
        :param ids: each position's prediction id (``None`` where none was created).
        :param reused: the reuse index entries served, by position: saved so that a retry copies them again
            instead of paying.
        """
        if self._store is not None and (any(ids) or reused):
            value: dict[str, Any] = {"request": self.request, "prediction_ids": list(ids)}
            if reused:
                value["reused"] = {str(index): dict(entry) for index, entry in reused.items()}
            self._store.set(self.key, value)
