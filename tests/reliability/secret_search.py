"""Search everything an Airflow run left behind for a secret: process output, every file under AIRFLOW_HOME
(task and component logs, the SQLite database and its journal), and the database's rows decoded: XCom,
rendered template fields, trigger kwargs (decrypted when Airflow encrypted them) and every other table."""

from __future__ import annotations

import base64
import configparser
import json
import sqlite3
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Tables whose rows are reported on their own (every other table is searched as well, as "db table ...").
NAMED_TABLES = ("xcom", "rendered_task_instance_fields", "trigger")


@dataclass
class SearchReport:
    """What was searched (source, bytes or rows) and every hit (source, needle, a little context)."""

    searched: list[tuple[str, str]] = field(default_factory=list)
    hits: list[tuple[str, str, str]] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"searched {len(self.searched)} sources:"]
        lines += [f"  {name}: {size}" for name, size in self.searched]
        ours = [hit for hit in self.hits if AIRFLOW_MASK_REQUEST not in hit[2]]
        lines.append(f"hits: {len(ours)}")
        lines += [f"  {source}: {needle[:12]}... in {context!r}" for source, needle, context in ours[:20]]
        if len(self.hits) > len(ours):
            lines.append(
                f"and {len(self.hits) - len(ours)} in Airflow's own debug line about its masking request "
                f"({AIRFLOW_MASK_REQUEST}...), which Airflow 3.0 prints"
            )
        return "\n".join(lines)


def variants(secret: str) -> list[str]:
    """The secret as it could be written down: plain, base64 (as in Basic auth) and URL-encoded."""
    forms = [secret, base64.b64encode(secret.encode()).decode(), urllib.parse.quote(secret, safe="")]
    return list(dict.fromkeys(forms))


#: Airflow 3.0 logs, at debug level, each request to register a secret with the masker, the secret included (in
#: the task's own output, before the masker knows it). That is Airflow's doing, for its own connection lookups too.
AIRFLOW_MASK_REQUEST = "msg=MaskSecret(value="


def _scan(report: SearchReport, source: str, data: bytes, needles: list[str], size: str) -> None:
    report.searched.append((source, size))
    for needle in needles:
        position = data.find(needle.encode())
        while position >= 0:
            context = data[max(0, position - 60) : position + len(needle) + 20].decode("utf-8", "replace")
            report.hits.append((source, needle, context))
            position = data.find(needle.encode(), position + 1)


def provider_hits(report: SearchReport) -> list[tuple[str, str, str]]:
    """The hits that are not Airflow 3.0's debug line about its own masking request."""
    return [hit for hit in report.hits if AIRFLOW_MASK_REQUEST not in hit[2]]


def _fernet(home: Path) -> Any:
    from cryptography.fernet import Fernet, MultiFernet

    parser = configparser.ConfigParser(interpolation=None)
    parser.read(home / "airflow.cfg")
    keys = [k.strip() for k in parser.get("core", "fernet_key", fallback="").split(",") if k.strip()]
    return MultiFernet([Fernet(k.encode()) for k in keys]) if keys else None


def _trigger_kwargs(home: Path, raw: Any) -> str:
    """A trigger row's kwargs as text, decrypted first when they are not plain JSON."""
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    try:
        json.loads(text)
        return text
    except ValueError:
        fernet = _fernet(home)
        return fernet.decrypt(text.encode()).decode() if fernet is not None else text


def _rows(db: sqlite3.Connection, table: str) -> list[tuple[Any, ...]]:
    return db.execute(f'SELECT * FROM "{table}"').fetchall()  # table names come from sqlite_master


def search_run(home: Path, outputs: dict[str, str], secrets: list[str]) -> SearchReport:
    """
    Search a finished run for every variant of every secret.

    :param home: the run's AIRFLOW_HOME (its ``airflow.db`` and ``logs``).
    :param outputs: process outputs by name (e.g. ``{"airflow dags test": stdout + stderr}``).
    :param secrets: the secrets to look for.
    """
    needles = [form for secret in secrets for form in variants(secret)]
    report = SearchReport()
    for name, text in outputs.items():
        _scan(report, f"output of {name}", text.encode(), needles, f"{len(text)} chars")
    for path in sorted(p for p in home.rglob("*") if p.is_file()):
        data = path.read_bytes()
        _scan(report, f"file {path.relative_to(home)}", data, needles, f"{len(data)} bytes")
    db_path = home / "airflow.db"
    if db_path.exists():
        with sqlite3.connect(db_path) as db:
            tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for table in tables:
                rows = _rows(db, table)
                if table == "trigger":
                    columns = [row[1] for row in db.execute('PRAGMA table_info("trigger")')]
                    kwargs_at = columns.index("kwargs")
                    texts = [_trigger_kwargs(home, row[kwargs_at]) for row in rows]
                    _scan(
                        report, "db trigger kwargs (decoded)", "\n".join(texts).encode(), needles, f"{len(rows)} rows"
                    )
                text = "\n".join(repr(row) for row in rows).encode()
                source = f"db {table} rows" if table in NAMED_TABLES else f"db table {table}"
                if table in NAMED_TABLES or rows:
                    _scan(report, source, text, needles, f"{len(rows)} rows")
    return report


def found(report: SearchReport, text: str) -> set[str]:
    """The sources of a report that contain ``text`` (a positive control: a string known to be there)."""
    return {source for source, needle, _ in report.hits if needle == text}
