"""``make loadtest``: run the Locust suite headless against Bourse and keep the reports.

Uses the exchange at ``--host`` (default ``http://127.0.0.1:8080``) if it answers
``/api/v3/ping``; otherwise starts ``bourse serve`` (the demo config, ``bourse.toml``, in a
fresh temporary data directory unless ``--data-dir`` names one) for the
run, with the rate limits lifted (all users share one address), and stops it afterwards
(SIGINT: drain, snapshot, close). Locust's HTML report and CSV
stats go to ``--reports`` (default ``reports/``): ``locust.html``, ``locust_stats.csv``,
``locust_failures.csv``, ``locust_stats_history.csv``. Exit status: Locust's (non-zero when
any request failed).

    python loadtests/run.py --users 30 --spawn-rate 10 --duration 60s
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UNLIMITED = {
    "BOURSE_LIMITS_REQUEST_WEIGHT_PER_MINUTE": str(10**9),
    "BOURSE_LIMITS_ORDERS_PER_10S": str(10**9),
    "BOURSE_LIMITS_ORDERS_PER_DAY": str(10**9),
}
"""Every simulated user connects from this machine's one address, and the request-weight
limit is per address: a server started for a load test lifts the limits (a server that is
already running keeps its own; see loadtests/README.md)."""
BIN = Path(sys.executable).parent


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/v3/ping", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def start_server(data_dir: str) -> tuple[subprocess.Popen[str], str, str]:
    """``bourse serve`` on free ports; its HTTP base URL and gateway address (from the
    banner it prints)."""
    server = subprocess.Popen(
        [
            str(BIN / "bourse"),
            "serve",
            "--data-dir",
            data_dir,
            "--http-port",
            "0",
            "--gateway-listen",
            "127.0.0.1:0",
        ],
        cwd=ROOT,
        env={**os.environ, **UNLIMITED, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert server.stdout is not None
    http = gateway = ""
    deadline = time.monotonic() + 120
    for line in server.stdout:
        sys.stdout.write(f"[serve] {line}")
        if found := re.search(r"REST API\s+(http://\S+?)/api/v3/", line):
            http = found.group(1)
        if found := re.search(r"binary gateway\s+(\S+:\d+)", line):
            gateway = found.group(1)
        if line.startswith("Ctrl-C stops") or time.monotonic() > deadline:
            break
    if not http or not gateway:
        server.kill()
        raise SystemExit("bourse serve did not start (see its output above)")
    return server, http, gateway


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--host", default=os.environ.get("BOURSE_URL", "http://127.0.0.1:8080"))
    p.add_argument("--gateway", default=os.environ.get("BOURSE_GATEWAY", "127.0.0.1:7001"))
    p.add_argument(
        "--data-dir",
        default=os.environ.get("BOURSE_DATA_DIR"),
        help="the running server's data directory (its demo operator token); a server this "
        "run starts gets a fresh temporary one unless this is given",
    )
    p.add_argument("--users", type=int, default=int(os.environ.get("LOADTEST_USERS", "30")))
    p.add_argument(
        "--spawn-rate", type=float, default=float(os.environ.get("LOADTEST_SPAWN_RATE", "10"))
    )
    p.add_argument("--duration", default=os.environ.get("LOADTEST_DURATION", "60s"))
    p.add_argument("--reports", default=os.environ.get("LOADTEST_REPORTS", "reports"))
    args = p.parse_args(argv)

    server = None
    host, gateway = args.host, args.gateway
    data_dir = args.data_dir
    if not answers(host):
        print(f"no exchange at {host}: starting bourse serve for this run")
        if data_dir is None:  # the run's users, keys and deposits stay out of make run's
            data_dir = tempfile.mkdtemp(prefix="bourse-loadtest-")
        server, host, gateway = start_server(data_dir)
    reports = Path(args.reports)
    reports.mkdir(parents=True, exist_ok=True)
    command = [
        str(BIN / "locust"),
        "-f",
        str(ROOT / "loadtests" / "locustfile.py"),
        "--headless",
        "--users",
        str(args.users),
        "--spawn-rate",
        str(args.spawn_rate),
        "--run-time",
        args.duration,
        "--host",
        host,
        "--bourse-gateway",
        gateway,
        "--bourse-data-dir",
        data_dir or "data/bourse",
        "--html",
        str(reports / "locust.html"),
        "--csv",
        str(reports / "locust"),
        "--csv-full-history",
        "--only-summary",
        "--stop-timeout",
        "5",
    ]
    try:
        return subprocess.call(command, cwd=ROOT)
    finally:
        if server is not None:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                server.kill()


if __name__ == "__main__":
    raise SystemExit(main())
