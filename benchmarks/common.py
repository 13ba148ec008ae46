"""Shared helpers of the benchmarks: the simulator in its own process, the machine, timing and printing."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import resource
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
#: Every benchmark talks to 127.0.0.1 only.
LOOPBACK = "127.0.0.1"
#: The key the benchmarks' simulator accepts (--api-key) and their connection sends.
BENCH_KEY = "bench-key-0123456789"


def raise_open_files(wanted: int = 65536) -> int:
    """
    Raise this process's open-file limit toward ``wanted`` (never above the hard limit).

    :param wanted: the soft limit to aim for.
    :return: the soft limit now in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def pin_to_cpu(cpu: int | None) -> None:
    """
    Keep this process on one CPU (when the machine has more than one), so that it and the simulator do not
    compete for the same core.

    :param cpu: the CPU number, or ``None`` to leave scheduling alone.
    """
    if cpu is None or not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2:
        return
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {cpu % (os.cpu_count() or 1)})


def cpu_seconds() -> float:
    """User plus system CPU seconds of this process so far, all threads included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_bytes() -> int:
    """The resident set size of this process, in bytes."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as meminfo:
        mem = int(meminfo.readline().split()[1]) // (1024 * 1024)
    versions: dict[str, str] = {}
    for name in ("airflow", "aiohttp", "requests"):
        with contextlib.suppress(Exception):
            versions[name] = __import__(name).__version__
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gb": mem,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        **versions,
    }


def print_machine() -> None:
    """Print the machine line every benchmark starts with."""
    m = machine()
    details = ", ".join(f"{k} {m[k]}" for k in ("python", "airflow", "aiohttp", "requests") if k in m)
    print(f"# machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, {m['os']}; {details}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# load average (1 min) at start: {load:.2f} (figures are only comparable on an otherwise idle machine)")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """
    A plain-text table, right-aligned numbers.

    :param headers: the column titles.
    :param rows: the rows; cells are printed with ``str``.
    """
    cells = [[str(h) for h in headers], *[[_cell(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        lines.append(
            "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


@dataclass
class SimulatorProcess:
    """A simulator serving from its own process (so its CPU is not counted against what is measured)."""

    process: subprocess.Popen[str]
    base_url: str

    def control(self, route: str, body: Any = None) -> Any:
        """
        Call a ``/_sim`` control route.

        :param route: e.g. ``stats`` (GET) or ``reset`` (POST when ``body`` is given).
        :param body: a JSON body; its presence makes the call a POST.
        """
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.base_url}/_sim/{route}", data=data, method="POST" if data else "GET")
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=60) as resp:
            return json.loads(resp.read())

    @property
    def stats(self) -> dict[str, Any]:
        """The simulator's request counters."""
        return dict(self.control("stats"))

    def reset(self) -> None:
        """Forget every prediction and counter."""
        self.control("reset", {})


@contextlib.contextmanager
def simulator_process(*args: str, cpu: int | None = 1, fast_loop: bool = True) -> Iterator[SimulatorProcess]:
    """
    Run ``python -m airflow_provider_cometflux.testing.simulator`` on a free loopback port.

    :param args: extra command-line arguments, e.g. ``"--run-seconds", "20"``.
    :param cpu: the CPU to pin the simulator to (``None``: no pinning).
    :param fast_loop: serve from uvloop when it is installed (the service is not what is measured).
    """
    code = (
        "import sys\n"
        "from benchmarks.common import pin_to_cpu, raise_open_files\n"
        f"pin_to_cpu({cpu!r}); raise_open_files()\n"
        "try:\n"
        f"    assert {fast_loop!r}\n"
        "    import asyncio, uvloop\n"
        "    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())\n"
        "except (AssertionError, ImportError):\n"
        "    pass\n"
        "from benchmarks.limited_service import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    command = [PYTHON, "-W", "ignore", "-c", code, "--host", LOOPBACK, "--port", "0", "--backlog", "16384"]
    command += ["--api-key", BENCH_KEY, *args]  # the key of connection_env: the simulator checks it
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT, env=env)
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 60
        base_url = None
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            match = re.search(r"listening on (http://\S+)", line)
            if match:
                base_url = match.group(1)
                break
        if base_url is None:
            raise RuntimeError("the simulator did not start")
        yield SimulatorProcess(process, base_url)
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def connection_env(base_url: str) -> dict[str, str]:
    """The ``cometapi_default`` connection pointing at a simulator, as an environment variable."""
    conn = {"conn_type": "cometapi", "host": base_url, "password": BENCH_KEY}
    return {"AIRFLOW_CONN_COMETAPI_DEFAULT": json.dumps(conn)}


def target(met: bool) -> str:
    """``met`` or ``NOT met``."""
    return "met" if met else "NOT met"
