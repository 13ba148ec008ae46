"""scripts/lock_check.py LOCK...: fail unless the running virtualenv holds exactly the packages each lock pins.

Run with the virtualenv's own Python. The project itself (installed editable, not in the lock) is the one package
allowed beside the lock's. Prints one line per difference: missing, another version, or not in the lock.
"""

from __future__ import annotations

import re
import sys
from importlib.metadata import distributions
from pathlib import Path

PROJECT = "airflow-provider-cometflux"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned(lock: Path) -> dict[str, str]:
    pins = {}
    for line in lock.read_text().splitlines():
        match = PIN.match(line)
        if match:
            pins[canonical(match.group(1))] = match.group(2)
    return pins


def installed() -> dict[str, str]:
    return {canonical(d.metadata["Name"]): d.version for d in distributions() if d.metadata["Name"]}


def differences(pins: dict[str, str], have: dict[str, str]) -> list[str]:
    found = []
    for name, version in sorted(pins.items()):
        if name not in have:
            found.append(f"{name}=={version}: missing")
        elif have[name] != version:
            found.append(f"{name}=={version}: {have[name]} installed")
    found += [f"{name}=={have[name]}: not in the lock" for name in sorted(set(have) - set(pins) - {PROJECT})]
    return found


def main(locks: list[str]) -> int:
    have = installed()
    status = 0
    for lock in locks:
        pins = pinned(Path(lock))
        found = differences(pins, have)
        if found:
            status = 1
            print(f"{sys.prefix} does not match {lock}:", *found, sep="\n  ")
            print("  rebuild it with make (it syncs to the lock), or after changing pyproject.toml run make lock")
        else:
            print(f"{sys.prefix} matches {lock} ({len(pins)} packages)")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
