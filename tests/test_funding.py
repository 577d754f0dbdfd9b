"""Deposits and withdrawals (``controlplane.funding``, ``controlplane.api.wallet``) through the
real server: deposit idempotency, the whitelist with TOTP, the daily limit by verification
tier, immediate sends below the threshold, N-of-M approval above it, rejection paying back,
precise errors that change nothing, Binance's history shapes, the crash-recovery protocol,
and money conservation against the projections' ledger and the engine.

TOTP codes are accepted once per 30-second step; the tests move the accounts service's
clock (its documented ``clock_ms``) a step forward before each code, and sign requests with
that clock."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pyotp

from controlplane.api.auth import ACCOUNTS
from controlplane.db import FILE_NAME
from controlplane.funding import FUNDING, WITHDRAWAL_SOURCE, Funding
from controlplane.listing import fmt
from controlplane.messages import Withdraw
from controlplane.operators import add_operator_offline
from controlplane.projections import PROJECTIONS
from controlplane.serve import Server, start
from tests.test_accounts import PASSWORD, call, new_user, run
from tests.test_operators import admin, config, demo_operator_token, signed

USDT = 3  # the demo's USDT asset id (8 decimals)
COIN = 10**8
FUNDING_RULES = {
    "approvals_required": 2,
    "approval_threshold": {"USDT": "1000", "*": "1"},
    "daily_withdrawal_limits": {
        "0": {"USDT": "1500", "*": "0"},
        "1": {"USDT": "100000", "*": "10"},
        "2": {"USDT": "1000000", "*": "100"},
    },
}
ADDRESS = "bc1qexampleaddress0001"
OTHER_ADDRESS = "bc1qexampleaddress0002"


class Clock:
    """The accounts service's clock, moved forward one TOTP step per code."""

    def __init__(self) -> None:
        self.offset_ms = 0

    def __call__(self) -> int:
        return time.time_ns() // 1_000_000 + self.offset_ms

    def next_code(self, totp: pyotp.TOTP) -> str:
        self.offset_ms += 30_000
        return totp.at(self() / 1000)


def funding_of(server: Server) -> Funding:
    return server.runner.app[FUNDING]


def engine_total(server: Server, account: int, asset: int) -> int:
    free, held = server.node.balance(account, asset) or (0, 0)
    return free + held


def usdt(atoms: int) -> str:
    return fmt(atoms, 8, 8)


async def setup_user(
    http: aiohttp.ClientSession, server: Server, clock: Clock, name: str
) -> tuple[str, dict[str, Any], pyotp.TOTP, dict[str, Any]]:
    """A user with TOTP on and a read + withdraw API key: (session, user, totp, key)."""
    token, user = await new_user(http, server, name)
    status, begun = await call(http, server, "POST", "/api/v1/me/totp", token=token)
    assert status == 200
    totp = pyotp.TOTP(begun["secret"])
    status, me = await call(
        http,
        server,
        "POST",
        "/api/v1/me/totp/confirm",
        json={"code": clock.next_code(totp)},
        token=token,
    )
    assert status == 200, me
    status, key = await call(
        http,
        server,
        "POST",
        "/api/v1/me/api-keys",
        json={
            "label": "w",
            "permissions": ["read", "withdraw"],
            "totpCode": clock.next_code(totp),
        },
        token=token,
    )
    assert status == 201, key
    return token, user, totp, key


def funding_rows(server: Server) -> dict[str, list[tuple[Any, ...]]]:
    conn = server.exchange.db.conn
    return {
        t: [tuple(r) for r in conn.execute(f"SELECT * FROM {t}")]
        for t in ("deposits", "withdrawals", "withdrawal_approvals", "withdrawal_addresses")
    }


def assert_conserved(server: Server, account: int, asset: int) -> None:
    """For the account and asset: engine balance == Σ ledger == deposits credited (ours) +
    refunds - withdrawals held (pending) or sent (and every ledger row of funding is one of
    this module's rows, by seq)."""
    funding = funding_of(server)
    ledger = server.runner.app[PROJECTIONS].ledger(account, asset, limit=1000, from_id=0)
    by_seq = {r.seq: r for r in ledger}
    conn = server.exchange.db.conn
    deposits = conn.execute(
        "SELECT seq, amount FROM deposits WHERE account = ? AND asset = ? AND status = 'CREDITED'",
        (account, asset),
    ).fetchall()
    withdrawals = [
        w for w in funding.withdrawals(limit=1000) if w.account == account and w.asset.id == asset
    ]
    for seq, amount in deposits:
        assert (by_seq[seq].reason, by_seq[seq].delta) == ("deposit", amount)
    held_or_sent = 0
    refunded = 0
    for w in withdrawals:
        if w.status in ("PENDING_APPROVAL", "SENT", "REJECTED"):
            assert w.withdraw_seq is not None
            assert (by_seq[w.withdraw_seq].reason, by_seq[w.withdraw_seq].delta) == (
                "withdrawal",
                -w.amount,
            )
        else:
            assert w.withdraw_seq is None, w
        if w.status in ("PENDING_APPROVAL", "SENT"):
            held_or_sent += w.amount
        if w.status == "REJECTED":
            assert w.refund_seq is not None
            assert (by_seq[w.refund_seq].reason, by_seq[w.refund_seq].delta) == (
                "deposit",
                w.amount,
            )
            refunded += w.amount
    funding_seqs = {seq for seq, _ in deposits} | {
        s for w in withdrawals for s in (w.withdraw_seq, w.refund_seq) if s is not None
    }
    assert {r.seq for r in ledger if r.reason in ("deposit", "withdrawal")} == funding_seqs
    total = (
        sum(d for _, d in deposits)
        - sum(w.amount for w in withdrawals if w.withdraw_seq)
        + refunded
    )
    trades = sum(r.delta for r in ledger if r.reason not in ("deposit", "withdrawal"))
    assert sum(r.delta for r in ledger) == engine_total(server, account, asset)
    assert total + trades == engine_total(server, account, asset)
    assert held_or_sent == sum(w.amount for w in withdrawals if w.withdraw_seq) - refunded


def test_deposits_whitelist_limits_approvals_rejection_and_conservation(tmp_path: Path) -> None:
    data_dir = tmp_path / "bourse"

    async def scenario() -> None:
        server = await start(config(data_dir, FUNDING_RULES))
        clock = Clock()
        server.runner.app[ACCOUNTS].clock_ms = clock
        try:
            async with aiohttp.ClientSession() as http:
                op1 = demo_operator_token(server)
                _, op2 = add_operator_offline(data_dir, "second-op", PASSWORD)
                session, user, totp, key = await setup_user(http, server, clock, "alice")
                uid, account = user["userId"], user["accountId"]
                status, _ = await call(
                    http,
                    server,
                    "PUT",
                    "/api/v1/me/anti-phishing",
                    json={"code": "Alice42"},
                    token=session,
                )
                assert status == 200

                async def op(
                    method: str, path: str, body: Any = None, token: str = op1
                ) -> tuple[int, Any]:
                    return await admin(http, server, method, path, token, body)

                async def withdraw(params: Mapping[str, Any]) -> tuple[int, Any]:
                    return await signed(
                        http, server, "POST", "/sapi/v1/capital/withdraw/apply", key, params
                    )

                # Deposits: credited once per tx_id.
                deposit = {"user_id": uid, "asset": "USDT", "amount": "10000", "tx_id": "chain:1"}
                status, first = await op("POST", "/deposits", deposit)
                assert (status, first["status"], first["duplicate"]) == (200, "CREDITED", False)
                status, again = await op("POST", "/deposits", deposit)
                assert status == 200
                assert again == {**first, "duplicate": True}
                for change, code in (
                    ({"amount": "10001"}, -1130),
                    ({"asset": "BTC", "amount": "1"}, -1130),
                ):
                    status, err = await op("POST", "/deposits", {**deposit, **change})
                    assert (status, err["code"]) == (409, code), err
                    assert "chain:1" in err["msg"]
                for bad, code in (
                    ({**deposit, "tx_id": "x y"}, -1130),
                    ({**deposit, "tx_id": "c2", "amount": "0"}, -4022),
                    ({**deposit, "tx_id": "c2", "amount": "1.000000001"}, -4021),
                    ({**deposit, "tx_id": "c2", "user_id": 9999}, -4039),
                    ({"account": 424242, "asset": "USDT", "amount": "1", "tx_id": "c2"}, -4039),
                    ({**deposit, "tx_id": "c2", "account": account}, -1130),
                    ({**deposit, "tx_id": "c2", "asset": "NOPE"}, -1130),
                ):
                    status, err = await op("POST", "/deposits", bad)
                    assert err["code"] == code, (bad, err)
                assert engine_total(server, account, USDT) == 10_000 * COIN
                assert len(funding_rows(server)["deposits"]) == 1
                status, hisrec = await signed(
                    http, server, "GET", "/sapi/v1/capital/deposit/hisrec", key, {"coin": "USDT"}
                )
                assert status == 200, hisrec
                assert [(d["txId"], d["amount"], d["status"]) for d in hisrec] == [
                    ("chain:1", "10000.00000000", 1)
                ]

                # The whitelist needs TOTP; errors change nothing.
                entry = {"asset": "USDT", "address": ADDRESS, "label": "cold wallet"}
                before = funding_rows(server)
                for body, status_code, code in (
                    (entry, 400, -1102),
                    ({**entry, "totp": "000000"}, 401, -1002),
                    ({**entry, "address": "short", "totp": "1"}, 400, -4033),
                    ({**entry, "asset": "NOPE", "totp": "1"}, 400, -4018),
                    ({**entry, "extra": 1}, 400, -1103),
                ):
                    status, err = await call(
                        http,
                        server,
                        "POST",
                        "/api/v1/me/withdrawal-addresses",
                        json=body,
                        token=session,
                    )
                    assert (status, err["code"]) == (status_code, code), (body, err)
                assert funding_rows(server) == before
                status, added = await call(
                    http,
                    server,
                    "POST",
                    "/api/v1/me/withdrawal-addresses",
                    json={**entry, "totp": clock.next_code(totp)},
                    token=session,
                )
                assert status == 201, added
                assert (added["coin"], added["address"]) == ("USDT", ADDRESS)
                status, listed = await call(
                    http, server, "GET", "/api/v1/me/withdrawal-addresses", token=session
                )
                assert [a["address"] for a in listed] == [ADDRESS]

                # Refused withdrawals: precise errors, nothing held, no row.
                before = funding_rows(server)
                base = {"coin": "USDT", "address": ADDRESS, "amount": "100"}
                for params, code in (
                    ({**base, "address": OTHER_ADDRESS}, -4035),
                    ({**base, "coin": "BTC"}, -4035),
                    ({**base, "coin": "NOPE"}, -4018),
                    ({**base, "amount": "0"}, -4022),
                    ({**base, "amount": "0.000000001"}, -4021),
                    ({**base, "amount": "1e3"}, -1130),
                    ({**base, "amount": "1600"}, -4023),  # tier 0: 1500 a day
                    ({**base, "network": "ETH"}, -1130),
                    ({**base, "addressTag": "7"}, -1104),
                    ({"coin": "USDT", "address": ADDRESS}, -1102),
                ):
                    status, err = await withdraw(params)
                    assert (status, err["code"]) == (400, code), (params, err)
                assert funding_rows(server) == before
                assert engine_total(server, account, USDT) == 10_000 * COIN
                status, err = await signed(
                    http,
                    server,
                    "POST",
                    "/sapi/v1/capital/withdraw/apply",
                    {**key, "secretKey": "x" * 64},
                    base,
                )
                assert (status, err["code"]) == (400, -1022)

                # Below the threshold: sent at once.
                status, sent = await withdraw({**base, "amount": "500", "withdrawOrderId": "w-1"})
                assert status == 200, sent
                assert engine_total(server, account, USDT) == 9_500 * COIN
                status, err = await withdraw({**base, "withdrawOrderId": "w-1"})
                assert (status, err["code"]) == (409, -1130)
                status, history = await signed(
                    http, server, "GET", "/sapi/v1/capital/withdraw/history", key, {"coin": "USDT"}
                )
                assert status == 200, history
                assert [
                    (h["id"], h["status"], h["amount"], h["withdrawOrderId"]) for h in history
                ] == [(sent["id"], 6, "500.00000000", "w-1")]
                assert len(history[0]["txId"]) == 64
                assert history[0]["transactionFee"] == "0"
                assert history[0]["applyTime"].count(":") == 2

                # The daily limit counts what was sent: 500 + 1200 > 1500 at tier 0.
                status, err = await withdraw({**base, "amount": "1200"})
                assert (status, err["code"]) == (400, -4023), err
                status, tiered = await op("PUT", f"/users/{uid}/tier", {"tier": 1})
                assert status == 200, tiered

                # Above the threshold: held, pending two approvals from distinct operators.
                status, pending = await withdraw({**base, "amount": "1200"})
                assert status == 200, pending
                wid = int(pending["id"])
                assert engine_total(server, account, USDT) == 8_300 * COIN
                status, rows = await op("GET", "/withdrawals?status=PENDING_APPROVAL")
                assert [(r["id"], r["amount"], r["approvals"]) for r in rows] == [
                    (wid, "1200.00000000", [])
                ]
                status, one = await op("POST", f"/withdrawals/{wid}/approve")
                assert (status, one["status"], one["approvals"]) == (
                    200,
                    "PENDING_APPROVAL",
                    ["demo-operator"],
                ), one
                status, err = await op("POST", f"/withdrawals/{wid}/approve")
                assert (status, err["code"]) == (409, -1130)
                assert "already approved" in err["msg"]
                status, two = await op("POST", f"/withdrawals/{wid}/approve", token=op2)
                assert (status, two["status"]) == (200, "SENT"), two
                assert two["approvals"] == ["demo-operator", "second-op"]
                assert two["tx_id"]
                status, err = await op("POST", f"/withdrawals/{wid}/reject", token=op2)
                assert (status, err["code"]) == (409, -1130)
                assert engine_total(server, account, USDT) == 8_300 * COIN

                # Rejection pays the held amount back (a deposit in the ledger).
                status, pending = await withdraw({**base, "amount": "2000"})
                assert status == 200, pending
                rid = int(pending["id"])
                assert engine_total(server, account, USDT) == 6_300 * COIN
                status, rejected = await op(
                    "POST", f"/withdrawals/{rid}/reject", {"reason": "suspicious"}, token=op2
                )
                assert (status, rejected["status"]) == (200, "REJECTED"), rejected
                assert "suspicious" in rejected["info"]
                assert engine_total(server, account, USDT) == 8_300 * COIN
                for action in ("approve", "reject"):
                    status, err = await op("POST", f"/withdrawals/{rid}/{action}")
                    assert (status, err["code"]) == (409, -1130)
                status, err = await op("POST", "/withdrawals/999999/approve")
                assert (status, err["code"]) == (404, -4029)
                status, history = await signed(
                    http, server, "GET", "/sapi/v1/capital/withdraw/history", key, {}
                )
                assert [h["status"] for h in history] == [3, 6, 6]
                status, only = await signed(
                    http, server, "GET", "/sapi/v1/capital/withdraw/history", key, {"status": 3}
                )
                assert [h["id"] for h in only] == [str(rid)]
                status, err = await signed(
                    http,
                    server,
                    "GET",
                    "/sapi/v1/capital/withdraw/history",
                    key,
                    {"startTime": 0, "endTime": 91 * 86_400_000},
                )
                assert (status, err["code"]) == (400, -4047)

                # The session door needs a TOTP code every time.
                body = {"coin": "USDT", "address": ADDRESS, "amount": "10"}
                before = funding_rows(server)
                for extra, status_code, code in (
                    ({}, 400, -1102),
                    ({"totp": "000000"}, 401, -1002),
                ):
                    status, err = await call(
                        http,
                        server,
                        "POST",
                        "/api/v1/me/withdrawals",
                        json={**body, **extra},
                        token=session,
                    )
                    assert (status, err["code"]) == (status_code, code), err
                assert funding_rows(server) == before
                status, via_session = await call(
                    http,
                    server,
                    "POST",
                    "/api/v1/me/withdrawals",
                    json={**body, "totp": clock.next_code(totp)},
                    token=session,
                )
                assert (status, via_session["status"]) == (201, 6), via_session
                assert engine_total(server, account, USDT) == 8_290 * COIN

                # Insufficient balance (limits allow it at tier 2): refused, nothing held.
                await op("PUT", f"/users/{uid}/tier", {"tier": 2})
                before = funding_rows(server)
                status, err = await withdraw({**base, "amount": "8290.00000001"})
                assert (status, err["code"]) == (400, -4026), err
                assert funding_rows(server) == before
                # A frozen user's withdraw key is refused.
                await op("POST", f"/users/{uid}/freeze")
                status, err = await withdraw(base)
                assert (status, err["code"]) == (401, -2015)
                await op("POST", f"/users/{uid}/unfreeze")
                assert funding_rows(server) == before

                # With a cool-down, a new address waits before it can be used.
                funding_of(server).settings.address_cooldown_s = 3 * 3600
                status, added = await call(
                    http,
                    server,
                    "POST",
                    "/api/v1/me/withdrawal-addresses",
                    json={**entry, "address": OTHER_ADDRESS, "totp": clock.next_code(totp)},
                    token=session,
                )
                assert status == 201, added
                before = funding_rows(server)
                status, err = await withdraw({**base, "address": OTHER_ADDRESS})
                assert (status, err["code"]) == (400, -4036), err
                assert "3 hours" in err["msg"]
                status, removed = await call(
                    http,
                    server,
                    "DELETE",
                    f"/api/v1/me/withdrawal-addresses/{added['id']}",
                    token=session,
                )
                assert (status, removed["address"]) == (200, OTHER_ADDRESS)
                status, err = await withdraw({**base, "address": OTHER_ADDRESS})
                assert (status, err["code"]) == (400, -4035), err
                assert funding_rows(server)["withdrawals"] == before["withdrawals"]

                # Every step was notified, with the anti-phishing code.
                status, notes = await call(
                    http, server, "GET", "/api/v1/me/notifications?limit=500", token=session
                )
                subjects = [n["subject"] for n in notes]
                for subject in (
                    "Deposit credited",
                    "Withdrawal address added",
                    "Withdrawal requested",
                    "Withdrawal approval",
                    "Withdrawal approved",
                    "Withdrawal sent",
                    "Withdrawal rejected",
                ):
                    assert subject in subjects, subject
                funding_notes = [
                    n for n in notes if n["subject"].startswith(("Withdrawal", "Deposit"))
                ]
                assert all("Anti-phishing code: Alice42" in n["body"] for n in funding_notes)

                # The ledger through the operator API, and money conservation.
                await server.exchange.feed.wait_for(server.node.stats()["applied_seq"])
                status, ledger = await op("GET", f"/users/{uid}/ledger?asset=USDT")
                assert [r["reason"] for r in ledger] == [
                    "deposit",
                    "withdrawal",
                    "withdrawal",
                    "withdrawal",
                    "deposit",
                    "withdrawal",
                ]
                assert ledger[-1]["free"] == usdt(8_290 * COIN)
                # The user sees the same ledger, paged; without a session, nothing.
                status, mine = await call(
                    http, server, "GET", "/api/v1/me/ledger?asset=USDT", token=session
                )
                assert (status, mine) == (200, ledger)
                status, page = await call(
                    http,
                    server,
                    "GET",
                    f"/api/v1/me/ledger?asset=USDT&limit=2&from_id={ledger[2]['id']}",
                    token=session,
                )
                assert (status, page) == (200, ledger[2:4])
                status, err = await call(http, server, "GET", "/api/v1/me/ledger", token="nope")
                assert (status, err["code"]) == (401, -1002)
                assert_conserved(server, account, USDT)
        finally:
            await server.stop()

    run(scenario)


def test_crash_recovery_protocol(tmp_path: Path) -> None:
    """A Withdraw applied without its acknowledgement being handled is settled by the feed;
    rows left in their intent state across a restart are finished exactly once."""
    data_dir = tmp_path / "bourse"

    async def scenario() -> None:
        server = await start(config(data_dir, FUNDING_RULES))
        clock = Clock()
        server.runner.app[ACCOUNTS].clock_ms = clock
        try:
            async with aiohttp.ClientSession() as http:
                op1 = demo_operator_token(server)
                _session, user, _totp, _key = await setup_user(http, server, clock, "bob")
                uid, account = user["userId"], user["accountId"]
                status, _ = await admin(
                    http,
                    server,
                    "POST",
                    "/deposits",
                    op1,
                    {"user_id": uid, "asset": "USDT", "amount": "5000", "tx_id": "t-1"},
                )
                assert status == 200
                # Step 4: the row is written, the command applied, the acknowledgement lost
                # (submitted here directly): the event feed settles the row.
                funding = funding_of(server)
                db = server.exchange.db
                now = funding.clock_ms()
                with db.transaction() as conn:
                    cursor = conn.execute(
                        "INSERT INTO withdrawals (user_id, account, asset, amount, address, "
                        "network, status, needs_approval, created_ms, updated_ms) "
                        "VALUES (?, ?, ?, ?, ?, 'USDT', 'REQUESTED', 1, ?, ?)",
                        (uid, account, USDT, 3000 * COIN, ADDRESS, now, now),
                    )
                wid = cursor.lastrowid
                assert wid is not None
                ack = await server.exchange.bridge.submit(
                    Withdraw(account=account, asset=USDT, amount=3000 * COIN),
                    source=WITHDRAWAL_SOURCE,
                    reference=wid,
                )
                await server.exchange.feed.wait_for(ack.seq)
                settled = funding.withdrawal(wid)
                assert settled is not None
                assert (settled.status, settled.withdraw_seq) == ("PENDING_APPROVAL", ack.seq)
                # Step 5 at the next start: a rejection whose refund never ran, a withdrawal
                # that never reached the engine, a deposit never applied.
                with db.transaction() as conn:
                    conn.execute(
                        "UPDATE withdrawals SET status = 'REJECTING', info = 'rejected' "
                        "WHERE id = ?",
                        (wid,),
                    )
                    lost = conn.execute(
                        "INSERT INTO withdrawals (user_id, account, asset, amount, address, "
                        "network, status, needs_approval, created_ms, updated_ms) "
                        "VALUES (?, ?, ?, ?, ?, 'USDT', 'REQUESTED', 0, ?, ?)",
                        (uid, account, USDT, 10 * COIN, ADDRESS, now, now),
                    ).lastrowid
                    assert lost is not None
                    conn.execute(
                        "INSERT INTO deposits (tx_id, account, user_id, asset, amount, status, "
                        "operator, created_ms) VALUES ('t-2', ?, ?, ?, ?, 'PENDING', 'x', ?)",
                        (account, uid, USDT, 7 * COIN, now),
                    )
                assert engine_total(server, account, USDT) == 2000 * COIN
        finally:
            await server.stop()

        # Rows are as the crash left them; restart twice: finished once.
        for _ in range(2):
            server = await start(config(data_dir, FUNDING_RULES))
            try:
                funding = funding_of(server)
                refunded = funding.withdrawal(wid)
                failed = funding.withdrawal(lost)
                assert refunded is not None
                assert failed is not None
                assert (refunded.status, refunded.refund_seq is not None) == ("REJECTED", True)
                assert (failed.status, failed.withdraw_seq) == ("FAILED", None)
                credited = funding.deposit_by_tx("t-2")
                assert credited is not None
                assert credited.status == "CREDITED"
                assert engine_total(server, account, USDT) == (5000 + 7) * COIN
                await server.exchange.feed.wait_for(server.node.stats()["applied_seq"])
                assert_conserved(server, account, USDT)
            finally:
                await server.stop()
        conn = sqlite3.connect(data_dir / FILE_NAME)
        try:
            assert conn.execute("SELECT COUNT(*) FROM withdrawals").fetchone()[0] == 2
        finally:
            conn.close()

    run(scenario)


def test_races_and_hostile_input_on_the_money_paths(tmp_path: Path) -> None:
    """Concurrent requests on the money paths, and input the security review found answered
    with a 500 or accepted wrongly (regressions): the same deposit tx_id sent many times at
    once credits once; withdrawals racing the daily limit never exceed it together; the
    same operator approving twice at once counts once, and two operators at once send once;
    a trailing newline in an address or a withdrawOrderId is refused; ids beyond SQLite's
    INTEGER are -1100. Every refusal changes nothing."""
    data_dir = tmp_path / "bourse"

    async def scenario() -> None:
        server = await start(config(data_dir, FUNDING_RULES))
        clock = Clock()
        server.runner.app[ACCOUNTS].clock_ms = clock
        try:
            async with aiohttp.ClientSession() as http:
                op1 = demo_operator_token(server)
                _, op2 = add_operator_offline(data_dir, "second-op", PASSWORD)
                session, user, totp, key = await setup_user(http, server, clock, "mallory")
                uid, account = user["userId"], user["accountId"]

                # The same deposit ten times at once: one credit, nine duplicates.
                deposit = {"user_id": uid, "asset": "USDT", "amount": "10000", "tx_id": "race:1"}
                answers = await asyncio.gather(
                    *(admin(http, server, "POST", "/deposits", op1, deposit) for _ in range(10))
                )
                assert all(status == 200 for status, _ in answers), answers
                assert sorted(body["duplicate"] for _, body in answers) == [False] + [True] * 9
                assert len({body["id"] for _, body in answers}) == 1
                assert engine_total(server, account, USDT) == 10_000 * COIN
                assert len(funding_rows(server)["deposits"]) == 1

                status, added = await call(
                    http,
                    server,
                    "POST",
                    "/api/v1/me/withdrawal-addresses",
                    json={"asset": "USDT", "address": ADDRESS, "totp": clock.next_code(totp)},
                    token=session,
                )
                assert status == 201, added

                # Hostile input: precise errors, no row, nothing held.
                before = funding_rows(server)
                status, err = await call(
                    http,
                    server,
                    "POST",
                    "/api/v1/me/withdrawal-addresses",
                    json={"asset": "USDT", "address": OTHER_ADDRESS + "\n", "totp": "123456"},
                    token=session,
                )
                assert (status, err["code"]) == (400, -4033), err
                status, err = await call(
                    http,
                    server,
                    "DELETE",
                    "/api/v1/me/withdrawal-addresses/9999999999999999999",
                    token=session,
                )
                assert (status, err["code"]) == (400, -1100), err
                base = {"coin": "USDT", "address": ADDRESS, "amount": "100"}
                status, err = await signed(
                    http,
                    server,
                    "POST",
                    "/sapi/v1/capital/withdraw/apply",
                    key,
                    {**base, "withdrawOrderId": "w-1\n"},
                )
                assert (status, err["code"]) == (400, -1130), err
                huge = "9999999999999999999"
                for path, params in (
                    ("/sapi/v1/capital/withdraw/history", {"offset": huge}),
                    ("/sapi/v1/capital/deposit/hisrec", {"offset": huge}),
                    (
                        "/sapi/v1/capital/withdraw/history",
                        {"startTime": "9223372036854775808", "endTime": "9223372036854775809"},
                    ),
                ):
                    status, err = await signed(http, server, "GET", path, key, params)
                    assert (status, err["code"]) == (400, -1100), (path, params, err)
                assert funding_rows(server) == before
                assert engine_total(server, account, USDT) == 10_000 * COIN

                # Eight withdrawals of 400 at once against tier 0's 1500 a day (all below the
                # approval threshold): three go through, the others are refused with -4023.
                answers = await asyncio.gather(
                    *(
                        signed(
                            http,
                            server,
                            "POST",
                            "/sapi/v1/capital/withdraw/apply",
                            key,
                            {**base, "amount": "400"},
                        )
                        for _ in range(8)
                    )
                )
                accepted = [body for status, body in answers if status == 200]
                refused = [body["code"] for status, body in answers if status != 200]
                assert len(accepted) == 3, answers
                assert refused == [-4023] * 5, answers
                assert engine_total(server, account, USDT) == (10_000 - 1_200) * COIN
                await server.exchange.feed.wait_for(server.node.stats()["applied_seq"])
                assert_conserved(server, account, USDT)

                # Approvals racing: the same operator twice at once counts once; then two
                # operators at once: the withdrawal is sent once.
                status, _ = await admin(http, server, "PUT", f"/users/{uid}/tier", op1, {"tier": 1})
                assert status == 200
                status, pending = await signed(
                    http,
                    server,
                    "POST",
                    "/sapi/v1/capital/withdraw/apply",
                    key,
                    {**base, "amount": "2000"},
                )
                assert status == 200, pending
                first = int(pending["id"])
                approve = f"/withdrawals/{first}/approve"
                twice = await asyncio.gather(
                    admin(http, server, "POST", approve, op1),
                    admin(http, server, "POST", approve, op1),
                )
                assert sorted(status for status, _ in twice) == [200, 409], twice
                once = funding_of(server).withdrawal(first)
                assert once is not None
                assert once.approvals == ("demo-operator",)
                status, pending = await signed(
                    http,
                    server,
                    "POST",
                    "/sapi/v1/capital/withdraw/apply",
                    key,
                    {**base, "amount": "3000"},
                )
                assert status == 200, pending
                second = int(pending["id"])
                approve = f"/withdrawals/{second}/approve"
                both = await asyncio.gather(
                    admin(http, server, "POST", approve, op1),
                    admin(http, server, "POST", approve, op2),
                )
                assert [status for status, _ in both] == [200, 200], both
                assert sorted(body["status"] for _, body in both) == ["PENDING_APPROVAL", "SENT"]
                sent = funding_of(server).withdrawal(second)
                assert sent is not None
                assert sent.status == "SENT"
                assert sent.tx_id is not None
                # An approval racing a rejection: exactly one of them wins.
                duel = await asyncio.gather(
                    admin(http, server, "POST", f"/withdrawals/{first}/reject", op2),
                    admin(http, server, "POST", f"/withdrawals/{first}/approve", op2),
                )
                assert sorted(status for status, _ in duel) == [200, 409], duel
                assert (
                    engine_total(server, account, USDT)
                    + sum(
                        w.amount
                        for w in funding_of(server).withdrawals(user_id=uid)
                        if w.status == "SENT"
                    )
                    == 10_000 * COIN
                )
                await server.exchange.feed.wait_for(server.node.stats()["applied_seq"])
                assert_conserved(server, account, USDT)
        finally:
            await server.stop()

    run(scenario)
