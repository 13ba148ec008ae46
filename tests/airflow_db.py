"""A migrated SQLite metadata database for a test's ``AIRFLOW_HOME``, copied from one template per release.

``airflow db migrate`` takes 5-15 s; the suites need a fresh database a dozen times per release. The first test to
ask migrates a template once per virtualenv and Airflow release (under a file lock: pytest-xdist workers ask at
once), and every home gets a copy of it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

import airflow

AIRFLOW = str(Path(sys.executable).with_name("airflow"))
TEMPLATES = Path(sys.prefix) / "cometflux-test-db"


def template() -> Path:
    """This virtualenv's migrated database for its Airflow release, made on first use."""
    folder = TEMPLATES / airflow.__version__
    database = folder / "airflow.db"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not database.exists():
            home = folder / "home"
            shutil.rmtree(home, ignore_errors=True)
            home.mkdir()
            env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__"))}
            env.update({"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"})
            proc = subprocess.run([AIRFLOW, "db", "migrate"], env=env, capture_output=True, text=True, timeout=300)
            assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
            shutil.copyfile(home / "airflow.db", folder / "airflow.db.new")
            os.replace(folder / "airflow.db.new", database)
            shutil.rmtree(home, ignore_errors=True)
    return database


def migrated(home: Path) -> Path:
    """Put a migrated metadata database at ``home/airflow.db`` (SQLite, Airflow's default place); return it."""
    home.mkdir(parents=True, exist_ok=True)
    target = home / "airflow.db"
    shutil.copyfile(template(), target)
    return target
