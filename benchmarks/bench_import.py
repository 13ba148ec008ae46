"""
Benchmark (b): what importing the provider costs a DAG file, against the HTTP provider's operator module.

Each measurement runs in a fresh interpreter that has already imported what every DAG file has
(``from airflow.sdk import DAG, BaseOperator``), then times one import; the median of ``--repeat`` runs is reported
(after one discarded run that warms the disk cache and writes the bytecode), with the heavy modules the import
pulled in. Every module loads from bytecode, as in a deployment: the probes share a private ``PYTHONPYCACHEPREFIX``
(so that ``PYTHONDONTWRITEBYTECODE`` in the environment does not make only the provider compile from source).

The baseline, ``airflow.providers.http.operators.http``, is measured the same way. It needs
``apache-airflow-providers-http``; to measure it without installing it into the environment::

    pip install --no-deps --target /tmp/cometflux-bench-deps apache-airflow-providers-http requests-toolbelt
    python -m benchmarks.bench_import --extra-path /tmp/cometflux-bench-deps

Two DAG files are also parsed the same way: one with a single ``EmptyOperator`` task, and the same with a
``CometFluxPredictionOperator`` task instead.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

from benchmarks.common import PYTHON, ROOT, print_machine, table, target

PROVIDER_MODULES = [
    "airflow_provider_cometflux.operators.flux",
    "airflow_provider_cometflux.operators.batch",
    "airflow_provider_cometflux.sensors.prediction",
    "airflow_provider_cometflux.triggers.prediction",
    "airflow_provider_cometflux.triggers.batch",
]
BASELINE = "airflow.providers.http.operators.http"
#: Modules whose presence after an import means something heavy was loaded at module level.
HEAVY = ["aiohttp", "requests", "fsspec", "upath", "jsonschema", "httpx", "yarl", "multidict"]
#: The target: the provider's modules import in under a third of the baseline's time.
MAX_FRACTION = 1 / 3

PRELUDE = "from airflow.sdk import DAG, BaseOperator\n"

PROBE = textwrap.dedent(
    """
    import sys, time, json, importlib
    {prelude}
    before = set(sys.modules)
    started = time.perf_counter()
    {action}
    elapsed = time.perf_counter() - started
    heavy = [m for m in {heavy!r} if m in sys.modules and m not in before]
    print("RESULT " + json.dumps({{"seconds": elapsed, "heavy": heavy, "modules": len(set(sys.modules) - before)}}))
    """
)

DAG_EMPTY = textwrap.dedent(
    """
    from datetime import datetime
    from airflow.sdk import DAG
    from airflow.providers.standard.operators.empty import EmptyOperator
    with DAG("parse_probe", schedule=None, start_date=datetime(2026, 1, 1)):
        EmptyOperator(task_id="t")
    """
)
DAG_COMETFLUX = textwrap.dedent(
    """
    from datetime import datetime
    from airflow.sdk import DAG
    from airflow_provider_cometflux.operators.flux import CometFluxPredictionOperator
    with DAG("parse_probe", schedule=None, start_date=datetime(2026, 1, 1)):
        CometFluxPredictionOperator(task_id="t", prompt="a lighthouse", deferrable=True)
    """
)


PYCACHE = tempfile.mkdtemp(prefix="cometflux-bench-pycache-")


def probe(action: str, *, extra_path: str | None) -> dict[str, Any]:
    """Run ``action`` in a fresh interpreter after the prelude; return its time and what it loaded."""
    code = PROBE.format(prelude=PRELUDE, action=action, heavy=HEAVY)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = PYCACHE
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), extra_path or "") if p)
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    proc = subprocess.run([PYTHON, "-W", "ignore", "-c", code], capture_output=True, text=True, env=env, timeout=300)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line[len("RESULT ") :]))
    raise RuntimeError(f"probe failed: {action}\n{proc.stderr[-3000:]}")


def measure(action: str, repeat: int, *, extra_path: str | None) -> dict[str, Any]:
    probe(action, extra_path=extra_path)  # warm the disk cache, write the bytecode
    runs = [probe(action, extra_path=extra_path) for _ in range(repeat)]
    seconds = [r["seconds"] for r in runs]
    return {
        "median_s": statistics.median(seconds),
        "min_s": min(seconds),
        "heavy": runs[0]["heavy"],
        "modules": runs[0]["modules"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7, help="fresh interpreters per measurement")
    parser.add_argument("--extra-path", default=None, help="a folder holding apache-airflow-providers-http")
    args = parser.parse_args(argv)
    print_machine()
    print(f"# with `{PRELUDE.strip()}` already done; median of {args.repeat} fresh interpreters")
    rows = []
    results: dict[str, dict[str, Any]] = {}
    cases = [(m, f"importlib.import_module({m!r})") for m in [*PROVIDER_MODULES, BASELINE]]
    cases.append(("all five provider modules", "; ".join(f"importlib.import_module({m!r})" for m in PROVIDER_MODULES)))
    with tempfile.TemporaryDirectory() as folder:
        for name, source in (
            ("DAG file: EmptyOperator", DAG_EMPTY),
            ("DAG file: CometFluxPredictionOperator", DAG_COMETFLUX),
        ):
            path = Path(folder) / f"{len(cases)}.py"
            path.write_text(source)
            cases.append((name, f"exec(compile(open({str(path)!r}).read(), {str(path)!r}, 'exec'), {{}})"))
        for name, action in cases:
            print(f"... {name}", file=sys.stderr, flush=True)
            try:
                results[name] = measure(action, args.repeat, extra_path=args.extra_path)
            except RuntimeError as exc:
                if name == BASELINE:
                    print(f"# baseline not measured: {BASELINE} is not importable (see --extra-path)", file=sys.stderr)
                    continue
                raise exc
    base = results.get(BASELINE)
    for name, r in results.items():
        share = f"{r['median_s'] / base['median_s']:.2f}" if base else "-"
        rows.append([name, 1000 * r["median_s"], 1000 * r["min_s"], share, r["modules"], ", ".join(r["heavy"]) or "-"])
    print(table(["import", "median ms", "min ms", "x HTTP op", "new modules", "heavy modules loaded"], rows))
    if base:
        print()
        for name in [*PROVIDER_MODULES, "all five provider modules"]:
            share = results[name]["median_s"] / base["median_s"]
            print(
                f"target {name}: {share:.2f} of the HTTP operator's time < {MAX_FRACTION:.2f}: "
                f"{target(share < MAX_FRACTION)}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
