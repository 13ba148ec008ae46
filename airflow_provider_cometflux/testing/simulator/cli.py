"""The command line: ``python -m airflow_provider_cometflux.testing.simulator --port 8765 ...``."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading

__all__ = ["DEFAULT_API_KEY", "build_parser", "main"]

#: The key the command-line simulator accepts unless told another (``--api-key``) or any (``--any-key``).
DEFAULT_API_KEY = "sim-0123456789abcdef"


def _raise_open_file_limit() -> None:
    """Raise the soft open-file limit to the hard one so many connections can be served."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def build_parser() -> argparse.ArgumentParser:
    """The simulator's command-line options."""
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_cometflux.testing.simulator",
        description="Serve a local simulator of CometAPI's Replicate-format FLUX API.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    parser.add_argument("--run-seconds", type=float, default=1.0, help="time each prediction takes")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("COMETAPI_SIMULATOR_API_KEY") or DEFAULT_API_KEY,
        help=f"the only accepted bearer token; others answer 401 (default: $COMETAPI_SIMULATOR_API_KEY, else "
        f"{DEFAULT_API_KEY})",
    )
    parser.add_argument("--any-key", action="store_true", help="accept any non-empty bearer token")
    parser.add_argument("--output-kind", choices=("auto", "list", "string"), default="auto")
    parser.add_argument("--no-cancel", action="store_true", help="answer the cancel route with 404")
    parser.add_argument("--expire-after", type=float, default=None, help="data is removed S seconds after completion")
    parser.add_argument("--rate-limit-per-minute", type=int, default=None, help="answer 429 over this many creates")
    parser.add_argument(
        "--requests-per-second",
        type=int,
        default=None,
        help="answer 429 (Retry-After: 1) over this many API requests in one second",
    )
    parser.add_argument("--poll-delay", type=float, default=0.0, help="every prediction GET takes S seconds")
    parser.add_argument("--image-size", type=int, default=None, help="scale images to at most N pixels a side")
    parser.add_argument("--image-bytes", type=int, default=None, help="pad image files to about N bytes")
    parser.add_argument(
        "--known-model",
        action="append",
        default=None,
        metavar="OWNER/NAME",
        help="a model the service has (repeatable; default: the FLUX models)",
    )
    parser.add_argument("--any-model", action="store_true", help="accept any model id (unvalidated)")
    parser.add_argument("--backlog", type=int, default=4096, help="listen backlog")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each prediction created")
    return parser


def main(argv: list[str] | None = None) -> int:
    """
    Run the simulator until SIGINT or SIGTERM.

    :param argv: command-line arguments (default ``sys.argv[1:]``).
    :return: the process exit status.
    """
    # the package's name, looked up now: a caller may have replaced it (e.g. with a subclass)
    from airflow_provider_cometflux.testing import simulator as package

    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(message)s")
    _raise_open_file_limit()
    from airflow_provider_cometflux.testing.simulator.validation import DEFAULT_KNOWN_MODELS

    known_models: list[str] | frozenset[str] | None = args.known_model or DEFAULT_KNOWN_MODELS
    if args.any_model:
        known_models = None
    simulator = package.CometAPISimulator(
        args.host,
        args.port,
        run_seconds=args.run_seconds,
        api_key=None if args.any_key else args.api_key,
        output_kind=args.output_kind,
        cancel_supported=not args.no_cancel,
        expire_after=args.expire_after,
        rate_limit_per_minute=args.rate_limit_per_minute,
        requests_per_second=args.requests_per_second,
        poll_delay=args.poll_delay,
        image_size=args.image_size,
        image_bytes=args.image_bytes,
        backlog=args.backlog,
        known_models=known_models,
    )
    stop = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        simulator.start()
    except (RuntimeError, OSError) as exc:  # no Pillow, or the port is taken
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    print(f"CometAPI simulator listening on {simulator.base_url}", flush=True)
    if simulator.api_key is None:
        print("It accepts any non-empty API key (--any-key).", flush=True)
    elif simulator.api_key == DEFAULT_API_KEY:
        print(f"It accepts only the API key {DEFAULT_API_KEY}; any other answers 401.", flush=True)
    else:  # a key of the caller's, never printed
        print("It accepts only the API key given (--api-key or $COMETAPI_SIMULATOR_API_KEY); any other answers 401.")
    try:
        while not stop.wait(0.5):
            pass
    finally:
        simulator.stop()
    return 0
