"""Apache Airflow provider for FLUX image generation through CometAPI's Replicate-format API."""

from __future__ import annotations

__version__ = "0.1.0"
