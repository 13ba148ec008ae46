"""Run Airflow CLI commands (``airflow dags test ...``) in forks of one warm Python process.

Started by :mod:`tests.airflow_cli` as ``python -m tests.airflow_server`` with the environment of the runs it will
serve (AIRFLOW_HOME, the DAGs folder and the rest of Airflow's configuration). It imports Airflow and builds the
in-process Execution API once (about 14 of the 17-20 s of CPU one ``airflow dags test`` spends before it runs a
task, measured on 3.2.2 and 3.3.2), then reads one request per line on stdin::

    {"argv": ["dags", "test", "it_inline"], "env": {...}, "stdout": "/path", "stderr": "/path"}

For each it forks: the child takes the request's environment and output files and calls Airflow's own CLI entry
point (``airflow.__main__.main``), exactly what the ``airflow`` executable calls; nothing of Airflow is replaced.
Every run is a fresh fork of the warm parent, so no run sees another's state. The server answers
``{"pid": N}`` when the child starts and ``{"pid": N, "returncode": R}`` when it ends; it ends itself when stdin
closes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import traceback
from typing import Any


def warm_up() -> None:
    """
    Import what every run imports; where Airflow keeps one in-process Execution API per process (3.3+), build its
    routes too (no thread is started: a fork keeps none). Before 3.3 each task builds its own, as it does here.
    """
    import airflow.__main__  # noqa: F401
    from airflow.cli import cli_parser
    from airflow.cli.commands import dag_command  # noqa: F401
    from airflow.providers_manager import ProvidersManager
    from airflow.sdk.execution_time import supervisor, task_runner  # noqa: F401

    import airflow_provider_cometflux.operators
    import airflow_provider_cometflux.triggers  # noqa: F401

    cli_parser.get_parser()
    ProvidersManager().initialize_providers_configuration()
    if hasattr(supervisor.in_process_api_server, "cache_info"):
        app = supervisor.in_process_api_server().app
        initialize = getattr(app, "_cadwyn_initialize", None)  # Cadwyn builds each API version's routes once
        if callable(initialize) and not getattr(app, "_cadwyn_initialized", True):
            initialize()


def child(request: dict[str, Any]) -> int:
    """In the fork: the run's environment and output files, then Airflow's CLI; returns its exit code."""
    os.environ.clear()
    os.environ.update(request["env"])
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(out, fd)
        os.close(out)
    sys.argv = ["airflow", *request["argv"]]
    from airflow.__main__ import main

    try:
        main()
    except SystemExit as exit_:
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


def serve() -> None:
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # what Airflow prints while warming up goes to stderr, never into the answers
    warm_up()
    answers.write(json.dumps({"ready": os.getpid()}) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            os.setsid()  # the caller can stop the run and whatever it started as one group
            answers.close()
            # and it leaves as the airflow executable does: threads joined, atexit handlers run, buffers flushed
            sys.exit(child(request))
        answers.write(json.dumps({"pid": pid}) + "\n")
        _, status = os.waitpid(pid, 0)
        with contextlib.suppress(ProcessLookupError):  # whatever the run started and left behind (its group)
            os.killpg(pid, signal.SIGKILL)
        answers.write(json.dumps({"pid": pid, "returncode": os.waitstatus_to_exitcode(status)}) + "\n")


if __name__ == "__main__":
    serve()
