"""
Test helpers: a local simulator of CometAPI's Replicate-format FLUX API and pytest fixtures for it.

``CometAPISimulator`` is imported lazily, so importing this package does not import ``aiohttp``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_cometflux.testing.simulator import CometAPISimulator

__all__ = ["CometAPISimulator"]


def __getattr__(name: str) -> Any:
    if name == "CometAPISimulator":
        from airflow_provider_cometflux.testing.simulator import CometAPISimulator

        return CometAPISimulator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
