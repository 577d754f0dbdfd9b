"""The Locust suite's smoke run: a few seconds, a few users of each kind, against a real
``bourse serve`` (started by ``loadtests/run.py`` on free ports). Every request must succeed
and every kind of traffic must be there: binary order entry, signed REST and WebSocket."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_locust_smoke_run_has_traffic_of_every_kind_and_no_failures(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "loadtests" / "run.py"),
            "--host",
            "http://127.0.0.1:1",  # nothing there: the run starts its own server
            "--data-dir",
            str(tmp_path / "data"),
            "--users",
            "6",
            "--spawn-rate",
            "6",
            "--duration",
            "6s",
            "--reports",
            str(reports),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    with (reports / "locust_stats.csv").open() as f:
        rows = {(r["Type"], r["Name"]): r for r in csv.DictReader(f)}
    total = rows[("", "Aggregated")]
    assert int(total["Failure Count"]) == 0
    for kind in [("BIN", "new_order"), ("POST", "POST /api/v3/order"), ("WS", "depth")]:
        assert int(rows[kind]["Request Count"]) > 0, kind
    assert (reports / "locust.html").stat().st_size > 10_000
