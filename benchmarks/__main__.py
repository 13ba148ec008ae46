"""
Run every benchmark in turn: ``python -m benchmarks`` (about 45 minutes on 2 cores), or ``--quick`` (a few
minutes: smaller N and batches, the same code paths).
"""

from __future__ import annotations

import argparse
import sys

from benchmarks import bench_accounts, bench_batch, bench_gallery, bench_import, bench_triggers, bench_worker_slots


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller runs, for a quick look")
    parser.add_argument("--extra-path", default=None, help="where apache-airflow-providers-http is (benchmark b)")
    args = parser.parse_args(argv)
    extra = ["--extra-path", args.extra_path] if args.extra_path else []
    print("\n## (a) triggers in one event loop\n", flush=True)
    if args.quick:
        bench_triggers.main(["--n", "1000", "--run-seconds", "10", "--modes", "triggers", "threads", "batch"])
        bench_triggers.main(["--n", "--run-seconds", "10", "--modes", "triggers", "backoff", "--limited", "1000:50"])
    else:
        bench_triggers.main(["--modes", "triggers", "threads", "batch", "--variant", "gc-tune"])
        limited = ["--limited", "1000:50", "5000:200"]
        bench_triggers.main(["--n", "--run-seconds", "10", "--modes", "triggers", "backoff", *limited])
    print("\n## (b) import time\n", flush=True)
    bench_import.main([*extra, "--repeat", "3" if args.quick else "7"])
    print("\n## (c) worker-slot seconds and requests per prediction\n", flush=True)
    bench_worker_slots.main(["--long", "15"] if args.quick else [])
    print("\n## (d) a batch under the rate limit\n", flush=True)
    bench_batch.main(["--prompts", "200"] if args.quick else [])
    print("\n## (e) one account, several triggerers\n", flush=True)
    if args.quick:
        bench_accounts.main(["--runs", "1"])
    else:
        bench_accounts.main(["--runs", "3"])
        bench_accounts.main(["--n", "2500", "--rps", "100", "--runs", "3"])
    print("\n## (g) the gallery of a 1,000-image run in headless Chromium\n", flush=True)
    bench_gallery.main(["--images", "200"] if args.quick else [])
    return 0


if __name__ == "__main__":
    sys.exit(main())
