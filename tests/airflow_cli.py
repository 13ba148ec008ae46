"""``airflow <command>`` for the suites, as :func:`subprocess.run` gives it, in a fork of a warm Airflow process.

One ``airflow dags test`` spends 17-20 s of CPU, about 14 of them importing Airflow and building the in-process
Execution API before its first task runs; the suites make a few hundred such runs per ``make test``. Runs with the
same Airflow configuration (AIRFLOW_HOME, the DAGs folder, every other ``AIRFLOW__`` variable) therefore share a
server (:mod:`tests.airflow_server`) that does that once and forks a fresh child for each run, which calls
Airflow's own CLI entry point with the run's environment: the same code the ``airflow`` executable runs. On
Airflow 3.0-3.2 the server also keeps one in-process Execution API for all of a run's tasks, as 3.3 does
(:func:`tests.airflow_server.one_api_per_process`). Each test process keeps at most :data:`MAX_SERVERS` and stops
them by PID when it ends.

Runs with OpenLineage configured (:data:`ALWAYS_COLD`), runs asked for with ``cold=True`` and, with
``COMETFLUX_TEST_COLD_AIRFLOW=1``, every run use the plain ``airflow`` executable instead: Airflow as released.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict
from pathlib import Path
from typing import IO, Any

AIRFLOW = str(Path(sys.executable).with_name("airflow"))
ROOT = Path(__file__).parents[1]
#: A test process meets about six configurations (each suite's AIRFLOW_HOME and DAGs folders, a few tests' own);
#: a server holds 200-300 MB.
MAX_SERVERS = 6
#: Runs configured with these always run the executable: OpenLineage's task listener (the provider in Airflow
#: 3.2.2's lock) sent no task events from a fork of a warm process, only the DAG run's.
ALWAYS_COLD = ("AIRFLOW__OPENLINEAGE__",)
#: How long a server may take to import Airflow and build its routes.
WARM_UP_SECONDS = 300


def _config(env: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """
    What a server fixes when it imports Airflow, so the runs it serves must agree on all of it: every ``AIRFLOW__``
    variable (some, OpenLineage's for one, are read once and kept), AIRFLOW_HOME and PYTHONPATH.
    """
    return tuple(
        sorted((k, v) for k, v in env.items() if k.startswith("AIRFLOW__") or k in ("AIRFLOW_HOME", "PYTHONPATH"))
    )


class _Server:
    """One warm ``python -m tests.airflow_server`` process."""

    def __init__(self, env: dict[str, str]) -> None:
        self.log = tempfile.NamedTemporaryFile(prefix="airflow-server-", suffix=".log", delete=False)  # noqa: SIM115
        server_env = dict(env)
        server_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.airflow_server"],
            env=server_env,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin: IO[str] = self.proc.stdin
        self.stdout: IO[str] = self.proc.stdout
        #: the process of the latest run (gone once the run returned or timed out)
        self.last_pid: int | None = None
        self._answer(WARM_UP_SECONDS)

    def _answer(self, timeout: float) -> dict[str, Any] | None:
        """The server's next line, or None when ``timeout`` passed first."""
        ready, _, _ = select.select([self.stdout], [], [], max(timeout, 0))
        if not ready:
            return None
        line = self.stdout.readline()
        if not line:
            raise RuntimeError(f"the Airflow server (pid {self.proc.pid}) ended:\n{self.tail()}")
        return dict(json.loads(line))

    def tail(self) -> str:
        return Path(self.log.name).read_text(errors="replace")[-4000:]

    def run(self, argv: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
        with tempfile.TemporaryDirectory(prefix="airflow-run-") as tmp:
            out, err = Path(tmp, "stdout"), Path(tmp, "stderr")
            request = {"argv": argv, "env": env, "stdout": str(out), "stderr": str(err)}
            self.stdin.write(json.dumps(request) + "\n")
            self.stdin.flush()
            started = self._answer(60)
            if started is None:
                raise RuntimeError(f"the Airflow server (pid {self.proc.pid}) did not start the run:\n{self.tail()}")
            pid = self.last_pid = int(started["pid"])
            deadline = time.monotonic() + timeout
            ended = self._answer(deadline - time.monotonic())
            if ended is None:  # as subprocess.run does on a timeout: stop the run (its whole group), then raise
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                self._answer(30)
                raise subprocess.TimeoutExpired(
                    [AIRFLOW, *argv],
                    timeout,
                    output=out.read_text("utf-8", "replace"),
                    stderr=err.read_text("utf-8", "replace"),
                )
            return subprocess.CompletedProcess(
                [AIRFLOW, *argv],
                int(ended["returncode"]),
                out.read_text("utf-8", "replace"),
                err.read_text("utf-8", "replace"),
            )

    def stop(self) -> None:
        """Tell it to end and reap it."""
        self.tell_to_end()
        self.reap(10)

    def tell_to_end(self) -> None:
        """Close its stdin: it ends itself then."""
        with contextlib.suppress(OSError):
            self.stdin.close()

    def reap(self, timeout: float) -> None:
        """Wait for it to end; past ``timeout``, kill it. Either way it is reaped."""
        try:
            self.proc.wait(timeout=max(timeout, 0))
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.stdout.close()
        self.log.close()
        os.unlink(self.log.name)


_servers: OrderedDict[tuple[tuple[str, str], ...], _Server] = OrderedDict()


@atexit.register
def stop_servers() -> None:
    """Stop every server this process started: all told to end at once, then each waited for (10 s in all)."""
    servers = list(_servers.values())
    _servers.clear()
    for server in servers:
        server.tell_to_end()
    deadline = time.monotonic() + 10
    for server in servers:
        server.reap(deadline - time.monotonic())


def run(
    argv: list[str], *, env: dict[str, str], timeout: float, cold: bool = False
) -> subprocess.CompletedProcess[str]:
    """
    ``airflow *argv`` with ``env`` as its whole environment; what ``subprocess.run(..., capture_output=True,
    text=True, timeout=timeout)`` returns (and raises on a timeout). ``cold``: run the executable.
    """
    cold = cold or os.environ.get("COMETFLUX_TEST_COLD_AIRFLOW") == "1" or any(k.startswith(ALWAYS_COLD) for k in env)
    if cold:
        return subprocess.run([AIRFLOW, *argv], env=env, capture_output=True, text=True, timeout=timeout)
    key = _config(env)
    server = _servers.pop(key, None)
    if server is None or server.proc.poll() is not None:
        while len(_servers) >= MAX_SERVERS:
            _servers.popitem(last=False)[1].stop()
        server = _Server(env)
    _servers[key] = server  # the most recently used last
    return server.run(argv, env, timeout)
