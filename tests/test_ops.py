"""Operations (ops/): Prometheus config, recording and alert rules, dashboards.

Static checks: the generated consoles and Grafana dashboard are current with ops/queries.toml
and use exactly its queries; ``promtool check config``, ``check rules``, and ``test rules``
(the unit tests fire every alert from synthetic series and check the healthy case).

Integration: a real ``bourse serve`` (node, gateway, demo market maker, HTTP API with
``GET /metrics``) on free ports, Prometheus started by ops/run-prometheus.sh scraping it every
second; once the target is up, every dashboard query runs through Prometheus's HTTP API and
must return data; every console renders without a template error and with every figure
filled; headless Chromium screenshots the overview console (its path is printed).

Tools come from Debian's ``prometheus`` and ``chromium`` packages (ops/install.sh). Without
them the tests skip, except under ``CI=true``, where a missing tool is a failure. The
integration test waits by polling with deadlines (never asserts on timing); about 15 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import uvloop

from controlplane.config import ServerConfig
from controlplane.serve import Server, start
from tests.servers import server_config

ROOT = Path(__file__).resolve().parents[1]
OPS = ROOT / "ops"
PROMETHEUS_YML = OPS / "prometheus" / "prometheus.yml"
RULES = sorted((OPS / "prometheus" / "rules").glob("*.yml"))
RULE_TESTS = sorted((OPS / "prometheus" / "tests").glob("*.yml"))
CONSOLES = OPS / "consoles"
GRAFANA = OPS / "grafana" / "bourse.json"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

TEMPLATE_ERRORS = ("error executing template", "<no value>", "template: ", 'executing "')
EMPTY_DRILLDOWN = re.compile(r'class="prom_query_drilldown"[^>]*>\s*-\s*</a>')


def require(tool: str) -> str:
    """The tool's path; skip without it (fail under CI, which must install it)."""
    path = shutil.which(tool)
    if path is None:
        message = f"{tool} is not installed (Debian package; run ops/install.sh or make ops)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def queries() -> dict[str, Any]:
    with (OPS / "queries.toml").open("rb") as f:
        return tomllib.load(f)


def dashboard_exprs() -> set[str]:
    """Every PromQL expression of ops/queries.toml (read here, independently of generate.py)."""
    exprs: set[str] = set()
    for dashboard in queries()["dashboard"]:
        exprs.update(s["expr"] for s in dashboard.get("stat", []))
        exprs.update(s["expr"] for g in dashboard.get("graph", []) for s in g["series"])
        exprs.update(c["expr"] for t in dashboard.get("table", []) for c in t["columns"])
    return exprs


def console_exprs(text: str) -> set[str]:
    """The PromQL of a console template: Go raw strings (drilldowns, table queries) and the
    expressions of its graphs."""
    exprs = set(re.findall(r"`([^`]*)`", text))
    for spec in re.findall(r"bourseGraph\(\"[^\"]+\", (\{.*\})\)\);</script>", text):
        exprs.update(json.loads(spec)["expr"])
    return exprs


def run(*command: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in command], capture_output=True, text=True, timeout=60, check=False
    )


# Static --------------------------------------------------------------------------------------


def test_generated_dashboards_are_current() -> None:
    result = run(sys.executable, OPS / "generate.py", "--check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_consoles_and_grafana_use_exactly_the_queries() -> None:
    expected = dashboard_exprs()
    assert expected
    ids = [d["id"] for d in queries()["dashboard"]]
    assert ids == ["overview", "engine", "api", "markets"]
    in_consoles: set[str] = set()
    for dashboard in queries()["dashboard"]:
        text = (CONSOLES / f"{dashboard['id']}.html").read_text()
        in_consoles |= console_exprs(text)
        assert '{{ template "bourse_head"' in text
    assert in_consoles == expected
    assert sorted(p.stem for p in CONSOLES.glob("*.html")) == sorted(ids)
    menu = (OPS / "console_libraries" / "bourse_menu.lib").read_text()
    assert re.findall(r'"(\w+)\.html"', menu) == ids

    grafana = json.loads(GRAFANA.read_text())
    panels = [p for p in grafana["panels"] if p["type"] != "row"]
    in_grafana = {t["expr"] for p in panels for t in p["targets"]}
    assert in_grafana == expected
    assert [p["title"] for p in grafana["panels"] if p["type"] == "row"] == [
        d["title"] for d in queries()["dashboard"]
    ]
    # Importable into any Grafana: every query goes to the chosen Prometheus data source.
    assert {json.dumps(p["datasource"]) for p in panels} == {
        json.dumps({"type": "prometheus", "uid": "${datasource}"})
    }


def test_dashboards_read_recorded_series() -> None:
    recorded = set(
        re.findall(r"record: (\S+)", (OPS / "prometheus/rules/recording.yml").read_text())
    )
    used = {name for expr in dashboard_exprs() for name in re.findall(r"\b\w+:\w+:\w+\b", expr)}
    assert used
    assert used <= recorded, used - recorded


def test_promtool_check_config_and_rules() -> None:
    promtool = require("promtool")
    config = run(promtool, "check", "config", PROMETHEUS_YML)
    assert config.returncode == 0, config.stdout + config.stderr
    assert "SUCCESS" in config.stdout
    rules = run(promtool, "check", "rules", *RULES)
    assert rules.returncode == 0, rules.stdout + rules.stderr


def test_promtool_unit_tests_fire_every_alert_and_not_when_healthy() -> None:
    promtool = require("promtool")
    alerts = re.findall(r"- alert: (\w+)", (OPS / "prometheus/rules/alerts.yml").read_text())
    assert len(alerts) >= 10
    tests = "\n".join(p.read_text() for p in RULE_TESTS)
    for alert in alerts:
        silent = rf"alertname: {alert}\n\s+exp_alerts: \[\]"
        fires = rf"alertname: {alert}\n\s+exp_alerts:\n\s+- exp_labels: .*severity: "
        assert re.search(silent, tests), f"no healthy case for {alert}"
        assert re.search(fires, tests), f"no firing case for {alert}"
    result = run(promtool, "test", "rules", *RULE_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr


# Integration ---------------------------------------------------------------------------------


METRICS_TOKEN = "ops-test-scrape-token-7f3a"
"""The live test's server guards /metrics with a token; run-prometheus.sh presents it."""


def bourse_config(data_dir: Path) -> ServerConfig:
    return server_config(data_dir, http={"metrics_token": METRICS_TOKEN})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def prometheus(target: str, listen: str, tmp_path: Path) -> Iterator[Path]:
    """ops/run-prometheus.sh in its own process group; yields its log file."""
    log = tmp_path / "prometheus.log"
    env = {
        **os.environ,
        "PROMETHEUS_STORAGE": str(tmp_path / "tsdb"),
        "BOURSE_METRICS_TOKEN": METRICS_TOKEN,
    }
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(OPS / "run-prometheus.sh"), target, listen],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        yield log
    finally:
        process.terminate()  # the script's trap stops Prometheus and removes its files
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


async def poll(deadline: float, what: str, check: Any, log: Path) -> Any:
    """Await ``check()`` until it returns something truthy; fail with the log at the deadline."""
    while True:
        with contextlib.suppress(aiohttp.ClientError):
            result = await check()
            if result:
                return result
        if time.monotonic() > deadline:
            pytest.fail(f"{what}; Prometheus log:\n{log.read_text()[-3000:]}")
        await asyncio.sleep(0.25)


async def traffic(http: aiohttp.ClientSession, server: Server, stop: asyncio.Event) -> None:
    """REST requests of several routes and codes (200, 400, 404) until ``stop``."""
    paths = ("/api/v3/ping", "/api/v3/depth?symbol=BTCUSDT", "/api/v3/depth?symbol=NOPE", "/x")
    while not stop.is_set():
        for path in paths:
            async with http.get(server.base_url + path) as response:
                await response.read()
        await asyncio.sleep(0.1)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_prometheus_scrapes_a_live_node_and_every_dashboard_query_has_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require("prometheus")
    require("promtool")
    chromium = require("chromium")
    listen = f"127.0.0.1:{free_port()}"
    api = f"http://{listen}"
    exprs = sorted(dashboard_exprs())
    screenshot = tmp_path / "overview.png"

    async def scenario() -> None:
        server = await start(bourse_config(tmp_path / "bourse"))
        stop = asyncio.Event()
        try:
            async with aiohttp.ClientSession() as http:
                bearer = {"Authorization": f"Bearer {METRICS_TOKEN}"}
                async with http.get(server.base_url + "/metrics", headers=bearer) as response:
                    exposition = await response.text()
                if response.status == 404:
                    message = "the node has no GET /metrics (controlplane/metrics.py)"
                    if IN_CI:
                        pytest.fail(message)
                    pytest.skip(message)
                assert response.status == 200
                assert "bourse_engine_applied_seq" in exposition
                background = asyncio.create_task(traffic(http, server, stop))
                target = f"{server.http_host}:{server.http_port}"
                with prometheus(target, listen, tmp_path) as log:
                    await scrape_and_query(http, log)
                    await render_consoles(http, log)
                stop.set()
                await background
        finally:
            stop.set()
            await server.stop()

    async def scrape_and_query(http: aiohttp.ClientSession, log: Path) -> None:
        deadline = time.monotonic() + 30

        async def bourse_up() -> bool:
            async with http.get(f"{api}/api/v1/targets") as response:
                body = await response.json()
            targets = body["data"]["activeTargets"]
            return any(t["labels"]["job"] == "bourse" and t["health"] == "up" for t in targets)

        await poll(deadline, "Bourse never came up as a Prometheus target", bourse_up, log)

        async def query(expr: str) -> list[Any]:
            async with http.get(f"{api}/api/v1/query", params={"query": expr}) as response:
                body = await response.json()
            assert body["status"] == "success", (expr, body)
            result: list[Any] = body["data"]["result"]
            return result

        # Rates need two scrapes and recording rules an evaluation after them: poll.
        pending = set(exprs)
        while pending and time.monotonic() < deadline:
            for expr in sorted(pending):
                if await query(expr):
                    pending.discard(expr)
            if pending:
                await asyncio.sleep(0.5)
        assert not pending, f"dashboard queries without data: {sorted(pending)}"

    async def render_consoles(http: aiohttp.ClientSession, log: Path) -> None:
        for dashboard in queries()["dashboard"]:
            url = f"{api}/consoles/{dashboard['id']}.html"
            async with http.get(url) as response:
                page = await response.text()
            assert response.status == 200, page[:2000]
            for error in TEMPLATE_ERRORS:
                assert error not in page, (url, error)
            assert f"Bourse · {dashboard['title']}" in page
            assert not EMPTY_DRILLDOWN.search(page), f"a figure without data on {url}"
            assert "No data." not in page, url
        process = await asyncio.create_subprocess_exec(
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path / 'chromium'}",
            "--virtual-time-budget=5000",
            f"--screenshot={screenshot}",
            "--window-size=1400,1000",
            # The last minute (the console library's time range, in the URL hash).
            f"{api}/consoles/overview.html#pctc" + quote('{"duration":60,"endTime":0}'),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, stderr.decode()[-2000:]

    async def main() -> None:
        await asyncio.wait_for(scenario(), 90)

    uvloop.run(main())

    assert png_size(screenshot) == (1400, 1000)
    # A blank page compresses to a few kB; the console's tables, graphs and text do not.
    assert screenshot.stat().st_size > 30_000, screenshot.stat().st_size
    with capsys.disabled():
        print(f"\nscreenshot of the overview console: {screenshot}")
