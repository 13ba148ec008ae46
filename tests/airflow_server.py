"""Run Airflow CLI commands (``airflow dags test ...``) in forks of one warm Python process.

Started by :mod:`tests.airflow_cli` as ``python -m tests.airflow_server`` with the environment of the runs it will
serve (AIRFLOW_HOME, the DAGs folder and the rest of Airflow's configuration). It imports Airflow and builds the
in-process Execution API once (about 14 of the 17-20 s of CPU one ``airflow dags test`` spends before it runs a
task, measured on 3.2.2 and 3.3.2; on 3.0-3.2 one API for the whole run, as 3.3 does: :func:`one_api_per_process`),
then reads one request per line on stdin::

    {"argv": ["dags", "test", "it_inline"], "env": {...}, "stdout": "/path", "stderr": "/path"}

For each it forks: the child takes the request's environment and output files and calls Airflow's own CLI entry
point (``airflow.__main__.main``), exactly what the ``airflow`` executable calls.
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
    Import what every run imports and build the in-process Execution API's routes (no thread is started: a fork
    keeps none). Airflow keeps one in-process API per process from 3.3 on; before it, see :func:`one_api_per_process`.
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
    if not hasattr(supervisor.in_process_api_server, "cache_info"):
        one_api_per_process(supervisor)
    app = supervisor.in_process_api_server().app
    initialize = getattr(app, "_cadwyn_initialize", None)  # Cadwyn builds each API version's routes once
    if callable(initialize) and not getattr(app, "_cadwyn_initialized", True):
        initialize()


def one_api_per_process(supervisor: Any) -> None:
    """
    Give Airflow 3.0-3.2 the in-process Execution API that 3.3 keeps: one per process, not one per task.

    Before 3.3, ``dag.test()`` builds a whole FastAPI app with every Cadwyn API version for each task it runs (about
    9 s of CPU per task on these machines, most of an older release's suite time). Airflow 3.3 made
    ``in_process_api_server`` a one-entry cache and, with it, made a client without a DAG drop the DAG bag a task's
    client left on the shared app (apache/airflow#65235). This applies exactly that change to the two functions it
    touched, in warm runs only: a configuration's first run, and every run under ``COMETFLUX_TEST_COLD_AIRFLOW=1``,
    run Airflow as released. The subject of these tests is the provider, not how Airflow builds its test API.
    """
    import functools

    from airflow.api_fastapi.common.dagbag import dag_bag_from_app

    one_api = functools.lru_cache(maxsize=1)(supervisor.in_process_api_server)
    supervisor.in_process_api_server = one_api
    test_supervisor = supervisor.InProcessTestSupervisor
    released_client = test_supervisor._api_client

    def _api_client(dag: Any = None) -> Any:
        if dag is None:
            one_api().app.dependency_overrides.pop(dag_bag_from_app, None)
        return released_client(dag)

    test_supervisor._api_client = staticmethod(_api_client)


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
    # stdin closed: its runs are over and reaped. Leave at once: what the warm-up built (on 3.3, the in-process API)
    # kept the interpreter's shutdown waiting for many seconds, past the test process that started it.
    answers.close()
    os._exit(0)


if __name__ == "__main__":
    serve()
