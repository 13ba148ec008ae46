"""
Benchmark (g): the gallery of a run of 1,000 stored images, its first screen in headless Chromium.

A real ``airflow dags test`` run stores ``--images`` images (a batch against the simulator on 127.0.0.1), then
``airflow api-server`` serves the plugin and Debian's headless Chromium opens the run's gallery page (the page the
UI embeds), logged in through Airflow's ``_token`` cookie, with the browser cache off. Reported:

* **first screen**: from the navigation's start until every picture inside the window is decoded, in seconds;
* **bytes**: everything transferred for it (the page and each resource's ``transferSize``);
* on a **cold** cache (thumbnails made on this visit) and a **warm** one (made by the previous visit);
* the **baseline**, measured in the same run: the same cards showing the full images (what the grid loaded before
  thumbnails), from the stored files' sizes; and the page's cards against the run's.

Targets: under 2 s and under 3 MB.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from benchmarks.common import LOOPBACK, ROOT, print_machine, table
from tests.hitl_run import free_port, stop

AIRFLOW = str(Path(sys.executable).with_name("airflow"))
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
MAX_SECONDS, MAX_BYTES = 2.0, 3 * 1024 * 1024
USER = "bench"
DAG_ID = "bench_gallery"

DAG = textwrap.dedent(
    """
    import os
    from datetime import datetime
    from airflow.sdk import DAG
    from airflow_provider_cometflux.operators.batch import CometFluxBatchOperator

    with DAG("bench_gallery", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
        CometFluxBatchOperator(
            task_id="generate",
            prompts=[f"bench picture {i}, a lighthouse at dusk" for i in range(int(os.environ["BENCH_IMAGES"]))],
            input={"output_format": "png", "aspect_ratio": "1:1"},
            output_path=os.environ["BENCH_OUTPUT"],
            creates_per_minute=60000,
            poll_interval=0.5,
            timeout=1800,
            deferrable=False,
            download_concurrency=16,
        )
    """
)

#: Resolves once every picture inside the window is decoded: (ms since navigation start, pictures, bytes).
FIRST_SCREEN_JS = """
const done = arguments[arguments.length - 1];
function visible(img) {
  const r = img.getBoundingClientRect();
  return r.bottom > 0 && r.top < window.innerHeight && r.right > 0 && r.left < window.innerWidth;
}
function check() {
  const imgs = Array.from(document.images).filter(visible);
  if (document.readyState !== 'loading' && imgs.length && imgs.every(i => i.complete && i.naturalWidth > 0)) {
    const at = performance.now();
    const nav = performance.getEntriesByType('navigation')[0];
    const res = performance.getEntriesByType('resource');
    const bytes = (nav ? nav.transferSize : 0) + res.reduce((s, e) => s + e.transferSize, 0);
    done([at, imgs.length, bytes, document.documentElement.outerHTML.length, res.length]);
  } else { requestAnimationFrame(check); }
}
check();
"""


@contextlib.contextmanager
def started(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A process in its own session, stopped by its PID (its group) at the end."""
    with log.open("wb") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        stop(proc)


def chromium(profile: Path) -> Any:
    os.environ["SE_OFFLINE"] = "true"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--window-size=1440,1000"):
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(120)
    driver.set_script_timeout(120)
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})
    return driver


def first_screen(driver: Any, url: str) -> dict[str, Any]:
    driver.get("about:blank")
    driver.get(url)
    at, pictures, transferred, html, resources = driver.execute_async_script(FIRST_SCREEN_JS)
    return {"seconds": at / 1000, "pictures": pictures, "bytes": transferred, "html": html, "requests": resources}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_gallery", description=__doc__)
    parser.add_argument("--images", type=int, default=1000, help="images in the run (one per prompt)")
    args = parser.parse_args(argv)
    print_machine()
    from airflow_provider_cometflux.testing.simulator import CometAPISimulator

    with tempfile.TemporaryDirectory(prefix="cometflux-bench-gallery-") as folder:
        home = Path(folder)
        (home / "dags").mkdir()
        (home / "dags" / "bench_gallery.py").write_text(DAG)
        password = secrets.token_urlsafe(12)
        (home / "passwords.json").write_text(json.dumps({USER: password}))
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update(
            {
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager."
                "SimpleAuthManager",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:viewer",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
                "AIRFLOW__API__BASE_URL": f"http://{LOOPBACK}:{port}",
                "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
                "BENCH_IMAGES": str(args.images),
                "BENCH_OUTPUT": (home / "images").as_uri(),
                "COMETFLUX_THUMBNAIL_CACHE": str(home / "thumbnails"),
                # Airflow's processes load the provider of this tree, not an installed copy
                "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")])),
            }
        )
        subprocess.run([AIRFLOW, "db", "migrate"], env=env, capture_output=True, check=True)
        with CometAPISimulator(LOOPBACK, 0, run_seconds=0.2, api_key="bench-gallery-key") as sim:
            conn = {"conn_type": "cometapi", "host": sim.base_url, "password": "bench-gallery-key"}
            began = time.monotonic()
            test = subprocess.run(
                [AIRFLOW, "dags", "test", DAG_ID],
                env={**env, "AIRFLOW_CONN_COMETAPI_DEFAULT": json.dumps(conn)},
                capture_output=True,
                text=True,
            )
            if test.returncode:
                raise RuntimeError((test.stdout + test.stderr)[-3000:])
            print(f"{args.images} images stored in {time.monotonic() - began:.0f} s by airflow dags test")
        with sqlite3.connect(home / "airflow.db") as db:
            (run_id,) = db.execute("SELECT run_id FROM dag_run WHERE dag_id = ?", (DAG_ID,)).fetchone()
        stored = sorted((home / "images").glob("*-0.png"))
        with started(
            [AIRFLOW, "api-server", "--host", LOOPBACK, "--port", str(port), "--workers", "1"], env, home / "api.log"
        ):
            import requests

            base = f"http://{LOOPBACK}:{port}"
            deadline = time.monotonic() + 180
            while True:
                with contextlib.suppress(requests.RequestException):
                    if requests.get(base + "/api/v2/monitor/health", timeout=5).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError((home / "api.log").read_text()[-3000:])
                time.sleep(1)
            token = requests.post(
                base + "/auth/token", json={"username": USER, "password": password}, timeout=30
            ).json()["access_token"]
            driver = chromium(home / "profile")
            try:
                driver.get(base + "/api/v2/version")
                driver.add_cookie({"name": "_token", "value": token, "path": "/"})
                url = f"{base}/cometflux/run/{DAG_ID}/{quote(run_id, safe='')}"
                cold = first_screen(driver, url)
                warm = first_screen(driver, url)
            finally:
                pid = driver.service.process.pid if driver.service.process else None
                with contextlib.suppress(Exception):
                    driver.quit()
                if pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, 9)
        full = sum(path.stat().st_size for path in stored[: cold["pictures"]]) + warm["html"]
        rows = []
        for name, seen in (("cold (thumbnails made now)", cold), ("warm", warm)):
            rows.append(
                [
                    name,
                    f"{seen['seconds']:.2f}",
                    f"{seen['bytes'] / 1e6:.2f}",
                    seen["pictures"],
                    seen["requests"],
                    f"{full / max(seen['bytes'], 1):.1f}x",
                    "yes" if seen["seconds"] < MAX_SECONDS and seen["bytes"] < MAX_BYTES else "NO",
                ]
            )
        print(
            table(
                ["first screen", "seconds", "MB", "pictures shown", "requests", "full images / this", "< 2 s, < 3 MB"],
                rows,
            )
        )
        print(
            f"baseline: the same {cold['pictures']} pictures as full images: {full / 1e6:.2f} MB; "
            f"the run has {len(stored)} images ({sum(p.stat().st_size for p in stored) / 1e6:.1f} MB stored)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
