"""What the installed Airflow can do, for tests that depend on a newer release than the lowest supported."""

from __future__ import annotations

import re

import airflow
import pytest
from packaging.version import Version

AIRFLOW_VERSION = Version(airflow.__version__)

#: The task state store (``context["task_state_store"]``) arrived in Airflow 3.3.
requires_task_state_store = pytest.mark.skipif(
    AIRFLOW_VERSION.release[:2] < (3, 3),
    reason=f"needs the task state store (Airflow 3.3+); this is Airflow {AIRFLOW_VERSION}",
)

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def plain(text: str) -> str:
    """``text`` without terminal colour codes (Airflow 3.0 colours the tracebacks it prints)."""
    return _ANSI.sub("", text)


def storage_uri(uri: str) -> str:
    """
    A stored image's URI in one spelling: universal-pathlib 0.2 (Airflow 3.0/3.1) writes ``memory:///bucket/key``
    where 0.3 (Airflow 3.2+) writes ``memory://bucket/key``.
    """
    return re.sub(r"^memory:///", "memory://", uri)
