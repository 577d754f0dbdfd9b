"""``bourse serve``: the node, its binary gateway and the HTTP API in one process, on uvloop.

Start order: the node recovers from ``server.data_dir``; the control plane's database
(``controlplane.sqlite3`` there) opens; with the demo on, a fresh directory gets the demo
listing and accounts (:mod:`controlplane.demo`); the binary gateway starts and the keys are
registered; the API modules set up (with the demo: the demo user ``demo`` and its REST API
key are ensured, and the demo operator ``demo-operator`` whose token is in
``demo-keys.json``), every live trade API key is registered with the gateway, and the event
feed starts and catches up with the node
(so projections are current before the first request); the HTTP server starts; the demo
market maker quotes. :func:`serve` runs until SIGINT/SIGTERM, then stops in reverse: the
market maker, the HTTP server, the feed, the node (gateway first, then drain and final
snapshot), the database.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import uvloop
from aiohttp import web

from controlplane import Node
from controlplane.api import Exchange, make_app
from controlplane.api.admin import OPERATORS
from controlplane.api.auth import ACCOUNTS
from controlplane.bridge import EngineBridge, EventFeed
from controlplane.config import ServerConfig, parse_listen
from controlplane.db import Database
from controlplane.demo import (
    KEYS_FILE,
    QUOTING,
    DemoKey,
    DemoLogin,
    DemoMarketMaker,
    DemoOperator,
    demo_listed,
    ensure_demo_listing,
    ensure_demo_operator,
    ensure_demo_user,
    load_or_create_demo_login,
    load_or_create_demo_operator,
    load_or_create_keys,
)
from controlplane.listing import Listing

log = logging.getLogger("bourse.serve")

TASK_STOP_SECONDS = 10.0
"""How long stop waits for the background tasks (the demo market maker) to end."""
CATCH_UP_SECONDS = 600.0
"""How long start waits for the projections to catch up with the node's log."""


@dataclass
class Server:
    """A running ``bourse serve``: stop it with :meth:`stop`."""

    config: ServerConfig
    exchange: Exchange
    http_host: str
    http_port: int
    gateway_host: str
    gateway_port: int
    keys: dict[str, DemoKey]
    keys_created: bool
    listed_now: bool
    runner: web.AppRunner
    demo_login: DemoLogin | None = None
    demo_login_created: bool = False
    demo_login_key_id: int = 0
    demo_operator: DemoOperator | None = None
    demo_operator_created: bool = False
    market_maker: DemoMarketMaker | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    stopped: bool = False

    @property
    def node(self) -> Node:
        return self.exchange.node

    @property
    def base_url(self) -> str:
        return f"http://{self.http_host}:{self.http_port}"

    def banner(self) -> list[str]:
        lines = [
            f"Bourse is running (data directory {self.config.server.data_dir})",
            f"  REST API        {self.base_url}/api/v3/  "
            "(Binance Spot v3: market data, signed orders, account; try depth?symbol=BTCUSDT)",
            f"  WebSocket       ws://{self.http_host}:{self.http_port}/ws/btcusdt@trade  "
            "(/ws/<stream>, /stream?streams=<a>/<b>)",
            f"  binary gateway  {self.gateway_host}:{self.gateway_port}  (docs/protocol.md)",
            f"  operator API    {self.base_url}/admin/v1/  (bourse admin --url {self.base_url} "
            "health; Authorization: Bearer <operator token>)",
        ]
        if self.keys:
            keys_path = Path(self.config.server.data_dir) / KEYS_FILE
            lines.append(f"  demo API keys   {keys_path} (mode 0600)")
            for key in self.keys.values():
                lines.append(f"    {key.name:<13} account {key.account}  key id {key.key_id}")
            if self.keys_created:
                # Shown once, at first start; never logged again.
                user = self.keys["demo_user"]
                lines.append(f"    demo_user secret (shown once): {user.secret.hex()}")
        if self.demo_login is not None:
            login = self.demo_login
            lines.append(
                f"  demo user       {login.username!r} (account {login.account}): REST API key "
                f"id {self.demo_login_key_id}, read + trade, also a gateway key"
            )
            if self.demo_login_created:
                # Shown once, at first start; never logged again (also in demo-keys.json).
                lines.append(f"    password (shown once):   {login.password}")
                lines.append(f"    X-MBX-APIKEY:            {login.api_key}")
                lines.append(f"    secret (shown once):     {login.secret}")
        if self.demo_operator is not None:
            lines.append(
                f"  demo operator   {self.demo_operator.name!r} (admin; token in demo-keys.json, "
                "read by `bourse admin --data-dir`)"
            )
            if self.demo_operator_created:
                # Shown once, at first start; never logged again (also in demo-keys.json).
                lines.append(f"    token (shown once):      {self.demo_operator.token}")
        if self.market_maker is not None:
            symbols = ", ".join(self.exchange.listing.by_symbol)
            lines.append(f"  demo market maker quoting {symbols}")
        lines.append("Ctrl-C stops (drain, snapshot, close); restarting keeps everything.")
        return lines

    async def stop(self) -> None:
        """Stop the market maker, the HTTP server, the feed, the node (gateway first, final
        snapshot) and the database. Idempotent."""
        if self.stopped:
            return
        self.stopped = True
        if self.market_maker is not None:
            self.market_maker.stop()
        for task in self.tasks:
            task.cancel()
        if self.tasks:
            _, stuck = await asyncio.wait(self.tasks, timeout=TASK_STOP_SECONDS)
            for task in stuck:
                log.error("%s did not stop within %.0f s", task.get_name(), TASK_STOP_SECONDS)
        self.tasks.clear()
        await self.runner.cleanup()
        await _close(self.exchange)


async def _close(exchange: Exchange) -> None:
    await exchange.feed.stop()
    await asyncio.to_thread(exchange.bridge.close)
    await asyncio.to_thread(exchange.node.stop)
    exchange.db.close()


def _log_task_end(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("demo market maker stopped: %r", task.exception())


async def start(config: ServerConfig) -> Server:
    """Start everything (see the module docstring); ports 0 are bound to free ones."""
    data_dir = Path(config.server.data_dir)
    gw_host, gw_port = parse_listen(config.gateway.listen)
    node = await asyncio.to_thread(Node, config.node_config())
    db: Database | None = None
    try:
        db = Database.in_data_dir(data_dir)
        listing = Listing(db)
        listed_now = False
        if config.demo.enabled:
            listed_now = await asyncio.to_thread(ensure_demo_listing, node, listing)
        keys: dict[str, DemoKey] = {}
        keys_created = False
        if demo_listed(node):
            keys, keys_created = load_or_create_keys(data_dir)
        listing.check_against(node)
        address = node.start_gateway({"listen": f"{gw_host}:{gw_port}"})
        for key in keys.values():
            node.add_api_key(key.key_id, key.secret, key.account)
        exchange = Exchange(
            config=config,
            node=node,
            db=db,
            listing=listing,
            bridge=EngineBridge(node),
            feed=EventFeed(node),
        )
        app = make_app(exchange)
        accounts = app[ACCOUNTS]
        demo_login: DemoLogin | None = None
        demo_login_created = False
        demo_login_key_id = 0
        demo_operator: DemoOperator | None = None
        demo_operator_created = False
        if keys:
            demo_login, demo_login_created = load_or_create_demo_login(data_dir)
            demo_login_key_id = await ensure_demo_user(accounts, demo_login)
            demo_operator, demo_operator_created = load_or_create_demo_operator(data_dir)
            ensure_demo_operator(app[OPERATORS], demo_operator)  # one argon2 hash, at start
        # Every live trade key of every user also opens the binary gateway.
        accounts.register_gateway_keys()
        exchange.feed.start()
        await exchange.feed.wait_for(node.stats()["applied_seq"], CATCH_UP_SECONDS)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, config.http.host, config.http.port)
        await site.start()
        http_host, http_port = runner.addresses[0][:2]
    except BaseException:
        await asyncio.to_thread(node.stop)
        if db is not None:
            db.close()
        raise
    server = Server(
        config=config,
        exchange=exchange,
        http_host=http_host,
        http_port=http_port,
        gateway_host=address["host"],
        gateway_port=address["port"],
        keys=keys,
        keys_created=keys_created,
        listed_now=listed_now,
        runner=runner,
        demo_login=demo_login,
        demo_login_created=demo_login_created,
        demo_login_key_id=demo_login_key_id,
        demo_operator=demo_operator,
        demo_operator_created=demo_operator_created,
    )
    if config.demo.enabled and keys:
        mm = DemoMarketMaker(
            server.gateway_host,
            server.gateway_port,
            keys["market_maker"],
            keys["demo_taker"],
            # The demo's own markets: operators may have listed others, with no quoting plan.
            tuple(m for m in listing.markets.values() if m.id in QUOTING),
            interval=config.demo.quote_interval_ms / 1000,
        )
        server.market_maker = mm
        task = asyncio.create_task(mm.run(), name="demo-market-maker")
        task.add_done_callback(_log_task_end)
        server.tasks.append(task)
    return server


async def _serve(config: ServerConfig, emit: Callable[[str], None]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        server = await start(config)
        try:
            for line in server.banner():
                emit(line)
            await stop.wait()
            emit("stopping: market maker, HTTP server, gateway, node (final snapshot) …")
        finally:
            await server.stop()
        emit("stopped")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def serve(config: ServerConfig, emit: Callable[[str], None] = print) -> None:
    """Run ``bourse serve`` on uvloop until SIGINT/SIGTERM."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    uvloop.run(_serve(config, emit))
