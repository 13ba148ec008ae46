"""Run the example DAG end to end with ``airflow dags test`` and say where the images went.

Without ``COMETAPI_API_KEY`` it starts the built-in CometAPI simulator on a free loopback port and points the
``cometapi_default`` connection at it; with the key set it uses the real service. Everything it writes lives
under ``.demo/`` (Airflow home, logs) and ``.demo/images/`` (the generated images).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / ".demo"
IMAGES = DEMO / "images"
DAG_ID = "cometflux_example"
MAGIC = {b"\x89PNG": "PNG", b"\xff\xd8\xff": "JPEG", b"RIFF": "WebP"}


def airflow_env(conn: dict[str, object]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_HOME": str(DEMO / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "example_dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW_CONN_COMETAPI_DEFAULT": json.dumps(conn),
            "COMETFLUX_OUTPUT_PATH": IMAGES.as_uri(),
        }
    )
    return env


def start_simulator() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow_provider_cometflux.testing.simulator", "--port", "0", "--run-seconds", "3"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise SystemExit(f"the simulator did not start: {line!r}")
    return proc, line.rsplit(" ", 1)[-1].strip()


def run(cmd: list[str], env: dict[str, str], log: Path) -> int:
    with log.open("w") as out:
        return subprocess.call(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)


def main() -> int:
    DEMO.mkdir(exist_ok=True)
    IMAGES.mkdir(parents=True, exist_ok=True)
    airflow = str(Path(sys.executable).with_name("airflow"))
    simulator = None
    key = os.environ.get("COMETAPI_API_KEY")
    if key:
        print("COMETAPI_API_KEY is set: using the real CometAPI service (this spends credits).")
        conn: dict[str, object] = {"conn_type": "cometapi", "password": key}
    else:
        simulator, base_url = start_simulator()
        print(f"Started the CometAPI simulator at {base_url} (set COMETAPI_API_KEY to use the real service).")
        conn = {"conn_type": "cometapi", "host": base_url, "password": "demo-key"}
    env = airflow_env(conn)
    started = time.monotonic()
    try:
        print("Preparing Airflow's database in .demo/airflow ...")
        if run([airflow, "db", "migrate"], env, DEMO / "db-migrate.log") != 0:
            print(f"airflow db migrate failed; see {DEMO / 'db-migrate.log'}")
            return 1
        before = set(IMAGES.rglob("*"))
        print(f"Running `airflow dags test {DAG_ID}` (deferrable operator + deferrable sensor) ...")
        code = run([airflow, "dags", "test", DAG_ID], env, DEMO / "dags-test.log")
    finally:
        if simulator is not None:
            simulator.terminate()
            simulator.wait(timeout=10)
    new = sorted(p for p in set(IMAGES.rglob("*")) - before if p.is_file())
    for path in new:
        kind = next((name for magic, name in MAGIC.items() if path.read_bytes()[:4].startswith(magic)), "unknown")
        print(f"  {path}  ({path.stat().st_size} bytes, {kind})")
    log_path = DEMO / "dags-test.log"
    if code != 0 or not new:
        print(f"The demo failed (exit code {code}, {len(new)} new images); see {log_path}")
        return 1
    print(f"Done in {time.monotonic() - started:.0f}s: {len(new)} images saved in {IMAGES}")
    print(f"Airflow's log of the run: {log_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
