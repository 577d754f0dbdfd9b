"""``bourse serve``: the node, its binary gateway and the HTTP API in one process, on uvloop.

On start: the node recovers from ``server.data_dir``; with the demo on, a fresh directory
gets the demo listing (:data:`ASSETS`, :data:`MARKETS`) and the demo accounts, funded, and
``<data_dir>/demo-keys.json`` (mode 0600) gets their gateway API keys; the binary gateway
starts, the keys are registered, the HTTP app starts, and the demo market maker quotes both
markets over the binary gateway. :func:`serve` runs until SIGINT/SIGTERM, then stops the
market maker, the HTTP server and the node (gateway first, then drain and final snapshot).

Units of the demo listing: every asset has 8 decimals (atoms = 1e-8); both markets quote in
USDT with 2 price decimals and tick 1 (0.01 USDT); lots are 0.00001 BTC and 0.0001 ETH;
the minimum notional is 5 USDT.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import secrets
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import uvloop
from aiohttp import web

from controlplane import Command, Node
from controlplane.config import ServerConfig, parse_listen
from controlplane.gateway.client import GatewayError, GatewaySession, connect
from controlplane.gateway.codec import OrderRejected, OrderType, Side, TimeInForce

log = logging.getLogger("bourse.serve")


@dataclass(frozen=True)
class Asset:
    id: int
    name: str
    decimals: int


@dataclass(frozen=True)
class Market:
    id: int
    symbol: str
    base: Asset
    quote: Asset
    price_decimals: int
    tick_size: int
    lot_size: int
    min_notional: int
    """Quote atoms."""
    mid: int
    """The demo market maker's starting mid price (price units)."""
    spacing: int
    """Distance between the demo market maker's levels (price units)."""
    quantity_lots: int
    """The demo market maker's size per level (lots)."""


BTC = Asset(1, "BTC", 8)
ETH = Asset(2, "ETH", 8)
USDT = Asset(3, "USDT", 8)
ASSETS = (BTC, ETH, USDT)
FIVE_USDT = 5 * 10**8
MARKETS = (
    Market(1, "BTCUSDT", BTC, USDT, 2, 1, 1_000, FIVE_USDT, 6_000_000, 500, 100),
    Market(2, "ETHUSDT", ETH, USDT, 2, 1, 10_000, FIVE_USDT, 300_000, 50, 100),
)
BY_SYMBOL = {m.symbol: m for m in MARKETS}

# Demo accounts (account 0 is the engine's fee account) and their gateway API key ids.
MARKET_MAKER, DEMO_USER, DEMO_TAKER = 1, 2, 3
DEMO_ACCOUNTS = {"market_maker": MARKET_MAKER, "demo_user": DEMO_USER, "demo_taker": DEMO_TAKER}
SETUP_DONE = 99
"""An account without funds or keys, created last by the demo setup: its mark."""
COIN = 10**8
DEPOSITS: dict[int, dict[Asset, int]] = {
    MARKET_MAKER: {BTC: 1_000 * COIN, ETH: 10_000 * COIN, USDT: 100_000_000 * COIN},
    DEMO_USER: {BTC: 1 * COIN, ETH: 10 * COIN, USDT: 100_000 * COIN},
    DEMO_TAKER: {BTC: 100 * COIN, ETH: 1_000 * COIN, USDT: 10_000_000 * COIN},
}
KEYS_FILE = "demo-keys.json"


def listing_commands() -> list[Command]:
    """The demo listing and accounts (without deposits)."""
    commands: list[Command] = [
        {"type": "list_asset", "asset": a.id, "decimals": a.decimals} for a in ASSETS
    ]
    for m in MARKETS:
        commands.append(
            {
                "type": "list_market",
                "market": m.id,
                "base": m.base.id,
                "quote": m.quote.id,
                "price_decimals": m.price_decimals,
                "tick_size": m.tick_size,
                "lot_size": m.lot_size,
                "min_notional": m.min_notional,
            }
        )
    for account in DEMO_ACCOUNTS.values():
        commands.append({"type": "create_account", "account": account, "fee_tier": 0})
    return commands


def demo_listed(node: Node) -> bool:
    """Whether the demo setup finished: its last command created :data:`SETUP_DONE`.

    (The node has no market or account query yet: a ``balance`` is ``(0, 0)`` once the
    account and the asset exist and None before, so an account created last marks the end.)"""
    return node.balance(SETUP_DONE, USDT.id) is not None


def check_listing(node: Node, markets: dict[str, Market]) -> None:
    """The engine is the authority on market specifications: refuse to serve a symbol
    whose market in the engine differs from what the HTTP API would publish for it."""
    engine = {m["market"]: m for m in node.markets()}
    for symbol, m in markets.items():
        view = engine.get(m.id)
        spec = (m.base.id, m.quote.id, m.price_decimals, m.tick_size, m.lot_size, m.min_notional)
        if view is None:
            raise RuntimeError(f"{symbol}: market {m.id} is not listed in the engine")
        listed = (
            view["base"],
            view["quote"],
            view["price_decimals"],
            view["tick_size"],
            view["lot_size"],
            view["min_notional"],
        )
        if listed != spec:
            raise RuntimeError(
                f"{symbol}: the engine's market {m.id} is {listed}, the listing says {spec}"
            )


def ensure_demo_listing(node: Node) -> bool:
    """List the demo set and fund the demo accounts unless done; whether anything was done.

    Safe to rerun after a crash half-way: listings and accounts that exist are refused by
    the engine as ``*_exists`` (fine), and a deposit is made only if the account holds none
    of that asset (nobody trades before the setup is marked done)."""
    if demo_listed(node):
        return False
    allowed = {"asset_exists", "market_exists", "account_exists"}
    commands = listing_commands()
    for command, ack in zip(commands, node.submit_many(commands), strict=True):
        for event in ack["events"]:
            if event["type"] == "rejected" and event["reason"] not in allowed:
                raise RuntimeError(f"demo listing: {command} rejected: {event['reason']}")
    for account, deposits in DEPOSITS.items():
        for asset, amount in deposits.items():
            if sum(node.balance(account, asset.id) or (0, 0)) == 0:
                node.submit(
                    {"type": "deposit", "account": account, "asset": asset.id, "amount": amount}
                )
    node.submit({"type": "create_account", "account": SETUP_DONE, "fee_tier": 0})
    return True


# --- demo keys ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoKey:
    name: str
    account: int
    key_id: int
    secret: bytes


def load_or_create_keys(data_dir: Path) -> tuple[dict[str, DemoKey], bool]:
    """The demo API keys from ``<data_dir>/demo-keys.json``, created (mode 0600, random
    32-byte secrets) if missing; and whether they were created now."""
    path = data_dir / KEYS_FILE
    if path.exists():
        raw = json.loads(path.read_text())
        keys = {
            name: DemoKey(name, int(k["account"]), int(k["key_id"]), bytes.fromhex(k["secret"]))
            for name, k in raw.items()
        }
        return keys, False
    keys = {
        name: DemoKey(name, account, account, secrets.token_bytes(32))
        for name, account in DEMO_ACCOUNTS.items()
    }
    data = {
        k.name: {"account": k.account, "key_id": k.key_id, "secret": k.secret.hex()}
        for k in keys.values()
    }
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return keys, True


# --- formatting -----------------------------------------------------------------------------


def fmt(atoms: int, decimals: int, places: int = 8) -> str:
    """``atoms / 10**decimals`` with ``places`` decimals, as Binance writes numbers."""
    return f"{Decimal(atoms).scaleb(-decimals):.{places}f}"


def price_str(m: Market, price: int) -> str:
    return fmt(price, m.price_decimals, m.quote.decimals)


def qty_str(m: Market, quantity: int) -> str:
    return fmt(quantity, m.base.decimals, m.base.decimals)


U64_MAX = 2**64 - 1


def symbol_info(m: Market) -> dict[str, Any]:
    max_qty = U64_MAX // m.lot_size * m.lot_size
    return {
        "symbol": m.symbol,
        "status": "TRADING",
        "baseAsset": m.base.name,
        "baseAssetPrecision": m.base.decimals,
        "quoteAsset": m.quote.name,
        "quotePrecision": m.quote.decimals,
        "quoteAssetPrecision": m.quote.decimals,
        "orderTypes": ["LIMIT", "MARKET"],
        "icebergAllowed": False,
        "ocoAllowed": False,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": price_str(m, m.tick_size),
                "maxPrice": "0.00000000",  # 0: no maximum (Binance's convention)
                "tickSize": price_str(m, m.tick_size),
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": qty_str(m, m.lot_size),
                "maxQty": qty_str(m, max_qty),
                "stepSize": qty_str(m, m.lot_size),
            },
            {
                "filterType": "NOTIONAL",
                "minNotional": fmt(m.min_notional, m.quote.decimals),
                "applyMinToMarket": True,
                "maxNotional": fmt(U64_MAX, m.quote.decimals),
                "applyMaxToMarket": False,
                "avgPriceMins": 0,
            },
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "NONE",
        "allowedSelfTradePreventionModes": ["NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


# --- HTTP -----------------------------------------------------------------------------------


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def binance_error(code: int, msg: str, status: int = 400) -> web.Response:
    return web.json_response({"code": code, "msg": msg}, status=status)


def _mandatory(name: str) -> web.Response:
    return binance_error(
        -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
    )


DEPTH_DEFAULT, DEPTH_MAX = 100, 5000

NODE_KEY = web.AppKey("node", Node)
MARKETS_KEY = web.AppKey("markets", dict[str, Market])


async def ping(request: web.Request) -> web.Response:
    return web.json_response({})


async def server_time(request: web.Request) -> web.Response:
    return web.json_response({"serverTime": now_ms()})


async def exchange_info(request: web.Request) -> web.Response:
    markets = request.app[MARKETS_KEY]
    chosen = list(markets.values())
    if "symbol" in request.query:
        market = markets.get(request.query["symbol"])
        if market is None:
            return binance_error(-1121, "Invalid symbol.")
        chosen = [market]
    return web.json_response(
        {
            "timezone": "UTC",
            "serverTime": now_ms(),
            "rateLimits": [],
            "exchangeFilters": [],
            "symbols": [symbol_info(m) for m in chosen],
        }
    )


async def depth(request: web.Request) -> web.Response:
    symbol = request.query.get("symbol", "")
    if not symbol:
        return _mandatory("symbol")
    market = request.app[MARKETS_KEY].get(symbol)
    if market is None:
        return binance_error(-1121, "Invalid symbol.")
    limit_text = request.query.get("limit", str(DEPTH_DEFAULT))
    if not limit_text.isdigit() or len(limit_text) > 20:
        return binance_error(
            -1100, "Illegal characters found in parameter 'limit'; legal range is '^[0-9]{1,20}$'."
        )
    limit = int(limit_text)
    if not 1 <= limit <= DEPTH_MAX:
        return binance_error(
            -1100, f"Illegal characters found in parameter 'limit'; legal range is '1-{DEPTH_MAX}'."
        )
    node = request.app[NODE_KEY]
    # The applied sequence number read before the book: every change up to it is in the book.
    last_update_id = node.stats()["applied_seq"]
    bids = node.depth(market.id, "buy", limit)
    asks = node.depth(market.id, "sell", limit)
    return web.json_response(
        {
            "lastUpdateId": last_update_id,
            "bids": [[price_str(market, p), qty_str(market, q)] for p, q, _ in bids],
            "asks": [[price_str(market, p), qty_str(market, q)] for p, q, _ in asks],
        }
    )


def make_app(node: Node, markets: dict[str, Market]) -> web.Application:
    app = web.Application()
    app[NODE_KEY] = node
    app[MARKETS_KEY] = markets
    app.router.add_get("/api/v3/ping", ping)
    app.router.add_get("/api/v3/time", server_time)
    app.router.add_get("/api/v3/exchangeInfo", exchange_info)
    app.router.add_get("/api/v3/depth", depth)
    return app


# --- demo market maker ----------------------------------------------------------------------


class DemoMarketMaker:
    """Keeps ``levels`` quotes on each side of every market around a slowly moving mid
    (market maker account), and every few rounds crosses the spread with a small IOC order
    (taker account) so trades happen. Talks to the real binary gateway."""

    def __init__(
        self,
        host: str,
        port: int,
        maker: DemoKey,
        taker: DemoKey,
        markets: tuple[Market, ...] = MARKETS,
        *,
        interval: float = 0.5,
        levels: int = 5,
        cross_every: int = 4,
        seed: int | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.maker, self.taker = maker, taker
        self.markets = markets
        self.interval = interval
        self.levels = levels
        self.cross_every = cross_every
        self.rng = random.Random(seed)
        self.mids = {m.id: m.mid for m in markets}
        self.rounds = 0
        self.crosses = 0
        self.quotes: dict[int, list[int]] = {}

    async def _session(self, key: DemoKey) -> GatewaySession:
        return await connect(
            self.host, self.port, key_id=key.key_id, secret=key.secret, cancel_on_disconnect=True
        )

    async def run(self) -> None:
        maker = await self._session(self.maker)
        taker = await self._session(self.taker)
        try:
            await maker.mass_cancel().wait()  # quotes left over from an earlier run
            while True:
                for m in self.markets:
                    await self._requote(maker, m)
                if self.rounds % self.cross_every == self.cross_every - 1:
                    for m in self.markets:
                        await self._cross(taker, m)
                self.rounds += 1
                await asyncio.sleep(self.interval)
        finally:
            with contextlib.suppress(GatewayError, OSError, TimeoutError):
                await asyncio.wait_for(maker.mass_cancel().wait(), 2)
            for session in (maker, taker):
                with contextlib.suppress(GatewayError, OSError, TimeoutError):
                    await asyncio.wait_for(session.logout(), 2)
                await session.close()

    async def _requote(self, maker: GatewaySession, m: Market) -> None:
        """Place the new quotes, then cancel the old ones: the book is never empty. (The mid
        moves by a fifth of the spacing at most, so new quotes never cross old ones.)"""
        mid = self.mids[m.id] + self.rng.choice((-1, 0, 1)) * m.spacing // 5
        low, high = m.mid * 9 // 10, m.mid * 11 // 10
        mid = min(max(mid, low), high) // m.tick_size * m.tick_size
        self.mids[m.id] = mid
        tickets = []
        for i in range(1, self.levels + 1):
            size = m.quantity_lots * m.lot_size * i
            tickets.append(maker.new_order(m.id, Side.BUY, size, mid - i * m.spacing))
            tickets.append(maker.new_order(m.id, Side.SELL, size, mid + i * m.spacing))
        old = self.quotes.get(m.id, [])
        self.quotes[m.id] = []
        for ticket in tickets:
            reply = await ticket.wait()
            if isinstance(reply, OrderRejected):
                log.warning("demo market maker: quote rejected: %s", reply.reason)
            else:
                self.quotes[m.id].append(reply.order_id)
        # Cancels of orders already filled are refused (order_not_found): fine.
        for cancel in [maker.cancel(order_id) for order_id in old]:
            await cancel.wait()

    async def _cross(self, taker: GatewaySession, m: Market) -> None:
        mid = self.mids[m.id]
        side = self.rng.choice((Side.BUY, Side.SELL))
        price = mid + m.spacing if side == Side.BUY else mid - m.spacing
        quantity = m.lot_size * self.rng.randint(1, m.quantity_lots)
        reply = await taker.new_order(
            m.id,
            side,
            quantity,
            price,
            order_type=OrderType.LIMIT,
            time_in_force=TimeInForce.IOC,
        ).wait()
        if not isinstance(reply, OrderRejected):
            self.crosses += 1


# --- the server -----------------------------------------------------------------------------


@dataclass
class Server:
    """A running ``bourse serve``: stop it with :meth:`stop`."""

    config: ServerConfig
    node: Node
    http_host: str
    http_port: int
    gateway_host: str
    gateway_port: int
    keys: dict[str, DemoKey]
    keys_created: bool
    listed_now: bool
    runner: web.AppRunner
    market_maker: DemoMarketMaker | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://{self.http_host}:{self.http_port}"

    def banner(self) -> list[str]:
        lines = [
            f"Bourse is running (data directory {self.config.server.data_dir})",
            f"  REST API        {self.base_url}/api/v3/  "
            "(ping, time, exchangeInfo, depth?symbol=BTCUSDT)",
            f"  binary gateway  {self.gateway_host}:{self.gateway_port}  (docs/protocol.md)",
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
        if self.market_maker is not None:
            symbols = ", ".join(BY_SYMBOL)
            lines.append(f"  demo market maker quoting {symbols}")
        lines.append("Ctrl-C stops (drain, snapshot, close); restarting keeps everything.")
        return lines

    async def stop(self) -> None:
        """Stop the market maker, then the HTTP server, then the node (gateway first, final
        snapshot). Idempotent."""
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.tasks.clear()
        await self.runner.cleanup()
        await asyncio.to_thread(self.node.stop)


def _log_task_end(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("demo market maker stopped: %r", task.exception())


async def start(config: ServerConfig) -> Server:
    """Start everything (see the module docstring); ports 0 are bound to free ones."""
    data_dir = Path(config.server.data_dir)
    gw_host, gw_port = parse_listen(config.gateway.listen)
    node = await asyncio.to_thread(Node, config.node_config())
    try:
        listed_now = False
        if config.demo.enabled:
            listed_now = await asyncio.to_thread(ensure_demo_listing, node)
        listed = listed_now or demo_listed(node)
        keys: dict[str, DemoKey] = {}
        keys_created = False
        if listed:
            keys, keys_created = load_or_create_keys(data_dir)
        address = node.start_gateway({"listen": f"{gw_host}:{gw_port}"})
        for key in keys.values():
            node.add_api_key(key.key_id, key.secret, key.account)
        markets = BY_SYMBOL if listed else {}
        check_listing(node, markets)
        runner = web.AppRunner(make_app(node, markets), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, config.http.host, config.http.port)
        await site.start()
        http_host, http_port = runner.addresses[0][:2]
    except BaseException:
        await asyncio.to_thread(node.stop)
        raise
    server = Server(
        config=config,
        node=node,
        http_host=http_host,
        http_port=http_port,
        gateway_host=address["host"],
        gateway_port=address["port"],
        keys=keys,
        keys_created=keys_created,
        listed_now=listed_now,
        runner=runner,
    )
    if config.demo.enabled and listed:
        mm = DemoMarketMaker(
            server.gateway_host,
            server.gateway_port,
            keys["market_maker"],
            keys["demo_taker"],
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
