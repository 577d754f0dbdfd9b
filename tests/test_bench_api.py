"""``bourse bench api`` and ``bourse bench ws`` (``controlplane.bench_api``) run end to end
against a real ``bourse serve`` subprocess for about a second with two clients, and print one
well-formed JSON line with figures that show work was done and nothing failed. No speed is
asserted: benchmarks report figures, tests check behaviour."""

from __future__ import annotations

import json
from typing import Any

import pytest

from controlplane.bench_api import percentile
from controlplane.cli import main

API_KEYS = {
    "bench", "clients", "duration", "mode", "rate", "durability", "newOrderRespType", "orders",
    "orders_per_s", "cancels", "requests_per_s", "p50_us", "p90_us", "p99_us", "p999_us",
    "max_us", "cancel_p50_us", "cancel_max_us", "errors", "server_cpu", "client_cpu",
}  # fmt: skip
WS_KEYS = {
    "bench", "clients", "duration", "streams", "trade_rate", "quote_interval_ms", "durability",
    "messages", "messages_per_s", "per_client_messages_per_s", "min_client_messages_per_s",
    "trades", "depth_frames", "lag_p50_ms", "lag_p99_ms", "lag_p999_ms", "lag_max_ms",
    "trade_lag_p50_ms", "trade_lag_p99_ms", "trade_lag_p999_ms", "trade_lag_max_ms", "gaps",
    "disconnects", "driver_errors", "server_cpu", "client_cpu",
}  # fmt: skip


def _one_json_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict[str, Any]:
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1, lines
    report: dict[str, Any] = json.loads(lines[0])
    return report


def test_percentile_is_exact_nearest_rank() -> None:
    samples = list(range(1, 1001))
    assert [percentile(samples, q) for q in (0.5, 0.9, 0.99, 0.999, 1.0)] == [
        500,
        900,
        990,
        999,
        1000,
    ]
    assert percentile([7], 0.999) == 7
    assert percentile([], 0.5) == 0


@pytest.mark.parametrize("rate", [None, "100"])
def test_bench_api_prints_orders_and_latencies(
    capsys: pytest.CaptureFixture[str], rate: str | None
) -> None:
    argv = ["bench", "api", "--clients", "2", "--duration", "1", "--durability", "write"]
    argv += ["--warmup", "0.2"] + (["--rate", rate] if rate else [])
    report = _one_json_line(capsys, argv)
    assert set(report) == API_KEYS
    assert (report["bench"], report["clients"], report["durability"]) == ("api", 2, "write")
    assert report["mode"] == ("open" if rate else "closed")
    assert report["errors"] == {}
    assert report["orders"] > 0
    assert report["cancels"] > 0
    assert report["orders_per_s"] > 0
    assert 0 < report["p50_us"] <= report["p90_us"] <= report["p99_us"] <= report["p999_us"]
    assert report["p999_us"] <= report["max_us"]


def test_bench_ws_prints_messages_and_lag(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "ws", "--clients", "2", "--duration", "1.5", "--warmup", "0.3"]
    report = _one_json_line(capsys, argv)
    assert set(report) == WS_KEYS
    assert (report["bench"], report["clients"]) == ("ws", 2)
    assert report["messages"] > 0
    assert report["messages_per_s"] > 0
    assert report["trades"] > 0
    assert report["depth_frames"] > 0
    assert report["gaps"] == 0
    assert report["disconnects"] == 0
    assert report["driver_errors"] == {}
    assert report["lag_p50_ms"] <= report["lag_p99_ms"] <= report["lag_max_ms"]
