"""Run the example DAG end to end with ``airflow dags test``, say where the images went and how to see them.

Without ``COMETAPI_API_KEY`` it starts the built-in CometAPI simulator on a free loopback port and points the
``cometapi_default`` connection at it; with the key set it uses the real service. Everything it writes lives
under ``.demo/`` (Airflow home, logs) and ``.demo/images/`` (the generated images).

``scripts/demo.py --ui`` (``make ui``) then starts Airflow's API server on the demo's database, on 127.0.0.1 only,
with one user (``DEMO_USER``, its password in ``.demo/airflow/passwords.json``), to see the images in the UI.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / ".demo"
IMAGES = DEMO / "images"
DAG_ID = "cometflux_example"
MAGIC = {b"\x89PNG": "PNG", b"\xff\xd8\xff": "JPEG", b"RIFF": "WebP"}
UI_PORT = int(os.environ.get("COMETFLUX_UI_PORT", "8080"))
DEMO_USER = "demo"
PASSWORDS = DEMO / "airflow" / "passwords.json"
#: The key the simulator accepts by default (long enough for Airflow to mask it in logs).
SIMULATOR_KEY = "sim-0123456789abcdef"


def demo_password() -> str:
    """The demo user's password, made once and kept in ``.demo/airflow/passwords.json`` (read by Airflow)."""
    import secrets

    if PASSWORDS.exists():
        return str(json.loads(PASSWORDS.read_text())[DEMO_USER])
    PASSWORDS.parent.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(9)
    PASSWORDS.write_text(json.dumps({DEMO_USER: password}))
    PASSWORDS.chmod(0o600)
    return password


def airflow_env(conn: dict[str, object]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_HOME": str(DEMO / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "example_dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW_CONN_COMETAPI_DEFAULT": json.dumps(conn),
            "COMETFLUX_OUTPUT_PATH": IMAGES.as_uri(),
            # the UI's login (make ui): one configured user, not Airflow's generated all-admins default
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{DEMO_USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(PASSWORDS),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{UI_PORT}",
        }
    )
    return env


def last_run_id(dag_id: str) -> str | None:
    """:return: the newest run of ``dag_id`` in the demo's database."""
    import sqlite3

    db = DEMO / "airflow" / "airflow.db"
    if not db.exists():
        return None
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (dag_id,)).fetchone()
    return None if row is None else str(row[0])


def ui_hint() -> None:
    """Say how to see the images in the Airflow UI."""
    from urllib.parse import quote

    base = f"http://127.0.0.1:{UI_PORT}"
    run_id = last_run_id(DAG_ID)
    print("\nSee the images in the Airflow UI (the API server on this demo's database):")
    print(f"  make ui        # or: {os.path.relpath(sys.executable, ROOT)} scripts/demo.py --ui")
    print(
        f"  then open {base}/dags/{DAG_ID}"
        + (f"/runs/{quote(run_id, safe='')}/plugin/cometflux-gallery" if run_id else "")
    )
    print(f"  and log in as {DEMO_USER!r} with password {demo_password()!r} ({PASSWORDS}).")
    print("  Each task instance has an 'Images' tab, the run an 'Image gallery' tab.")


def serve_ui() -> int:
    """Run Airflow's API server on the demo's database until Ctrl-C."""
    if last_run_id(DAG_ID) is None:
        print("Run `make demo` first: the UI shows the images of its run.")
        return 1
    conn = {"conn_type": "cometapi", "password": os.environ.get("COMETAPI_API_KEY") or SIMULATOR_KEY}
    env = airflow_env(conn)
    demo_password()
    airflow = str(Path(sys.executable).with_name("airflow"))
    ui_hint()
    print(f"\nStarting the API server on 127.0.0.1:{UI_PORT} (Ctrl-C stops it; COMETFLUX_UI_PORT picks another port).")
    proc = subprocess.Popen([airflow, "api-server", "--host", "127.0.0.1", "--port", str(UI_PORT)], env=env)

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)  # `kill PID` stops the server too, as Ctrl-C does
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return 0


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
    demo_password()
    airflow = str(Path(sys.executable).with_name("airflow"))
    simulator = None
    key = os.environ.get("COMETAPI_API_KEY")
    if key:
        print("COMETAPI_API_KEY is set: using the real CometAPI service (this spends credits).")
        conn: dict[str, object] = {"conn_type": "cometapi", "password": key}
    else:
        simulator, base_url = start_simulator()
        print(f"Started the CometAPI simulator at {base_url} (set COMETAPI_API_KEY to use the real service).")
        conn = {"conn_type": "cometapi", "host": base_url, "password": SIMULATOR_KEY}
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
    pictures = [p for p in new if p.suffix != ".json"]  # the .json files are the provenance sidecars
    print(f"Done in {time.monotonic() - started:.0f}s: {len(pictures)} images saved in {IMAGES}")
    print(f"Airflow's log of the run: {log_path}")
    ui_hint()
    return 0


if __name__ == "__main__":
    sys.exit(serve_ui() if "--ui" in sys.argv[1:] else main())
