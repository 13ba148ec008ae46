"""Long-lived processes for the tests that start real services: each in its own process group, its output in a
file, stopped by PID (the whole group, then any descendant that left it) however the test ends."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any

import psutil
import pytest


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Component:
    """
    One service process (and its children), in its own process group, with its output in ``logs/<name>.log``.

    :param name: a name for messages and the log file.
    :param args: the command line.
    :param env: its environment.
    :param logs: the folder of the log file.
    :param popen: more keyword arguments for :class:`subprocess.Popen` (``user``, ``group``, ``cwd``, ...).
    """

    def __init__(self, name: str, args: Sequence[str], env: dict[str, str] | None, logs: Path, **popen: Any) -> None:
        self.name = name
        self.killed = False
        self.log_path = logs / f"{name}.log"
        self._log: IO[bytes] = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            list(args),
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, signalled as a whole
            **popen,
        )
        self._descendants: dict[int, psutil.Process] = {}

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def children(self) -> list[psutil.Process]:
        """Its descendants right now (also remembered, so :meth:`stop` finds those that left the group)."""
        try:
            found = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            return []
        self._descendants.update({child.pid: child for child in found})
        return found

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the whole process group."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole process group: no shutdown, no cleanup, as when a node dies."""
        self.children()
        self.killed = True
        self.signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, grace: float = 15) -> list[str]:
        """
        SIGTERM the group, SIGKILL it after ``grace`` seconds, then kill any descendant left behind.

        :return: what was still alive afterwards (nothing, normally).
        """
        self.children()
        if self.proc.poll() is None:
            self.signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
            self.signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(grace)
        self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        for child in self._descendants.values():
            with contextlib.suppress(psutil.Error):
                child.kill()
        _, alive = psutil.wait_procs(list(self._descendants.values()), timeout=10)
        left = []
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    left.append(f"{self.name}: {proc.pid} {proc.name()}")
        if self.proc.poll() is None:
            left.append(f"{self.name}: {self.proc.pid}")
        if not self._log.closed:
            self._log.close()
        return left

    def output(self, chars: int | None = None) -> str:
        """What it printed so far (the last ``chars`` characters when given)."""
        if not self._log.closed:
            self._log.flush()
        text = self.log_path.read_text(errors="replace")
        return text if chars is None else text[-chars:]


def stop_all(components: Iterable[Component]) -> list[str]:
    """Stop components in the reverse order of their start; returns what was left alive."""
    left: list[str] = []
    for component in reversed(list(components)):
        left += component.stop()
    return left


def wait_for(
    what: str, check: Callable[[], bool], timeout: float, components: Iterable[Component] = (), every: float = 0.5
) -> float:
    """
    Wait until ``check()`` is true; fail, with the components' recent output, when one of them (not killed on
    purpose) exited or ``timeout`` seconds passed.

    :return: the seconds waited.
    """
    started = time.monotonic()
    watched = list(components)
    while not check():
        for component in watched:
            if not component.killed and component.proc.poll() is not None:
                pytest.fail(f"{component.name} exited ({component.proc.returncode}):\n{component.output(3000)}")
        if time.monotonic() - started > timeout:
            tails = "\n".join(f"--- {c.name} ---\n{c.output(2000)}" for c in watched)
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{tails}")
        time.sleep(every)
    return time.monotonic() - started
