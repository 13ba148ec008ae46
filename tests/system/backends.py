"""PostgreSQL and Redis with fresh state for the system suite, from the machine's Debian packages (``make test``
installs them with ``scripts/apt-ensure``): a new PostgreSQL cluster in a temporary folder (``initdb``, then
``postgres`` in the foreground, run as an unprivileged user when the tests run as root, which PostgreSQL refuses)
and a Redis server without persistence, each on a free loopback port and stopped by PID."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.system.processes import Component, free_port, wait_for

DATABASE = "airflow"
DB_USER = "airflow"


def postgres_bin() -> Path:
    """The newest ``/usr/lib/postgresql/<major>/bin`` holding ``initdb``."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0
    )
    if not candidates:
        raise RuntimeError("PostgreSQL is not installed: run scripts/apt-ensure postgresql (make test does)")
    return candidates[-1].parent


def _unprivileged() -> dict[str, Any]:
    """Popen arguments that run a command as ``postgres`` (or ``nobody``) when we are root, else nothing."""
    if os.geteuid() != 0:
        return {}
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
    raise RuntimeError("running as root, and neither a 'postgres' nor a 'nobody' user exists to run PostgreSQL")


@dataclass
class Postgres:
    """A running cluster: ``url`` is SQLAlchemy's (psycopg2), ``dsn`` libpq's."""

    component: Component
    root: Path
    port: int
    bin: Path

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://{DB_USER}@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def result_backend(self) -> str:
        return f"db+postgresql://{DB_USER}@127.0.0.1:{self.port}/{DATABASE}"

    def dump(self) -> bytes:
        """``pg_dump`` of the whole database, as plain SQL (data and schema)."""
        proc = subprocess.run(
            [str(self.bin / "pg_dump"), "-h", "127.0.0.1", "-p", str(self.port), "-U", DB_USER, DATABASE],
            capture_output=True,
            timeout=300,
            check=True,
        )
        return proc.stdout

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=DB_USER, dbname=DATABASE, connect_timeout=10)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return list(cur.fetchall())
        finally:
            conn.close()

    def stop(self) -> list[str]:
        left = self.component.stop()
        shutil.rmtree(self.root, ignore_errors=True)
        return left


def start_postgres(logs: Path) -> Postgres:
    """
    ``initdb`` a cluster in a new temporary folder (trust auth, loopback only) and run ``postgres`` on a free port.

    :param logs: where the server's log goes.
    """
    binaries = postgres_bin()
    as_user = _unprivileged()
    root = Path(tempfile.mkdtemp(prefix="cometflux-pg-"))
    data, sockets = root / "data", root / "sockets"
    sockets.mkdir()
    if as_user:
        for path in (root, sockets):
            os.chown(path, as_user["user"], as_user["group"])
    init = subprocess.run(
        [str(binaries / "initdb"), "-D", str(data), "-U", DB_USER, "--auth=trust", "-E", "UTF8", "--no-sync"],
        capture_output=True,
        text=True,
        timeout=120,
        **as_user,
    )
    if init.returncode != 0:
        raise RuntimeError(f"initdb failed: {init.stdout[-2000:]}{init.stderr[-2000:]}")
    port = free_port()
    settings = {
        "listen_addresses": "127.0.0.1",
        "port": str(port),
        "unix_socket_directories": str(sockets),
        "max_connections": "300",
        "fsync": "off",  # a throwaway cluster: durability is not what is tested
        "synchronous_commit": "off",
        "full_page_writes": "off",
    }
    args = [str(binaries / "postgres"), "-D", str(data)]
    for name, value in settings.items():
        args += ["-c", f"{name}={value}"]
    component = Component("postgres", args, None, logs, **as_user)
    server = Postgres(component, root, port, binaries)

    def ready() -> bool:
        probe = subprocess.run(
            [str(binaries / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)], capture_output=True, timeout=10
        )
        return probe.returncode == 0

    try:
        wait_for("PostgreSQL to accept connections", ready, 60, [component])
        created = subprocess.run(
            [str(binaries / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", DB_USER, DATABASE],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if created.returncode != 0:
            raise RuntimeError(f"createdb failed: {created.stderr[-2000:]}")
    except BaseException:
        server.stop()
        raise
    return server


@dataclass
class Redis:
    """A running Redis server without persistence."""

    component: Component
    port: int
    workdir: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def cli(self, *args: str) -> bytes:
        proc = subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), *args], capture_output=True, timeout=60, check=True
        )
        return proc.stdout

    def everything(self) -> dict[str, bytes]:
        """
        Every key (``redis-cli --scan``) with its value read whole by type: strings, lists, hashes, sets and sorted
        sets, as raw bytes.
        """
        import redis

        keys = [k for k in self.cli("--scan").decode().splitlines() if k]
        client = redis.Redis(host="127.0.0.1", port=self.port)
        values: dict[str, bytes] = {}
        try:
            for key in keys:
                kind = client.type(key).decode()
                if kind == "string":
                    values[key] = client.get(key) or b""
                elif kind == "list":
                    values[key] = b"\n".join(client.lrange(key, 0, -1))
                elif kind == "hash":
                    values[key] = b"\n".join(k + b"=" + v for k, v in client.hgetall(key).items())
                elif kind == "set":
                    values[key] = b"\n".join(sorted(client.smembers(key)))
                elif kind == "zset":
                    values[key] = b"\n".join(client.zrange(key, 0, -1))
                else:
                    values[key] = client.dump(key) or b""
        finally:
            client.close()
        return values

    def stop(self) -> list[str]:
        left = self.component.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
        return left


def start_redis(logs: Path) -> Redis:
    """``redis-server`` on a free loopback port, nothing saved to disk."""
    if shutil.which("redis-server") is None:
        raise RuntimeError("Redis is not installed: run scripts/apt-ensure redis-server (make test does)")
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="cometflux-redis-"))
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    component = Component("redis", [*args, "--dir", str(workdir)], None, logs)
    server = Redis(component, port, workdir)

    def ready() -> bool:
        try:
            return server.cli("ping").strip() == b"PONG"
        except subprocess.CalledProcessError:
            return False

    try:
        wait_for("Redis to answer", ready, 30, [component])
    except BaseException:
        server.stop()
        raise
    return server
