"""``bourse bench api`` and ``bourse bench ws``: the HTTP API's speed, measured from outside.

Both start ``bourse serve`` as a **subprocess** (``python -m controlplane serve``) on a fresh
temporary data directory with free ports, so the load generator never shares the server's
event loop or GIL; the subprocess runs with the demo on (the demo listing, the demo user and
operator of ``demo-keys.json``, and the demo market maker quoting over the binary gateway),
in the temporary directory as its working directory (no ``./bourse.toml``) and with every
inherited ``BOURSE_*`` variable removed, then these set: the durability asked for, the
market maker's quote interval, and rate limits raised out of the way (REQUEST_WEIGHT and
ORDERS at 10^9: every client is 127.0.0.1, and Binance's defaults would cap the load at
100 requests/s). The server is stopped with SIGINT (drain, snapshot, close) afterwards.

``api`` (:func:`run_api`): creates ``clients`` users through the operator API (``POST
/admin/v1/users``, ``/users/{id}/api-keys`` read + trade, ``/deposits`` of USDT, with the
demo operator's token), then one aiohttp client per user (one keep-alive connection each)
repeats a pair: a signed ``POST /api/v3/order`` (LIMIT GTC BUY 0.001 BTCUSDT at 30,000.00,
half the demo mid, so it rests and never trades; ``newOrderRespType`` as asked, RESULT by
default) and a signed ``DELETE /api/v3/order`` of it, keeping the book and the accounts
steady. Closed loop by default (each client sends its next order when the cancel is
answered); with ``rate`` open loop: client ``i`` has orders scheduled at ``start + i / rate
+ k * clients / rate`` and an order's latency runs from its **scheduled** time (a client
that falls behind counts its lateness: no coordinated omission). The cancel follows its
order's answer on the same connection (unscheduled; its time is in the next order's lateness
if the schedule is tight). Latency is ``time.perf_counter_ns`` from send (or schedule) to
the whole response read. Requests sent during the first ``warmup`` seconds are not counted;
those sent in the next ``duration`` seconds are.

``ws`` (:func:`run_ws`): the market maker requotes every ``quote_interval_ms`` (the book
changes every depth tick), and a driver (the demo user's REST key) sends signed MARKET
orders of 0.0001 BTC, buy and sell in turn, at ``trade_rate`` per second, each trading
against the quotes. ``clients`` WebSocket clients (one aiohttp session, one connection
each) open the combined stream ``/stream?streams=btcusdt@trade/btcusdt@depth@100ms``; once
all are connected and ``warmup`` seconds have passed, every frame received in the next
``duration`` seconds is counted, with its **delivery lag** = receive time - the frame's
``E`` (both ``time.time_ns``, CLOCK_REALTIME, on this machine; ``E`` is whole
milliseconds, cut when the server built the frame, so a lag reads 0 to 1 ms high) and, for
trades, the end-to-end lag from the trade's engine time ``T``. ``gaps`` counts diff-depth
frames whose ``U`` is not the previous frame's ``u`` + 1 on that connection; ``disconnects``
counts connections that ended before the run did.

Percentiles are exact, from the sorted list of every recorded latency (nearest rank: the
``ceil(q * n)``-th smallest), not from an HdrHistogram (the ``hdrhistogram`` package is not a
dependency). Each command prints one JSON line; ``server_cpu`` and ``client_cpu`` are the
cores each process used on average over the measured window (``/proc``, Linux).

Cost: O(requests or frames) time and memory (one integer per latency sample), plus the
server's start (one argon2 hash per created user) and stop.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import msgspec
import uvloop

SYMBOL = "BTCUSDT"
STREAMS = ("btcusdt@trade", "btcusdt@depth@100ms")
RESTING_PRICE = "30000.00"
"""Half the demo market maker's mid (60,000.00): a buy there rests and never trades."""
RESTING_QUANTITY = "0.00100"
TAKER_QUANTITY = "0.00010"
"""A driver's market order: 6 USDT at the demo mid (minimum notional 5), a fraction of one
quote level (0.001 BTC and up), so each order is one trade."""
FUNDING_USDT = "10000000"
LIMIT_OFF = str(10**9)
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0
CONNECT_PARALLEL = 50
"""WebSocket handshakes in flight at once while the clients connect."""
PASSWORD = "bench-password-not-secret"
RESPONSE_TYPES = ("ACK", "RESULT", "FULL")


# --- the server subprocess -------------------------------------------------------------------


@dataclass
class ServerProcess:
    """A ``bourse serve`` subprocess and what the benchmarks need from it."""

    process: subprocess.Popen[str]
    base_url: str
    data_dir: Path
    log_path: Path

    def keys(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads((self.data_dir / "demo-keys.json").read_text())
        return loaded

    def cpu_seconds(self) -> float:
        """User + system CPU time the server has used so far (0 where /proc is missing)."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        # Fields 14 and 15 of stat (utime, stime); [0] here is field 3.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def start_server(root: Path, durability: str, quote_interval_ms: int) -> ServerProcess:
    """``bourse serve`` on ``root/data`` (see the module docstring); returns once it has
    printed its banner. Raises RuntimeError with the end of its log if it does not start."""
    data_dir = root / "data"
    log_path = root / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOURSE_")}
    env.update(
        PYTHONUNBUFFERED="1",
        BOURSE_NODE_DURABILITY=durability,
        BOURSE_DEMO_ENABLED="true",
        BOURSE_DEMO_QUOTE_INTERVAL_MS=str(quote_interval_ms),
        BOURSE_LIMITS_REQUEST_WEIGHT_PER_MINUTE=LIMIT_OFF,
        BOURSE_LIMITS_ORDERS_PER_10S=LIMIT_OFF,
        BOURSE_LIMITS_ORDERS_PER_DAY=LIMIT_OFF,
    )
    command = [sys.executable, "-m", "controlplane", "serve", "--data-dir", str(data_dir)]
    command += ["--http-port", "0", "--gateway-listen", "127.0.0.1:0"]
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=log, text=True
        )
    assert process.stdout is not None
    base_url = ""
    deadline = time.monotonic() + START_TIMEOUT_S
    for line in process.stdout:
        if found := re.search(r"REST API\s+(http://\S+?)/api/v3/", line):
            base_url = found.group(1)
        if line.startswith("Ctrl-C stops") or time.monotonic() > deadline:
            break
    server = ServerProcess(process, base_url, data_dir, log_path)
    if not base_url or process.poll() is not None:
        server.stop()
        raise RuntimeError(f"bourse serve did not start:\n{log_path.read_text()[-3000:]}")
    return server


# --- signed requests -------------------------------------------------------------------------


@dataclass(frozen=True)
class Trader:
    api_key: str
    secret: bytes


def signed(trader: Trader, params: Mapping[str, str]) -> str:
    """``params`` with ``timestamp`` and the HMAC-SHA256 ``signature`` (Binance's SIGNED)."""
    payload = urlencode({**params, "timestamp": str(time.time_ns() // 1_000_000)})
    signature = hmac.new(trader.secret, payload.encode(), hashlib.sha256).hexdigest()
    return f"{payload}&signature={signature}"


class _Reply(msgspec.Struct):
    order_id: int = msgspec.field(default=0, name="orderId")
    code: int = 0


_REPLY = msgspec.json.Decoder(_Reply)
_FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def _send(
    http: aiohttp.ClientSession, trader: Trader, method: str, url: str, params: Mapping[str, str]
) -> tuple[int, _Reply]:
    """One signed request (form body for POST, query string otherwise): status and reply."""
    headers = {"X-MBX-APIKEY": trader.api_key}
    if method == "POST":
        request = http.post(url, data=signed(trader, params), headers={**headers, **_FORM})
    else:
        request = http.request(method, f"{url}?{signed(trader, params)}", headers=headers)
    async with request as response:
        body = await response.read()
    try:
        return response.status, _REPLY.decode(body)
    except msgspec.DecodeError:
        return response.status, _Reply()


def _error_name(status: int, reply: _Reply) -> str:
    return str(reply.code) if reply.code else f"http_{status}"


async def _admin(
    http: aiohttp.ClientSession, base_url: str, token: str, path: str, body: Mapping[str, Any]
) -> Any:
    url = f"{base_url}/admin/v1{path}"
    async with http.post(url, json=body, headers={"Authorization": f"Bearer {token}"}) as r:
        answer = await r.json()
        if r.status not in (200, 201):
            raise RuntimeError(f"POST /admin/v1{path}: {r.status} {answer}")
        return answer


async def create_traders(
    http: aiohttp.ClientSession, server: ServerProcess, count: int
) -> list[Trader]:
    """``count`` users, each with a read + trade key and USDT, through the operator API."""
    token = server.keys()["demo_operator"]["token"]
    run_id = os.urandom(3).hex()

    async def one(i: int) -> Trader:
        user = await _admin(
            http,
            server.base_url,
            token,
            "/users",
            {"username": f"bench-{run_id}-{i}", "password": PASSWORD},
        )
        uid = user["userId"]
        key = await _admin(
            http,
            server.base_url,
            token,
            f"/users/{uid}/api-keys",
            {"permissions": ["read", "trade"], "label": "bench"},
        )
        deposit = {"user_id": uid, "asset": "USDT", "amount": FUNDING_USDT, "tx_id": f"b{uid}"}
        await _admin(http, server.base_url, token, "/deposits", deposit)
        return Trader(key["apiKey"], key["secretKey"].encode())

    return list(await asyncio.gather(*(one(i) for i in range(count))))


# --- figures ---------------------------------------------------------------------------------


def percentile(sorted_samples: list[int], q: float) -> int:
    """The exact nearest-rank ``q`` quantile (the ``ceil(q * n)``-th smallest); 0 if empty."""
    if not sorted_samples:
        return 0
    rank = max(1, math.ceil(q * len(sorted_samples)))
    return sorted_samples[min(rank, len(sorted_samples)) - 1]


def _summary_us(samples_ns: list[int], prefix: str = "") -> dict[str, float]:
    samples_ns.sort()
    out = {
        f"{prefix}{name}_us": round(percentile(samples_ns, q) / 1e3, 1)
        for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999))
    }
    out[f"{prefix}max_us"] = round(samples_ns[-1] / 1e3, 1) if samples_ns else 0.0
    return out


def _summary_ms(samples_us: list[int], prefix: str) -> dict[str, float]:
    samples_us.sort()
    out = {
        f"{prefix}_{name}_ms": round(percentile(samples_us, q) / 1e3, 2)
        for name, q in (("p50", 0.5), ("p99", 0.99), ("p999", 0.999))
    }
    out[f"{prefix}_max_ms"] = round(samples_us[-1] / 1e3, 2) if samples_us else 0.0
    return out


@dataclass
class _Window:
    """The measured window on ``time.perf_counter_ns``: [start, end)."""

    start_ns: int
    end_ns: int

    def holds(self, t_ns: int) -> bool:
        return self.start_ns <= t_ns < self.end_ns


# --- bench api -------------------------------------------------------------------------------


@dataclass
class _ApiResults:
    order_ns: list[int] = field(default_factory=list)
    cancel_ns: list[int] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)


async def _api_client(
    index: int,
    trader: Trader,
    base_url: str,
    window: _Window,
    clients: int,
    rate: float | None,
    response_type: str,
    results: _ApiResults,
) -> None:
    url = f"{base_url}/api/v3/order"
    order = {
        "symbol": SYMBOL,
        "side": "BUY",
        "type": "LIMIT",
        "timeInForce": "GTC",
        "quantity": RESTING_QUANTITY,
        "price": RESTING_PRICE,
        "newOrderRespType": response_type,
    }
    begin_ns = time.perf_counter_ns()
    interval_ns = round(clients * 1e9 / rate) if rate else 0
    next_ns = begin_ns + (round(index * 1e9 / rate) if rate else 0)
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as http:
        while True:
            if rate:
                now = time.perf_counter_ns()
                if next_ns >= window.end_ns:
                    return
                if next_ns > now:
                    await asyncio.sleep((next_ns - now) / 1e9)
                scheduled = next_ns
                next_ns += interval_ns
            else:
                scheduled = time.perf_counter_ns()
                if scheduled >= window.end_ns:
                    return
            counted = window.holds(scheduled)
            try:
                status, reply = await _send(http, trader, "POST", url, order)
            except (aiohttp.ClientError, OSError) as err:
                results.errors[type(err).__name__] += counted
                continue
            if counted:
                results.order_ns.append(time.perf_counter_ns() - scheduled)
            if status != 200:
                results.errors[_error_name(status, reply)] += counted
                continue
            cancel = {"symbol": SYMBOL, "orderId": str(reply.order_id)}
            sent = time.perf_counter_ns()
            try:
                status, reply = await _send(http, trader, "DELETE", url, cancel)
            except (aiohttp.ClientError, OSError) as err:
                results.errors[type(err).__name__] += counted
                continue
            if counted:
                results.cancel_ns.append(time.perf_counter_ns() - sent)
                if status != 200:
                    results.errors[_error_name(status, reply)] += 1


async def _api_load(
    server: ServerProcess,
    clients: int,
    duration: float,
    rate: float | None,
    response_type: str,
    warmup: float,
) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        traders = await create_traders(http, server, clients)
    results = _ApiResults()
    now = time.perf_counter_ns()
    start_ns = now + round(warmup * 1e9)
    window = _Window(start_ns, start_ns + round(duration * 1e9))
    cpu = _CpuMeter(server)
    measuring = asyncio.create_task(cpu.measure(window))
    await asyncio.gather(
        *(
            _api_client(i, t, server.base_url, window, clients, rate, response_type, results)
            for i, t in enumerate(traders)
        )
    )
    await measuring
    orders = len(results.order_ns)
    cancels = len(results.cancel_ns)
    return {
        "orders": orders,
        "orders_per_s": round(orders / duration, 1),
        "cancels": cancels,
        "requests_per_s": round((orders + cancels) / duration, 1),
        **_summary_us(results.order_ns),
        **{k: v for k, v in _summary_us(results.cancel_ns, "cancel_").items() if "p9" not in k},
        "errors": dict(sorted(results.errors.items())),
        "server_cpu": cpu.server_cores,
        "client_cpu": cpu.client_cores,
    }


class _CpuMeter:
    """Cores used by the server subprocess and by this process over the measured window."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.server_cores = 0.0
        self.client_cores = 0.0

    async def measure(self, window: _Window) -> None:
        await asyncio.sleep(max(0.0, (window.start_ns - time.perf_counter_ns()) / 1e9))
        server0, client0, wall0 = self.server.cpu_seconds(), time.process_time(), time.monotonic()
        await asyncio.sleep(max(0.0, (window.end_ns - time.perf_counter_ns()) / 1e9))
        wall = max(time.monotonic() - wall0, 1e-9)
        self.server_cores = round((self.server.cpu_seconds() - server0) / wall, 2)
        self.client_cores = round((time.process_time() - client0) / wall, 2)


def run_api(
    clients: int,
    duration: float,
    rate: float | None = None,
    durability: str = "fsync",
    response_type: str = "RESULT",
    warmup: float = 1.0,
) -> dict[str, Any]:
    """``bourse bench api`` (see the module docstring): the report."""
    if response_type not in RESPONSE_TYPES:
        raise ValueError(f"newOrderRespType must be one of {RESPONSE_TYPES}")
    with tempfile.TemporaryDirectory(prefix="bourse-bench-api-") as root:
        server = start_server(Path(root), durability, quote_interval_ms=500)
        try:
            figures = uvloop.run(_api_load(server, clients, duration, rate, response_type, warmup))
        finally:
            server.stop()
    return {
        "bench": "api",
        "clients": clients,
        "duration": duration,
        "mode": "closed" if rate is None else "open",
        "rate": rate,
        "durability": durability,
        "newOrderRespType": response_type,
        **figures,
    }


# --- bench ws --------------------------------------------------------------------------------


class _Payload(msgspec.Struct):
    event_ms: int = msgspec.field(default=0, name="E")
    trade_ms: int = msgspec.field(default=0, name="T")
    first_update: int = msgspec.field(default=-1, name="U")
    last_update: int = msgspec.field(default=-1, name="u")


class _Frame(msgspec.Struct):
    stream: str
    data: _Payload


_FRAME = msgspec.json.Decoder(_Frame)


@dataclass
class _WsResults:
    lag_us: list[int] = field(default_factory=list)
    trade_lag_us: list[int] = field(default_factory=list)
    per_client: list[int] = field(default_factory=list)
    gaps: int = 0
    disconnects: int = 0
    trades: int = 0
    depth_frames: int = 0


async def _ws_client(
    index: int,
    ws: aiohttp.ClientWebSocketResponse,
    window: _Window,
    stopping: asyncio.Event,
    results: _WsResults,
) -> None:
    previous_u = -1
    count = 0
    async for msg in ws:
        received_ns = time.time_ns()
        if msg.type != aiohttp.WSMsgType.TEXT:
            continue
        frame = _FRAME.decode(msg.data)
        data = frame.data
        if data.first_update >= 0:
            if previous_u >= 0 and data.first_update != previous_u + 1:
                results.gaps += 1
            previous_u = data.last_update
        if not window.holds(time.perf_counter_ns()):
            continue
        count += 1
        results.lag_us.append(max(0, received_ns // 1000 - data.event_ms * 1000))
        if data.first_update >= 0:
            results.depth_frames += 1
        else:
            results.trades += 1
            results.trade_lag_us.append(max(0, received_ns // 1000 - data.trade_ms * 1000))
    results.per_client[index] = count
    if not stopping.is_set():
        results.disconnects += 1


async def _driver(
    http: aiohttp.ClientSession,
    trader: Trader,
    base_url: str,
    trade_rate: float,
    stopping: asyncio.Event,
    errors: Counter[str],
) -> None:
    """Market orders at ``trade_rate``/s, buy and sell in turn, until ``stopping``; each is
    sent on schedule without waiting for the ones before it (so a slow answer does not lower
    the rate)."""
    url = f"{base_url}/api/v3/order"
    interval = 1.0 / trade_rate
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    in_flight: set[asyncio.Task[None]] = set()

    async def market_order(side: str) -> None:
        order = {
            "symbol": SYMBOL,
            "side": side,
            "type": "MARKET",
            "quantity": TAKER_QUANTITY,
            "newOrderRespType": "ACK",
        }
        try:
            status, reply = await _send(http, trader, "POST", url, order)
            if status != 200:
                errors[_error_name(status, reply)] += 1
        except (aiohttp.ClientError, OSError) as err:
            errors[type(err).__name__] += 1

    sent = 0
    while not stopping.is_set():
        task = asyncio.create_task(market_order(("BUY", "SELL")[sent % 2]))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
        sent += 1
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - loop.time()))
    if in_flight:
        await asyncio.gather(*in_flight)


async def _ws_load(
    server: ServerProcess, clients: int, duration: float, trade_rate: float, warmup: float
) -> dict[str, Any]:
    login = server.keys()["demo_login"]
    demo = Trader(login["api_key"], login["secret"].encode())
    url = f"{server.base_url}/stream?streams={'/'.join(STREAMS)}"
    results = _WsResults(per_client=[0] * clients)
    stopping = asyncio.Event()
    driver_errors: Counter[str] = Counter()
    connector = aiohttp.TCPConnector(limit=0)
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        aiohttp.ClientSession() as driver_http,
    ):
        gate = asyncio.Semaphore(CONNECT_PARALLEL)

        async def connect() -> aiohttp.ClientWebSocketResponse:
            async with gate:
                return await http.ws_connect(url, max_msg_size=0)

        sockets = await asyncio.gather(*(connect() for _ in range(clients)))
        start_ns = time.perf_counter_ns() + round(warmup * 1e9)
        window = _Window(start_ns, start_ns + round(duration * 1e9))
        readers = [
            asyncio.create_task(_ws_client(i, ws, window, stopping, results))
            for i, ws in enumerate(sockets)
        ]
        driver = asyncio.create_task(
            _driver(driver_http, demo, server.base_url, trade_rate, stopping, driver_errors)
        )
        cpu = _CpuMeter(server)
        await cpu.measure(window)
        stopping.set()
        await driver
        await asyncio.gather(*(ws.close() for ws in sockets))
        await asyncio.gather(*readers)
    messages = sum(results.per_client)
    per_client = sorted(results.per_client)
    return {
        "messages": messages,
        "messages_per_s": round(messages / duration, 1),
        "per_client_messages_per_s": round(messages / duration / clients, 2),
        "min_client_messages_per_s": round(per_client[0] / duration, 2),
        "trades": results.trades,
        "depth_frames": results.depth_frames,
        **_summary_ms(results.lag_us, "lag"),
        **_summary_ms(results.trade_lag_us, "trade_lag"),
        "gaps": results.gaps,
        "disconnects": results.disconnects,
        "driver_errors": dict(sorted(driver_errors.items())),
        "server_cpu": cpu.server_cores,
        "client_cpu": cpu.client_cores,
    }


def run_ws(
    clients: int,
    duration: float,
    trade_rate: float = 20.0,
    quote_interval_ms: int = 50,
    durability: str = "write",
    warmup: float = 1.0,
) -> dict[str, Any]:
    """``bourse bench ws`` (see the module docstring): the report."""
    with tempfile.TemporaryDirectory(prefix="bourse-bench-ws-") as root:
        server = start_server(Path(root), durability, quote_interval_ms)
        try:
            figures = uvloop.run(_ws_load(server, clients, duration, trade_rate, warmup))
        finally:
            server.stop()
    return {
        "bench": "ws",
        "clients": clients,
        "duration": duration,
        "streams": list(STREAMS),
        "trade_rate": trade_rate,
        "quote_interval_ms": quote_interval_ms,
        "durability": durability,
        **figures,
    }


__all__ = ["percentile", "run_api", "run_ws", "start_server"]
