"""The demo: a listing, funded accounts and a market maker, so a newcomer sees a live book.

On a fresh data directory (``demo.enabled``): :func:`ensure_demo_listing` lists
:data:`ASSETS` and :data:`MARKETS` in the engine and records their names, creates the demo
accounts and funds them; ``<data_dir>/demo-keys.json`` (mode 0600) gets their gateway API
keys and the demo user's login: username ``demo``, a random password and a REST API key
(HMAC, read + trade, for the demo user's account, also a gateway key: one key, two doors),
created as a real user by :func:`ensure_demo_user`. That file is the demo's deliberate
plaintext stand-in for a credentials handover (the server itself keeps only the password's
argon2 hash and the secret encrypted); it is not for a real deployment. The same file
holds the demo operator's password and token (``demo-operator``, role admin, for the
operator API ``/admin/v1`` and ``bourse admin``), created by :func:`ensure_demo_operator`.

:class:`DemoMarketMaker` then quotes both markets over the real binary gateway and crosses
the spread now and then with a taker account, so trades happen.

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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from controlplane import Command, Node
from controlplane.accounts import Accounts, random_key_string
from controlplane.gateway.client import GatewayError, GatewaySession, connect
from controlplane.gateway.codec import OrderRejected, OrderType, Side, TimeInForce
from controlplane.listing import Asset, Listing, Market
from controlplane.operators import Operators, new_token

log = logging.getLogger("bourse.demo")

BTC = Asset(1, "BTC", 8)
ETH = Asset(2, "ETH", 8)
USDT = Asset(3, "USDT", 8)
ASSETS = (BTC, ETH, USDT)
FIVE_USDT = 5 * 10**8
MARKETS = (
    Market(1, "BTCUSDT", BTC, USDT, 2, 1, 1_000, FIVE_USDT),
    Market(2, "ETHUSDT", ETH, USDT, 2, 1, 10_000, FIVE_USDT),
)


@dataclass(frozen=True)
class Quoting:
    """How the demo market maker quotes a market (price units, lots)."""

    mid: int
    """The starting mid price."""
    spacing: int
    """Distance between levels."""
    quantity_lots: int
    """Size per level."""


QUOTING = {1: Quoting(6_000_000, 500, 100), 2: Quoting(300_000, 50, 100)}

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

    (A ``balance`` is ``(0, 0)`` once the account and the asset exist and None before, so
    an account created last marks the end.)"""
    return node.balance(SETUP_DONE, USDT.id) is not None


def ensure_demo_listing(node: Node, listing: Listing) -> bool:
    """List the demo set, record its names and fund the demo accounts unless done; whether
    anything was done.

    Safe to rerun after a crash half-way: listings and accounts that exist are refused by
    the engine as ``*_exists`` (fine), and a deposit is made only if the account holds none
    of that asset (nobody trades before the setup is marked done)."""
    if demo_listed(node):
        for asset in ASSETS:
            listing.record_asset(asset)
        for market in MARKETS:
            listing.record_market(market)
        return False
    allowed = {"asset_exists", "market_exists", "account_exists"}
    commands = listing_commands()
    for command, ack in zip(commands, node.submit_many(commands), strict=True):
        for event in ack["events"]:
            if event["type"] == "rejected" and event["reason"] not in allowed:
                raise RuntimeError(f"demo listing: {command} rejected: {event['reason']}")
    for asset in ASSETS:
        listing.record_asset(asset)
    for market in MARKETS:
        listing.record_market(market)
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
            if name not in (DEMO_LOGIN, DEMO_OPERATOR)
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
    _write_keys_file(path, data)
    return keys, True


def _write_keys_file(path: Path, data: Mapping[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# --- the demo user (REST login and API key) -------------------------------------------------

DEMO_USERNAME = "demo"
DEMO_LOGIN = "demo_login"
"""The entry of ``demo-keys.json`` with the demo user's credentials."""


@dataclass(frozen=True)
class DemoLogin:
    """The demo user's credentials: password for the session endpoints, an HMAC API key for
    the signed REST endpoints and the binary gateway (``key_id``)."""

    username: str
    password: str
    api_key: str
    secret: str
    account: int


def load_or_create_demo_login(data_dir: Path) -> tuple[DemoLogin, bool]:
    """The demo user's credentials from ``demo-keys.json``, generated and added to it (mode
    0600) if missing; and whether they were generated now. Written before the user exists,
    so a crash in between leaves credentials that :func:`ensure_demo_user` completes."""
    path = data_dir / KEYS_FILE
    raw: dict[str, object] = json.loads(path.read_text()) if path.exists() else {}
    entry = raw.get(DEMO_LOGIN)
    if isinstance(entry, dict):
        return DemoLogin(
            str(entry["username"]),
            str(entry["password"]),
            str(entry["api_key"]),
            str(entry["secret"]),
            int(entry["account"]),
        ), False
    login = DemoLogin(
        DEMO_USERNAME,
        secrets.token_urlsafe(18),
        random_key_string(),
        random_key_string(),
        DEMO_USER,
    )
    raw[DEMO_LOGIN] = {
        "username": login.username,
        "password": login.password,
        "api_key": login.api_key,
        "secret": login.secret,
        "account": login.account,
    }
    _write_keys_file(path, raw)
    return login, True


async def ensure_demo_user(accounts: Accounts, login: DemoLogin) -> int:
    """Create the demo user (on the demo user's existing engine account) and its REST API
    key (read + trade) unless they exist; the key's id."""
    user = accounts.user_by_name(login.username)
    if user is None:
        user = await accounts.register(login.username, login.password, adopt_account=login.account)
    found = accounts.credentials(login.api_key)
    if found is not None:
        return found.key.id
    created = await accounts.create_api_key(
        user,
        label="demo",
        permissions=["read", "trade"],
        api_key=login.api_key,
        secret=login.secret,
    )
    return created.key.id


# --- the demo operator ----------------------------------------------------------------------

DEMO_OPERATOR_NAME = "demo-operator"
DEMO_OPERATOR = "demo_operator"
"""The entry of ``demo-keys.json`` with the demo operator's credentials."""


@dataclass(frozen=True)
class DemoOperator:
    """The demo operator's credentials (``/admin/v1``, ``bourse admin``)."""

    name: str
    password: str
    token: str


def load_or_create_demo_operator(data_dir: Path) -> tuple[DemoOperator, bool]:
    """The demo operator's credentials from ``demo-keys.json``, generated and added to it
    (mode 0600) if missing; and whether they were generated now (written before the operator
    exists, as :func:`load_or_create_demo_login`)."""
    path = data_dir / KEYS_FILE
    raw: dict[str, object] = json.loads(path.read_text()) if path.exists() else {}
    entry = raw.get(DEMO_OPERATOR)
    if isinstance(entry, dict):
        return DemoOperator(str(entry["name"]), str(entry["password"]), str(entry["token"])), False
    operator = DemoOperator(DEMO_OPERATOR_NAME, secrets.token_urlsafe(18), new_token())
    raw[DEMO_OPERATOR] = {
        "name": operator.name,
        "password": operator.password,
        "token": operator.token,
    }
    _write_keys_file(path, raw)
    return operator, True


def ensure_demo_operator(operators: Operators, operator: DemoOperator) -> None:
    """Create the demo operator (role admin, with its token) unless it exists."""
    if operators.by_name(operator.name) is None:
        operators.add(operator.name, operator.password, "admin", token=operator.token)


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
        self.mids = {m.id: QUOTING[m.id].mid for m in markets}
        self.rounds = 0
        self.crosses = 0
        self.stopping = False
        """Set by :meth:`stop`: the loop ends after its round (cancellation is the other way)."""
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
            while not self.stopping:
                for m in self.markets:
                    await self._requote(maker, m)
                if self.rounds % self.cross_every == self.cross_every - 1:
                    for m in self.markets:
                        await self._cross(taker, m)
                self.rounds += 1
                await asyncio.sleep(self.interval)
        finally:
            with contextlib.suppress(GatewayError, OSError, TimeoutError):
                async with asyncio.timeout(2):
                    await maker.mass_cancel().wait()
            for session in (maker, taker):
                with contextlib.suppress(GatewayError, OSError, TimeoutError):
                    async with asyncio.timeout(2):
                        await session.logout()
                await session.close()

    def stop(self) -> None:
        """Ask :meth:`run` to end after the current round (then it pulls its quotes)."""
        self.stopping = True

    async def _requote(self, maker: GatewaySession, m: Market) -> None:
        """Place the new quotes, then cancel the old ones: the book is never empty. (The mid
        moves by a fifth of the spacing at most, so new quotes never cross old ones.)"""
        q = QUOTING[m.id]
        mid = self.mids[m.id] + self.rng.choice((-1, 0, 1)) * q.spacing // 5
        low, high = q.mid * 9 // 10, q.mid * 11 // 10
        mid = min(max(mid, low), high) // m.tick_size * m.tick_size
        self.mids[m.id] = mid
        tickets = []
        for i in range(1, self.levels + 1):
            size = q.quantity_lots * m.lot_size * i
            tickets.append(maker.new_order(m.id, Side.BUY, size, mid - i * q.spacing))
            tickets.append(maker.new_order(m.id, Side.SELL, size, mid + i * q.spacing))
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
        q = QUOTING[m.id]
        mid = self.mids[m.id]
        side = self.rng.choice((Side.BUY, Side.SELL))
        price = mid + q.spacing if side == Side.BUY else mid - q.spacing
        quantity = m.lot_size * self.rng.randint(1, q.quantity_lots)
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
