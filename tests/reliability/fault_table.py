"""The fault matrix: every fault the simulator injects, through the inline and the deferred operator paths.

This table IS the test: ``dags/fault_matrix.py`` builds one task per row and path from it, and
``test_fault_matrix.py`` checks each task's state, its log and the creates the simulator saw against it.
Print it (for a release note or an issue) with::

    python tests/reliability/fault_table.py

Faults are chosen per task with ``[sim:...]`` prompt directives, so every row runs in one DAG run per path.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The ways the operator waits: polling in the worker, or deferring at once to the triggerer.
PATHS = ("inline", "deferred")

#: Connections the matrix DAGs use (defined by the test): the right key, a wrong key, and no server at all.
GOOD_CONN = "cometapi_default"
WRONG_KEY_CONN = "cometapi_wrong_key"
REFUSED_CONN = "cometapi_refused"

#: Seconds a stuck prediction is waited for before the task gives up.
STUCK_TIMEOUT = 4


@dataclass(frozen=True)
class Fault:
    """
    One row of the matrix.

    :param name: the task id (letters, digits, ``_``).
    :param fault: what goes wrong, for people.
    :param directive: the ``[sim:...]`` directives put in the task's prompt.
    :param outcome: ``success`` or ``failed``: the task's final state.
    :param log: text the task's log must contain (why it failed, or proof the fault was met).
    :param posts: create requests the service must have received for this task.
    :param created: predictions the service must have created for this task (never more than one).
    :param cancels: cancel requests the task must have sent.
    :param conn_id: the connection the task uses.
    :param store: copy the outputs into storage (the download faults need it).
    :param timeout: the task's ``timeout`` in seconds.
    :param retries: the task's Airflow ``retries``.
    """

    name: str
    fault: str
    directive: str
    outcome: str
    log: str
    posts: int = 1
    created: int = 1
    cancels: int = 0
    conn_id: str = GOOD_CONN
    store: bool = False
    timeout: float = 60
    retries: int = 0


def _status_rows(route: str, statuses: tuple[int, ...]) -> list[Fault]:
    """A retryable error status, with a JSON and with an HTML body, once: retried, then all is well."""
    then = "retried, then created" if route == "create" else "poll retried"
    return [
        Fault(
            name=f"{route}_{status}_{shape.lower()}",
            fault=f"{'create' if route == 'create' else 'poll'}: HTTP {status}, {shape} body, once ({then})",
            directive=f"[sim:fault={route},{kind},status={status}]",
            outcome="success",
            log=f"HTTP {status}",
            posts=2 if route == "create" else 1,
        )
        for status in statuses
        for shape, kind in (("JSON", "status"), ("HTML", "html"))
    ]


FAULTS: tuple[Fault, ...] = (
    # -- the create ------------------------------------------------------------------------------------------
    Fault(
        "create_429",
        "create: HTTP 429 with Retry-After: 1, once",
        "[sim:fault=create,status,status=429,retry_after=1]",
        "success",
        "retrying in 1.",
        posts=2,
    ),
    *_status_rows("create", (500, 502, 503, 504)),
    Fault(
        "create_500_invalid_request",
        "create: HTTP 500 with error.code invalid_request (never retried)",
        "[sim:fault=create,status,status=500,code=invalid_request]",
        "failed",
        "code invalid_request",
        created=0,
    ),
    *(
        Fault(
            f"create_{status}",
            f"create: HTTP {status} (never retried)",
            f"[sim:fault=create,status,status={status}]",
            "failed",
            f"HTTP {status}",
            created=0,
        )
        for status in (400, 401, 403, 404, 422)
    ),
    Fault(
        "create_dropped",
        "create: connection closed before any answer (nothing created, but the client cannot know)",
        "[sim:fault=create,drop]",
        "failed",
        "a prediction may exist",
        created=0,
    ),
    Fault(
        "create_dropped_after_create",
        "create: prediction created, then the connection closed unanswered",
        "[sim:fault=create,drop_after_create]",
        "failed",
        "a prediction may exist",
    ),
    Fault(
        "create_lost_with_retries",
        "create: prediction created, then the connection closed unanswered; the task has retries=2 (none used)",
        "[sim:fault=create,drop_after_create]",
        "failed",
        "a prediction may exist",
        retries=2,
    ),
    Fault(
        "create_malformed",
        "create: HTTP 200 with a body that is not JSON",
        "[sim:fault=create,malformed]",
        "failed",
        "may have been created",
        created=0,
    ),
    Fault(
        "create_slow", "create: answer takes 3 s", "[sim:fault=create,slow,delay=3]", "success", "Created prediction"
    ),
    Fault(
        "create_refused",
        "create: connection refused (no server)",
        "",
        "failed",
        "could not reach CometAPI",
        posts=0,
        created=0,
        conn_id=REFUSED_CONN,
    ),
    Fault(
        "wrong_key",
        "wrong API key: HTTP 401 from the service (never retried)",
        "",
        "failed",
        "HTTP 401",
        created=0,
        conn_id=WRONG_KEY_CONN,
    ),
    # -- the polls -------------------------------------------------------------------------------------------
    Fault(
        "get_429",
        "poll: HTTP 429 with Retry-After: 1, once",
        "[sim:fault=get,status,status=429,retry_after=1]",
        "success",
        "refused a status poll (429): pausing every poll of the connection",
    ),
    *_status_rows("get", (500, 502, 503, 504)),
    Fault(
        "get_dropped",
        "poll: connection closed without an answer, twice",
        "[sim:fault=get,drop,times=2]",
        "success",
        "could not reach CometAPI",
    ),
    Fault("get_slow", "poll: answer takes 6 s, once", "[sim:fault=get,slow,delay=6]", "success", "done: 1 image(s)"),
    Fault(
        "get_malformed",
        "poll: HTTP 200 with a body that is not JSON, twice",
        "[sim:fault=get,malformed,times=2]",
        "success",
        "not JSON",
    ),
    Fault(
        "get_503_forever",
        "poll: HTTP 503 on every poll (a bounded run of transient errors, then give up)",
        "[sim:fault=get,status,status=503,retry_after=0,times=all]",
        "failed",
        "failed (4 in a row)",  # the shared poller's warning before the fifth failure ends the wait
    ),
    Fault(
        "get_404",
        "poll: HTTP 404 (never retried)",
        "[sim:fault=get,status,status=404,times=all]",
        "failed",
        "HTTP 404",
    ),
    Fault(
        "get_401",
        "poll: HTTP 401 (never retried)",
        "[sim:fault=get,status,status=401,times=all]",
        "failed",
        "HTTP 401",
    ),
    # -- the prediction itself -------------------------------------------------------------------------------
    Fault("failed", "prediction ends failed", "[sim:failed]", "failed", "ended with status 'failed': NSFW content"),
    Fault("canceled", "prediction ends canceled", "[sim:canceled]", "failed", "ended with status 'canceled'"),
    Fault("aborted", "prediction ends aborted", "[sim:aborted]", "failed", "ended with status 'aborted'"),
    Fault(
        "stuck",
        f"prediction stuck in processing (timeout {STUCK_TIMEOUT} s): cancelled at the deadline",
        "[sim:stuck]",
        "failed",
        "last status 'processing'",
        cancels=1,
        timeout=STUCK_TIMEOUT,
    ),
    Fault(
        "stuck_no_cancel_route",
        f"prediction stuck (timeout {STUCK_TIMEOUT} s), service has no cancel route (HTML 404)",
        "[sim:stuck] [sim:fault=cancel,html,status=404,times=all]",
        "failed",
        "no cancel route",
        cancels=1,
        timeout=STUCK_TIMEOUT,
    ),
    # -- the outputs -----------------------------------------------------------------------------------------
    Fault(
        "file_expired",
        "output download: URL expired (HTTP 404)",
        "[sim:fault=file,expired,times=all]",
        "failed",
        "is gone (expired",
        store=True,
    ),
    Fault(
        "file_cut_short",
        "output download: body cut short, once",
        "[sim:fault=file,truncate]",
        "success",
        "retrying in",
        store=True,
    ),
)


def prompt(fault: Fault, path: str) -> str:
    """The task's prompt: a tag unique to the task (to count its creates), then the fault's directives."""
    return f"{tag(fault, path)} a lighthouse at dawn {fault.directive}".strip()


def tag(fault: Fault, path: str) -> str:
    return f"fm:{path}:{fault.name}:"


def dag_id(path: str) -> str:
    return f"fault_matrix_{path}"


def markdown(rows: list[dict[str, str]]) -> str:
    """A markdown table with the columns of the first row."""
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    lines += ["| " + " | ".join(str(row[c]).replace("|", "\\|") for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def merge_paths(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """One row per fault where every path came to the same thing (``path`` then reads ``inline, deferred``)."""
    merged: dict[tuple[str, ...], dict[str, str]] = {}
    for row in rows:
        key = tuple(value for column, value in row.items() if column != "path")
        if key in merged:
            merged[key]["path"] += f", {row['path']}"
        else:
            merged[key] = dict(row)
    return list(merged.values())


def expected_rows() -> list[dict[str, str]]:
    """The expected matrix: one row per fault and path."""
    return [
        {
            "fault": fault.fault,
            "path": path,
            "outcome": fault.outcome + ("" if fault.outcome == "success" else f" ({fault.log})"),
            "creates (POSTs / predictions made)": f"{fault.posts} / {fault.created}",
        }
        for fault in FAULTS
        for path in PATHS
    ]


if __name__ == "__main__":
    print(markdown(merge_paths(expected_rows())))
