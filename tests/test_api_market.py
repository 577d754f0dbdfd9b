"""The public market-data endpoints over real HTTP against a real node: trades, aggregate
trades, klines and tickers equal what a plain reference computes from the trades the
submitted orders made; every bad parameter gets Binance's error and changes nothing."""

from __future__ import annotations

import datetime
import json
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

from controlplane import messages as m
from controlplane.listing import Market
from tests.test_projections import (
    ALICE,
    BOB,
    BTCUSDT,
    ETHUSDT,
    LOT,
    Harness,
    limit,
    market_order,
    run,
    running,
    trade_a_while,
)

MS = 1_000_000


SUPERSCRIPT_TWO = "\u00b2"
ARABIC_INDIC_TEN = "\u0661\u0660"
"""Digits to ``str.isdigit`` that Binance refuses (-1100): int() fails on the first and reads
the second as 10."""


def trade_json(mk: Market, t: m.Trade, time_ns: int) -> dict[str, Any]:
    return {
        "id": t.trade_id,
        "price": mk.price_str(t.price),
        "qty": mk.qty_str(t.quantity),
        "quoteQty": mk.quote_str(t.quote_quantity),
        "time": time_ns // MS,
        "isBuyerMaker": t.aggressor == "sell",
        "isBestMatch": True,
    }


def reference_agg(h: Harness, mk: Market) -> list[dict[str, Any]]:
    """Consecutive trades of one taker order at one price, merged."""
    times = h.trade_times()
    out: list[dict[str, Any]] = []
    last: m.Trade | None = None
    for t in (t for t in h.trades() if t.market == mk.id):
        if last is not None and (last.taker_order_id, last.price) == (t.taker_order_id, t.price):
            agg = out[-1]
            agg["q"] = mk.qty_str(int(Decimal(agg["q"]).scaleb(mk.base.decimals)) + t.quantity)
            agg["l"] = t.trade_id
        else:
            out.append(
                {
                    "a": t.trade_id,
                    "p": mk.price_str(t.price),
                    "q": mk.qty_str(t.quantity),
                    "f": t.trade_id,
                    "l": t.trade_id,
                    "T": times[t.trade_id] // MS,
                    "m": t.aggressor == "sell",
                    "M": True,
                }
            )
        last = t
    return out


def reference_bucket(interval: str, t_ms: int, tz_minutes: int = 0) -> int:
    """The candle's open time, from calendar arithmetic (independent of the projections)."""
    tz = datetime.timezone(datetime.timedelta(minutes=tz_minutes))
    local = datetime.datetime.fromtimestamp(t_ms / 1000, tz)
    if interval == "1M":
        start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    elif interval == "1w":
        start = (local - datetime.timedelta(days=local.weekday())).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
    elif interval == "1d":
        start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    elif interval == "1h":
        start = local.replace(minute=0, second=0, microsecond=0)
    else:
        assert interval == "1m"
        start = local.replace(second=0, microsecond=0)
    return int(start.timestamp() * 1000)


def reference_klines(h: Harness, mk: Market, interval: str, tz_minutes: int = 0) -> list[list[Any]]:
    """Candles of the market's trades per interval; intervals between them without trades
    carry the previous close (only needed for 1m here: the test runs within minutes)."""
    times = h.trade_times()
    groups: dict[int, list[m.Trade]] = {}
    for t in h.trades():
        if t.market == mk.id:
            groups.setdefault(
                reference_bucket(interval, times[t.trade_id] // MS, tz_minutes), []
            ).append(t)
    opens = sorted(groups)
    if interval == "1m":
        opens = list(range(opens[0], opens[-1] + 1, 60_000))
    out: list[list[Any]] = []
    close = 0
    for b in opens:
        ts = groups.get(b, [])
        if interval == "1M":
            nxt = reference_bucket("1M", b + 32 * 86_400_000, tz_minutes)
        else:
            nxt = b + {"1m": 60_000, "1h": 3_600_000, "1d": 86_400_000, "1w": 604_800_000}[interval]
        prices = [t.price for t in ts] or [close]
        buys = [t for t in ts if t.aggressor == "buy"]
        out.append(
            [
                b,
                mk.price_str(prices[0]),
                mk.price_str(max(prices)),
                mk.price_str(min(prices)),
                mk.price_str(prices[-1]),
                mk.qty_str(sum(t.quantity for t in ts)),
                nxt - 1,
                mk.quote_str(sum(t.quote_quantity for t in ts)),
                len(ts),
                mk.qty_str(sum(t.quantity for t in buys)),
                mk.quote_str(sum(t.quote_quantity for t in buys)),
                "0",
            ]
        )
        close = prices[-1]
    return out


def test_trades_aggregates_klines_and_tickers_match_the_reference(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(tmp_path) as h:
            sym = "symbol=BTCUSDT"
            assert await h.ok(f"/api/v3/trades?{sym}") == []
            assert await h.ok(f"/api/v3/klines?{sym}&interval=1m") == []
            assert await h.ok(f"/api/v3/aggTrades?{sym}") == []

            # Alice offers 2 lots at 30000.00 and 3 + 1 at 30001.00; Bob's IOC for 4 lots
            # takes 2 at each price, his market order for 3 the 2 left at 30001.00.
            await h.submit(
                limit(ALICE, "sell", 3_000_000, 2),
                limit(ALICE, "sell", 3_000_100, 3),
                limit(ALICE, "sell", 3_000_100, 1),
            )
            await h.submit(limit(BOB, "buy", 3_000_100, 4, tif="ioc"))
            await h.submit(market_order(BOB, "buy", 3))
            predicted = [
                (3_000_000, 2 * LOT),
                (3_000_100, 2 * LOT),
                (3_000_100, LOT),
                (3_000_100, LOT),
            ]
            trades = h.trades()
            assert [(t.price, t.quantity) for t in trades] == predicted
            assert [t.quote_quantity for t in trades] == [
                BTCUSDT.notional(p, q) for p, q in predicted
            ]
            times = h.trade_times()
            expected = [trade_json(BTCUSDT, t, times[t.trade_id]) for t in trades]
            assert await h.ok(f"/api/v3/trades?{sym}") == expected
            assert expected[0]["price"] == "30000.00000000"
            assert expected[0]["qty"] == "0.00002000"
            agg = await h.ok(f"/api/v3/aggTrades?{sym}")
            assert [(a["p"], a["q"], a["f"], a["l"]) for a in agg] == [
                ("30000.00000000", "0.00002000", trades[0].trade_id, trades[0].trade_id),
                ("30001.00000000", "0.00002000", trades[1].trade_id, trades[1].trade_id),
                ("30001.00000000", "0.00002000", trades[2].trade_id, trades[3].trade_id),
            ]
            assert agg == reference_agg(h, BTCUSDT)

            # More trading, then everything against the reference.
            await trade_a_while(h, 10)
            # Both sides of the book have quotes (these do not cross).
            await h.submit(limit(BOB, "buy", 2_990_000, 2), limit(ALICE, "sell", 3_050_000, 3))
            trades = [t for t in h.trades() if t.market == BTCUSDT.id]
            times = h.trade_times()
            expected = [trade_json(BTCUSDT, t, times[t.trade_id]) for t in trades]
            assert len(expected) > 20
            assert await h.ok(f"/api/v3/trades?{sym}&limit=1000") == expected
            assert await h.ok(f"/api/v3/trades?{sym}&limit=3") == expected[-3:]
            assert await h.ok(f"/api/v3/historicalTrades?{sym}&limit=2") == expected[-2:]
            from_id = expected[5]["id"]
            assert (
                await h.ok(f"/api/v3/historicalTrades?{sym}&fromId={from_id}&limit=4")
                == expected[5:9]
            )
            assert await h.ok(f"/api/v3/historicalTrades?{sym}&fromId=999999999") == []

            aggs = reference_agg(h, BTCUSDT)
            assert await h.ok(f"/api/v3/aggTrades?{sym}&limit=1000") == aggs
            assert await h.ok(f"/api/v3/aggTrades?{sym}&limit=2") == aggs[-2:]
            assert await h.ok(f"/api/v3/aggTrades?{sym}&fromId={aggs[3]['a']}&limit=3") == aggs[3:6]
            # A fromId inside an aggregate starts at the next one.
            merged = next(i for i, a in enumerate(aggs) if a["l"] > a["f"])
            assert (await h.ok(f"/api/v3/aggTrades?{sym}&fromId={aggs[merged]['f'] + 1}&limit=1"))[
                0
            ] == aggs[merged + 1]
            t0, t1 = aggs[2]["T"], aggs[-3]["T"]
            in_window = [a for a in aggs if t0 <= a["T"] <= t1]
            assert (
                await h.ok(f"/api/v3/aggTrades?{sym}&startTime={t0}&endTime={t1}&limit=1000")
                == in_window
            )
            assert await h.ok(f"/api/v3/aggTrades?{sym}&startTime={t0}&limit=2") == in_window[:2]
            assert await h.ok(f"/api/v3/aggTrades?{sym}&endTime={t0 - 1}&limit=1000") == [
                a for a in aggs if a["T"] < t0
            ]
            assert await h.ok(f"/api/v3/aggTrades?{sym}&startTime={t1}&endTime={t0 - 1}") == []

            # Klines: the window from the first trade to the last (so "now" plays no part).
            first_ms = times[trades[0].trade_id] // MS
            last_ms = times[trades[-1].trade_id] // MS
            window = f"startTime=0&endTime={last_ms}&limit=1000"
            for interval in ("1m", "1h", "1d", "1w", "1M"):
                want = reference_klines(h, BTCUSDT, interval)
                got = await h.ok(f"/api/v3/klines?{sym}&interval={interval}&{window}")
                assert got == want, interval
                assert await h.ok(f"/api/v3/uiKlines?{sym}&interval={interval}&{window}") == want
            want = reference_klines(h, BTCUSDT, "1d", tz_minutes=330)
            got = await h.ok(f"/api/v3/klines?{sym}&interval=1d&{window}&timeZone=5:30")
            assert got == want
            want = reference_klines(h, BTCUSDT, "1h", tz_minutes=-45)
            assert await h.ok(f"/api/v3/klines?{sym}&interval=1h&{window}&timeZone=-0:45") == want
            one_minute = reference_klines(h, BTCUSDT, "1m")
            assert (
                await h.ok(f"/api/v3/klines?{sym}&interval=1m&endTime={last_ms}&limit=1")
                == one_minute[-1:]
            )
            assert (
                await h.ok(
                    f"/api/v3/klines?{sym}&interval=1m"
                    f"&startTime={first_ms + 60_000}&endTime={last_ms}"
                )
                == one_minute[1:]
            )
            # The current candle is the last of the most recent ones.
            recent = await h.ok(f"/api/v3/klines?{sym}&interval=1h&limit=1")
            assert recent[0][0] <= last_ms <= recent[0][6] or recent[0][8] == 0
            assert (
                await h.ok(
                    f"/api/v3/klines?{sym}&interval=1m&startTime={last_ms}&endTime={first_ms}"
                )
                == []
            )

            # Tickers: every trade is within the last 24 hours and the last 5 minutes.
            prices = [t.price for t in trades]
            volume = sum(t.quantity for t in trades)
            quote_volume = sum(t.quote_quantity for t in trades)
            average = BTCUSDT.quote_str(quote_volume * 10**8 // volume)
            book = await h.ok(f"/api/v3/depth?{sym}&limit=1")
            ticker = await h.ok(f"/api/v3/ticker/24hr?{sym}")
            change = prices[-1] - prices[0]
            assert ticker | {"openTime": 0, "closeTime": 0} == {
                "symbol": "BTCUSDT",
                "priceChange": BTCUSDT.price_str(change),
                "priceChangePercent": f"{Decimal(change * 100) / Decimal(prices[0]):.3f}",
                "weightedAvgPrice": average,
                "prevClosePrice": BTCUSDT.price_str(0),
                "lastPrice": BTCUSDT.price_str(prices[-1]),
                "lastQty": BTCUSDT.qty_str(trades[-1].quantity),
                "bidPrice": book["bids"][0][0],
                "bidQty": book["bids"][0][1],
                "askPrice": book["asks"][0][0],
                "askQty": book["asks"][0][1],
                "openPrice": BTCUSDT.price_str(prices[0]),
                "highPrice": BTCUSDT.price_str(max(prices)),
                "lowPrice": BTCUSDT.price_str(min(prices)),
                "volume": BTCUSDT.qty_str(volume),
                "quoteVolume": BTCUSDT.quote_str(quote_volume),
                "openTime": 0,
                "closeTime": 0,
                "firstId": trades[0].trade_id,
                "lastId": trades[-1].trade_id,
                "count": len(trades),
            }
            assert ticker["closeTime"] - ticker["openTime"] == 86_400_000
            assert ticker["closeTime"] >= last_ms
            mini = await h.ok(f"/api/v3/ticker/24hr?{sym}&type=MINI")
            assert list(mini) == [
                "symbol", "openPrice", "highPrice", "lowPrice", "lastPrice", "volume",
                "quoteVolume", "openTime", "closeTime", "firstId", "lastId", "count",
            ]  # fmt: skip
            assert {k: mini[k] for k in mini if "Time" not in k} == {
                k: ticker[k] for k in mini if "Time" not in k
            }
            symbols = quote(json.dumps(["ETHUSDT", "BTCUSDT"], separators=(",", ":")))
            both = await h.ok(f"/api/v3/ticker/24hr?symbols={symbols}")
            assert [t["symbol"] for t in both] == ["ETHUSDT", "BTCUSDT"]
            eth = both[0]
            assert (eth["count"], eth["firstId"], eth["lastId"]) == (0, -1, -1)
            assert eth["lastPrice"] == ETHUSDT.price_str(0) == "0.00000000"
            assert eth["volume"] == "0.000000000000000000"
            everything = await h.ok("/api/v3/ticker/24hr?type=MINI")
            assert sorted(t["symbol"] for t in everything) == ["BTCUSDT", "ETHUSDT"]

            assert await h.ok(f"/api/v3/ticker/price?{sym}") == {
                "symbol": "BTCUSDT",
                "price": BTCUSDT.price_str(prices[-1]),
            }
            assert await h.ok(f"/api/v3/ticker/price?symbols={symbols}") == [
                {"symbol": "ETHUSDT", "price": "0.00000000"},
                {"symbol": "BTCUSDT", "price": BTCUSDT.price_str(prices[-1])},
            ]
            assert await h.ok(f"/api/v3/ticker/bookTicker?{sym}") == {
                "symbol": "BTCUSDT",
                "bidPrice": book["bids"][0][0],
                "bidQty": book["bids"][0][1],
                "askPrice": book["asks"][0][0],
                "askQty": book["asks"][0][1],
            }
            tops = await h.ok("/api/v3/ticker/bookTicker")
            assert {t["symbol"]: t["bidPrice"] for t in tops} == {
                "BTCUSDT": book["bids"][0][0],
                "ETHUSDT": "0.00000000",
            }
            assert await h.ok(f"/api/v3/avgPrice?{sym}") == {
                "mins": 5,
                "price": average,
                "closeTime": last_ms,
            }
            assert await h.ok("/api/v3/avgPrice?symbol=ETHUSDT") == {
                "mins": 5,
                "price": "0.00000000",
                "closeTime": 0,
            }

    run(scenario)


def test_bad_parameters_get_binance_errors_and_change_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(tmp_path) as h:
            await trade_a_while(h, 2)
            before = (h.projections.dump(), h.node.stats()["applied_seq"])
            sym = "symbol=BTCUSDT"
            by_symbol = [
                "/api/v3/trades",
                "/api/v3/historicalTrades",
                "/api/v3/aggTrades",
                "/api/v3/klines?interval=1m",
                "/api/v3/uiKlines?interval=1m",
                "/api/v3/avgPrice",
            ]
            for path in by_symbol:
                joiner = "&" if "?" in path else "?"
                status, body = await h.get(path)
                assert (status, body["code"]) == (400, -1102), path
                assert "'symbol'" in body["msg"]
                status, body = await h.get(f"{path}{joiner}symbol=")
                assert (status, body["code"]) == (400, -1102), path
                assert await h.get(f"{path}{joiner}symbol=DOGEUSDT") == (
                    400,
                    {"code": -1121, "msg": "Invalid symbol."},
                ), path
                if "avgPrice" in path:
                    continue
                # "\u00b2" (²) is a digit to str.isdigit but not to int(); then Arabic-Indic 10.
                for bad in (
                    "abc",
                    "0",
                    "1001",
                    "-1",
                    "1.5",
                    "99999999999999999999999",
                    SUPERSCRIPT_TWO,
                    ARABIC_INDIC_TEN,
                ):
                    status, body = await h.get(f"{path}{joiner}{sym}&limit={bad}")
                    assert (status, body["code"]) == (400, -1100), (path, bad)
                    assert "'limit'" in body["msg"]
            for path in ("/api/v3/historicalTrades", "/api/v3/aggTrades"):
                for bad in (
                    "x",
                    "-5",
                    "1e3",
                    "9223372036854775808",
                    SUPERSCRIPT_TWO,
                    ARABIC_INDIC_TEN,
                ):
                    status, body = await h.get(f"{path}?{sym}&fromId={bad}")
                    assert (status, body["code"]) == (400, -1100), (path, bad)
                    assert "'fromId'" in body["msg"]
            for path in ("/api/v3/aggTrades?", "/api/v3/klines?interval=1m&"):
                for name in ("startTime", "endTime"):
                    status, body = await h.get(f"{path}{sym}&{name}=yesterday")
                    assert (status, body["code"]) == (400, -1100), (path, name)
                    assert f"'{name}'" in body["msg"]
            for path in ("/api/v3/klines", "/api/v3/uiKlines"):
                status, body = await h.get(f"{path}?{sym}")
                assert (status, body["code"]) == (400, -1102)
                assert "'interval'" in body["msg"]
                for bad in ("2m", "1s", "1D", "1mo", "60"):
                    assert await h.get(f"{path}?{sym}&interval={bad}") == (
                        400,
                        {"code": -1120, "msg": "Invalid interval."},
                    ), bad
                for bad in (
                    "abc",
                    "15",
                    "+14:30",
                    "-12:01",
                    "5:60",
                    "5:5",
                    "+",
                    "1:00:00",
                    "5\n",
                    ARABIC_INDIC_TEN,
                ):
                    status, body = await h.get(f"{path}?{sym}&interval=1h&timeZone={quote(bad)}")
                    assert (status, body["code"]) == (400, -1130), bad
                    assert "'timeZone'" in body["msg"]
                for good in ("14", "-12:00", "+05:45", "0"):
                    status, _ = await h.get(f"{path}?{sym}&interval=1h&timeZone={quote(good)}")
                    assert status == 200, good

            pair = quote('["BTCUSDT","ETHUSDT"]')
            twice = quote('["BTCUSDT","BTCUSDT"]')
            unknown = quote('["BTCUSDT","DOGEUSDT"]')
            for path in (
                "/api/v3/ticker/24hr",
                "/api/v3/ticker/price",
                "/api/v3/ticker/bookTicker",
            ):
                status, body = await h.get(f"{path}?{sym}&symbols={pair}")
                assert (status, body["code"]) == (400, -1128), path
                for bad in ("BTCUSDT", "[BTCUSDT]", '["btcusdt"]', "[1]", '["A",]', "{}"):
                    status, body = await h.get(f"{path}?symbols={quote(bad)}")
                    assert (status, body["code"]) == (400, -1100), (path, bad)
                    assert "'symbols'" in body["msg"]
                for empty in ("", "[]"):
                    status, body = await h.get(f"{path}?symbols={quote(empty)}")
                    assert (status, body["code"]) == (400, -1102), (path, empty)
                status, body = await h.get(f"{path}?symbols={twice}")
                assert (status, body["code"]) == (400, -1101), path
                assert await h.get(f"{path}?symbols={unknown}") == (
                    400,
                    {"code": -1121, "msg": "Invalid symbol."},
                )
                assert await h.get(f"{path}?symbol=DOGEUSDT") == (
                    400,
                    {"code": -1121, "msg": "Invalid symbol."},
                )
            for bad in ("FOO", "full", ""):
                status, body = await h.get(f"/api/v3/ticker/24hr?{sym}&type={bad}")
                assert (status, body["code"]) == (400, -1130), bad
                assert "'type'" in body["msg"]
            # The largest times and ids are valid, and find nothing.
            top = 2**63 - 1
            for path in (
                f"/api/v3/aggTrades?{sym}&startTime={top}&endTime={top}",
                f"/api/v3/aggTrades?{sym}&fromId={top}",
                f"/api/v3/historicalTrades?{sym}&fromId={top}",
                f"/api/v3/klines?{sym}&interval=1M&startTime={top}&endTime={top}",
                f"/api/v3/klines?{sym}&interval=1w&startTime={top}",
                f"/api/v3/klines?{sym}&interval=1m&startTime=0&endTime=0",
            ):
                assert await h.ok(path) == [], path
            assert (h.projections.dump(), h.node.stats()["applied_seq"]) == before

    run(scenario)


def test_price_change_percent_rounds_half_up_the_same_everywhere() -> None:
    """``priceChangePercent`` (REST ticker/24hr and the ``@ticker`` stream share the
    function): three decimals, a tie rounded up, as Binance writes it."""
    from controlplane.listing import change_percent

    assert change_percent(8000, 8001) == "0.013"  # 0.0125: half up, not to even
    assert change_percent(8000, 7999) == "-0.013"
    assert change_percent(3, 4) == "33.333"
    assert change_percent(100, 100) == "0.000"
    assert change_percent(0, 5) == "0.000"
