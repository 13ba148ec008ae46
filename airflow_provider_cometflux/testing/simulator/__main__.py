"""``python -m airflow_provider_cometflux.testing.simulator``: serve the simulator until SIGINT/SIGTERM."""

from __future__ import annotations

import sys

from airflow_provider_cometflux.testing.simulator.cli import main

if __name__ == "__main__":
    sys.exit(main())
