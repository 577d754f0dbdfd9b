"""Load-test fixtures: accounts, API keys and funds, made through the operator API.

Each simulated user calls one of the ``take_*`` methods in its ``on_start``: that creates a
fresh user (``POST /admin/v1/users``), an operator-issued read+trade API key for it
(``POST /admin/v1/users/{id}/api-keys``; with trade permission it also opens the binary
gateway, same id, same secret) and funds it with every listed asset (``POST
/admin/v1/deposits``, idempotent by a transaction id unique to the run). So a load test never
reuses, and never needs, a hand-made account.

Where things are comes from Locust's options (``--host`` is the HTTP base URL; see
:func:`add_options`) or the environment: ``BOURSE_GATEWAY`` (``host:port``),
``BOURSE_OPERATOR_TOKEN``, ``BOURSE_DATA_DIR`` (to read the demo operator's token from
``demo-keys.json`` when no token is given), ``BOURSE_MARKETS`` (comma-separated symbols;
default all), ``BOURSE_MM_RATE`` and ``BOURSE_TRADER_RATE`` (tasks per second of each market
maker and API trader; by default a random pause). The markets' ids, ticks, lots and a mid
price are read once per process from ``/admin/v1/markets`` and the public book.
"""

from __future__ import annotations

import json
import math
import os
import random
import secrets
import threading
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import requests
from locust.env import Environment

FUNDING = {"BTC": "1000", "ETH": "10000", "USDT": "100000000"}
"""What each load-test account is given of an asset (whole units); other assets get 10^6."""
DEFAULT_FUNDING = "1000000"


@dataclass(frozen=True)
class MarketSpec:
    id: int
    symbol: str
    price_decimals: int
    tick_size: int
    """Price units."""
    lot_size: int
    """Base atoms."""
    base_decimals: int
    mid: int
    """Price units; where quotes start."""
    min_lots: int
    """Lots an order needs to reach the minimum notional near the mid (with a margin)."""

    def price_text(self, price: int) -> str:
        return str(Decimal(price).scaleb(-self.price_decimals))

    def qty_text(self, quantity: int) -> str:
        return str(Decimal(quantity).scaleb(-self.base_decimals))


@dataclass(frozen=True)
class Credentials:
    user_id: int
    account: int
    key_id: int
    api_key: str
    secret: str

    @property
    def gateway_secret(self) -> bytes:
        return self.secret.encode()


def add_options(parser: Any) -> None:
    """Locust command-line options; each defaults to its ``BOURSE_*`` environment variable
    (see the module docstring)."""
    parser.add_argument("--bourse-gateway", default=os.environ.get("BOURSE_GATEWAY", ""))
    parser.add_argument(
        "--bourse-operator-token", default=os.environ.get("BOURSE_OPERATOR_TOKEN", "")
    )
    parser.add_argument(
        "--bourse-data-dir", default=os.environ.get("BOURSE_DATA_DIR", "data/bourse")
    )
    parser.add_argument("--bourse-markets", default=os.environ.get("BOURSE_MARKETS", ""))
    parser.add_argument(
        "--bourse-mm-rate",
        type=float,
        default=float(os.environ.get("BOURSE_MM_RATE", "0")),
        help="tasks per second of each market maker (0: a random 50-200 ms pause)",
    )
    parser.add_argument(
        "--bourse-trader-rate",
        type=float,
        default=float(os.environ.get("BOURSE_TRADER_RATE", "0")),
        help="tasks per second of each API trader (0: a random 100-500 ms pause)",
    )


def pause(environment: Environment, rate_option: str, low: float, high: float) -> float:
    """Seconds a user waits between tasks: ``1 / rate`` when the rate option is set (> 0),
    else a random pause in ``[low, high]``."""
    options = environment.parsed_options
    rate = float(getattr(options, rate_option, 0) or 0) if options is not None else 0.0
    return 1.0 / rate if rate > 0 else random.uniform(low, high)


def _option(environment: Environment, name: str) -> str:
    options = environment.parsed_options
    value = getattr(options, name, "") if options is not None else ""
    return str(value or "")


class Fixtures:
    """The markets under test and a factory of funded accounts (one per simulated user)."""

    def __init__(self, environment: Environment) -> None:
        self.base_url = (environment.host or "http://127.0.0.1:8080").rstrip("/")
        token = _option(environment, "bourse_operator_token")
        if not token:
            keys = Path(_option(environment, "bourse_data_dir") or "data/bourse")
            keys /= "demo-keys.json"
            if not keys.exists():
                raise RuntimeError(
                    "no operator token: pass --bourse-operator-token or BOURSE_OPERATOR_TOKEN, "
                    f"or --bourse-data-dir of a demo server ({keys} is missing)"
                )
            token = json.loads(keys.read_text())["demo_operator"]["token"]
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {token}"
        gateway = _option(environment, "bourse_gateway") or "127.0.0.1:7001"
        host, _, port = gateway.rpartition(":")
        self.gateway_host, self.gateway_port = host, int(port)
        self.run_id = secrets.token_hex(4)
        self._lock = threading.Lock()
        self._made = 0
        self.assets = [a["name"] for a in self._admin("GET", "/assets")]
        info = requests.get(f"{self.base_url}/api/v3/exchangeInfo", timeout=10).json()
        self._base_decimals = {s["symbol"]: int(s["baseAssetPrecision"]) for s in info["symbols"]}
        self._min_notional = {
            s["symbol"]: Decimal(f["minNotional"])
            for s in info["symbols"]
            for f in s["filters"]
            if f["filterType"] == "NOTIONAL"
        }
        wanted = {s for s in _option(environment, "bourse_markets").split(",") if s}
        self.markets = [
            self._market(m)
            for m in self._admin("GET", "/markets")
            if not wanted or m["symbol"] in wanted
        ]
        if not self.markets:
            raise RuntimeError("no markets to load-test")

    def _admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self.http.request(
            method, f"{self.base_url}/admin/v1{path}", json=body, timeout=30
        )
        if response.status_code >= 300:
            raise RuntimeError(f"{method} /admin/v1{path}: {response.status_code} {response.text}")
        return response.json()

    def _market(self, m: dict[str, Any]) -> MarketSpec:
        symbol = m["symbol"]
        book = requests.get(
            f"{self.base_url}/api/v3/ticker/bookTicker", params={"symbol": symbol}, timeout=10
        ).json()
        price_decimals = int(m["price_decimals"])
        base_decimals = self._base_decimals[symbol]
        scale = Decimal(10) ** price_decimals
        tick = int(Decimal(m["tick_size"]) * scale)
        lot = int(Decimal(m["lot_size"]).scaleb(base_decimals))
        bid, ask = Decimal(book.get("bidPrice") or 0), Decimal(book.get("askPrice") or 0)
        if bid > 0 and ask > 0:
            mid = int((bid + ask) / 2 * scale)
        else:
            last = Decimal(
                requests.get(
                    f"{self.base_url}/api/v3/ticker/price", params={"symbol": symbol}, timeout=10
                )
                .json()
                .get("price")
                or 0
            )
            mid = int(last * scale) or 1000 * tick
        lot_value = Decimal(mid).scaleb(-price_decimals) * Decimal(lot).scaleb(-base_decimals)
        min_notional = self._min_notional.get(symbol, Decimal(0))
        min_lots = max(1, math.ceil(min_notional * 2 / lot_value)) if lot_value else 1
        return MarketSpec(
            id=int(m["id"]),
            symbol=symbol,
            price_decimals=price_decimals,
            tick_size=tick,
            lot_size=lot,
            base_decimals=base_decimals,
            mid=mid // tick * tick,
            min_lots=min_lots,
        )

    def _account(self, kind: str) -> Credentials:
        with self._lock:
            self._made += 1
            n = self._made
        name = f"load-{kind}-{self.run_id}-{n}"
        user = self._admin(
            "POST", "/users", {"username": name, "password": secrets.token_urlsafe(18)}
        )
        key = self._admin(
            "POST",
            f"/users/{user['userId']}/api-keys",
            {"permissions": ["read", "trade"], "label": "load test"},
        )
        for asset in self.assets:
            self._admin(
                "POST",
                "/deposits",
                {
                    "user_id": user["userId"],
                    "asset": asset,
                    "amount": FUNDING.get(asset, DEFAULT_FUNDING),
                    "tx_id": f"{name}-{asset}",
                },
            )
        return Credentials(
            user["userId"], user["accountId"], int(key["id"]), key["apiKey"], key["secretKey"]
        )

    def take_market_maker(self) -> Credentials:
        return self._account("mm")

    def take_trader(self) -> Credentials:
        return self._account("api")


_FIXTURES: dict[int, Fixtures] = {}
_FIXTURES_LOCK = threading.Lock()


def fixtures_for(environment: Environment) -> Fixtures:
    """The process's fixtures for this environment (made on first use: at test start)."""
    with _FIXTURES_LOCK:
        found = _FIXTURES.get(id(environment))
        if found is None:
            found = _FIXTURES[id(environment)] = Fixtures(environment)
        return found
