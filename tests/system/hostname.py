"""``[core] hostname_callable`` for the system suite: each component names itself by ``COMETFLUX_HOSTNAME``, as
components on separate machines would, so a test can tell which triggerer (by its job's ``hostname``) holds what."""

from __future__ import annotations

import os
import socket


def component_hostname() -> str:
    """The component's name from ``COMETFLUX_HOSTNAME``, else the machine's."""
    return os.environ.get("COMETFLUX_HOSTNAME") or socket.getfqdn()
