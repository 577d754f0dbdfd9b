"""Binance stream names: parsing ``<symbol>@<kind>`` into a :class:`StreamSpec`.

Supported (symbols lower-case, as Binance requires): ``@depth``, ``@depth@100ms``,
``@depth5|10|20`` (and ``@100ms``), ``@trade``, ``@aggTrade``, ``@kline_<interval>``,
``@bookTicker``, ``@ticker``, ``@miniTicker``. Anything else, an upper-case symbol or an
unlisted market is refused (:class:`StreamNameError`). Parsing is O(len(name)).

Invariant: ``parse(spec.name) == spec`` for every spec returned, and a public name never
contains ``:`` (private subscription keys such as ``account:<id>`` do, so they can never be
subscribed to by name).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

from controlplane.listing import Listing

StreamKind: TypeAlias = Literal[
    "depth", "partialDepth", "trade", "aggTrade", "kline", "bookTicker", "ticker", "miniTicker"
]

MAX_NAME_LENGTH = 64

SECOND_MS = 1000
MINUTE_MS = 60 * SECOND_MS
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS

KLINE_INTERVALS_MS: dict[str, int] = {
    "1s": SECOND_MS,
    "1m": MINUTE_MS,
    "3m": 3 * MINUTE_MS,
    "5m": 5 * MINUTE_MS,
    "15m": 15 * MINUTE_MS,
    "30m": 30 * MINUTE_MS,
    "1h": HOUR_MS,
    "2h": 2 * HOUR_MS,
    "4h": 4 * HOUR_MS,
    "6h": 6 * HOUR_MS,
    "8h": 8 * HOUR_MS,
    "12h": 12 * HOUR_MS,
    "1d": DAY_MS,
    "3d": 3 * DAY_MS,
    "1w": 7 * DAY_MS,
    "1M": 31 * DAY_MS,  # calendar months: see candles.open_time
}
"""Binance's kline intervals (``1M`` is a calendar month; the length here is an upper bound)."""

PARTIAL_DEPTH_LEVELS = (5, 10, 20)


class StreamNameError(ValueError):
    """Not a stream name this server publishes."""


@dataclass(frozen=True)
class StreamSpec:
    name: str
    """The name exactly as subscribed (``btcusdt@aggTrade``)."""
    kind: StreamKind
    market: int
    speed_ms: int = 0
    """Update speed of the depth streams (100 or 1000)."""
    levels: int = 0
    """Levels of a partial depth stream."""
    interval: str = ""
    """Kline interval (``1m``)."""


def parse(name: str, listing: Listing) -> StreamSpec:
    """The stream ``name`` stands for; StreamNameError if unknown or not listed."""
    if not name or len(name) > MAX_NAME_LENGTH or "@" not in name:
        raise StreamNameError(name)
    symbol, _, rest = name.partition("@")
    if symbol != symbol.lower():
        raise StreamNameError(name)
    market = listing.by_symbol.get(symbol.upper())
    if market is None:
        raise StreamNameError(name)
    mid = market.id
    speed = 1000
    if rest.endswith("@100ms"):
        rest, speed = rest[: -len("@100ms")], 100
        if not rest.startswith("depth"):
            raise StreamNameError(name)
    if rest == "depth":
        return StreamSpec(name, "depth", mid, speed_ms=speed)
    if rest.startswith("depth") and rest[5:] in {str(n) for n in PARTIAL_DEPTH_LEVELS}:
        return StreamSpec(name, "partialDepth", mid, speed_ms=speed, levels=int(rest[5:]))
    if rest.startswith("kline_") and rest[6:] in KLINE_INTERVALS_MS:
        return StreamSpec(name, "kline", mid, interval=rest[6:])
    if rest in ("trade", "aggTrade", "bookTicker", "ticker", "miniTicker"):
        kind: StreamKind = rest  # type: ignore[assignment]
        return StreamSpec(name, kind, mid)
    raise StreamNameError(name)
