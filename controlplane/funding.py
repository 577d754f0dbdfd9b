"""Deposits and withdrawals: the chain simulator's credits, whitelisted addresses, daily limits
by verification tier, N-of-M operator approval, and crash-safe money movement.

There is no blockchain. A *deposit* is an operator (or a test) telling the exchange that a
chain transaction ``tx_id`` paid ``amount`` of an asset to a user
(``POST /admin/v1/deposits``); a *sent* withdrawal is handed to the simulated chain, which
answers at once with a random 32-byte transaction id. Everything before that point is real:
the engine moves the money, through the sequencer, journaled.

Holding a withdrawal's funds: the engine has no hold primitive, so a withdrawal submits
``Withdraw`` to the engine **when it is requested**: the amount leaves the user's engine
balance at once and sits in the withdrawal's pending state (this table). If operators reject
it, the control plane pays it back with a ``Deposit`` of the same amount. So the projections'
ledger shows a ``withdrawal`` row at the request and, for a rejected one, a ``deposit`` row
later; both carry the command's seq, which this module records (``withdraw_seq``,
``refund_seq``), so every ledger row of a withdrawal is accounted for here.

Withdrawal states (``withdrawals.status``)::

    REQUESTED ──engine accepted──► PENDING_APPROVAL ──N approvals──► SENT
        │   └──(at or below the threshold)──────────────────────────► SENT
        ├──engine refused──► (row deleted: nothing happened)
        └──never reached the engine (found at restart)──► FAILED
    PENDING_APPROVAL ──any operator rejects──► REJECTING ──refund applied──► REJECTED

``APPROVED`` is the state between the last approval and the chain's answer; with the
simulator both happen in one step, so it is never stored. A withdrawal at or below the
threshold passes through ``PENDING_APPROVAL`` (one transaction) on its way to ``SENT`` (the
next); a crash in between is finished by recovery (step 5), as is a withdrawal that got its
last approval but was not sent.

Crash safety (never lose or double money). Every engine command of this module is submitted
with an :class:`~controlplane.messages.Origin`: ``source`` one of :data:`DEPOSIT_SOURCE`,
:data:`WITHDRAWAL_SOURCE`, :data:`REFUND_SOURCE` and ``reference`` the row's id, so the
journal itself says which row a command belongs to. The protocol:

1. Write the row first, committed, in its *intent* state (deposit ``PENDING``, withdrawal
   ``REQUESTED``, rejection ``REJECTING``).
2. Submit the command with its origin.
3. On the acknowledgement, move the row on (``CREDITED`` / ``PENDING_APPROVAL`` or ``SENT`` /
   ``REJECTED``) and record the command's seq. The move is idempotent (it applies only to a
   row still in its intent state).
4. This module also consumes the event feed (from its own persisted cursor,
   ``funding_cursor``): every entry whose origin is one of its sources makes the same move as
   step 3. A crash between 2 and 3 is therefore repaired on restart, when the feed replays
   the entry.
5. At start, after the feed has caught up with everything the node recovered, a row still in
   its intent state was never applied: a deposit or a refund is submitted again (the money
   must arrive), a withdrawal becomes ``FAILED`` (the user asked, nothing moved; they are
   notified). Nothing else ever resubmits, so nothing is applied twice.

This relies on the node's durability: with ``durability = "none"`` an acknowledged command
can be lost in a crash while this database remembers it.

Rules: the address must be on the user's whitelist for the asset (added with a TOTP code,
usable after ``funding.address_cooldown_s``); the amount must be positive and fit the asset's
decimals; the sum of the user's non-rejected withdrawals of the asset in the last 24 hours
plus this one must not exceed the limit of the user's verification tier (0, 1, 2; table
``verification_tiers``, default 0); a withdrawal of more than ``approval_threshold`` needs
``approvals_required`` distinct operators (N of M: any N of the ``admin`` operators; one
operator cannot approve twice; any operator can reject; with fewer than N operators such a
withdrawal can only be rejected). Requests, approvals, sending and rejections
are notified to the user (:meth:`controlplane.accounts.Accounts.notify`, which adds the
anti-phishing code).

Errors are :class:`~controlplane.api.errors.ApiError` with Binance's wallet codes (``-40xx``)
where Binance has one. Every check runs before anything is written.

Complexity: every operation is O(log n) indexed queries plus one engine command; the daily
limit sums the user's withdrawals of one asset in the window (index on user, asset, time);
the feed consumer is O(batch) and writes only for its own entries (its cursor at most every
:data:`CURSOR_EVERY` seqs otherwise).
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web

from controlplane import Node, NodeBusy
from controlplane.accounts import Accounts, User
from controlplane.api.errors import (
    INVALID_PARAMETER,
    SERVER_BUSY,
    TIMEOUT,
    UNAUTHORIZED,
    UNKNOWN,
    ApiError,
    mandatory,
)
from controlplane.bridge import EngineBridge, EventFeed
from controlplane.config import VERIFICATION_TIERS, FundingSection
from controlplane.db import Database
from controlplane.listing import U64_MAX, Asset, DecimalError, Listing, fmt, parse_decimal
from controlplane.messages import Ack, Command, Deposit, Entry, Rejected, Withdraw
from controlplane.operators import Operator

log = logging.getLogger("bourse.funding")

SOURCE_BASE = 1 << 62
"""Origin sources of the funding service (far above any API key id, the gateway's sources)."""
DEPOSIT_SOURCE = SOURCE_BASE + 1
WITHDRAWAL_SOURCE = SOURCE_BASE + 2
REFUND_SOURCE = SOURCE_BASE + 3
SOURCES = (DEPOSIT_SOURCE, WITHDRAWAL_SOURCE, REFUND_SOURCE)
CURSOR_EVERY = 10_000
DAY_MS = 86_400_000

# Binance's wallet error codes.
CAPITAL_WITHDRAW_2FA_VERIFY = -4013
CAPITAL_WITHDRAW_RESTRICTED = -4015
CAPITAL_WITHDRAW_ASSET_NOT_EXIST = -4018
CAPITAL_WITHDRAW_AMOUNT_MULTIPLE = -4021
CAPITAL_WITHDRAW_MIN_AMOUNT = -4022
CAPITAL_WITHDRAW_MAX_AMOUNT = -4023
CAPITAL_WITHDRAW_USER_ASSET_NOT_ENOUGH = -4026
CAPITAL_WITHDRAW_NOT_EXIST = -4029
CAPITAL_WITHDRAW_ILLEGAL_ADDRESS = -4033
CAPITAL_WITHDRAW_NOT_WHITE_ADDRESS = -4035
CAPITAL_WITHDRAW_NEW_ADDRESS = -4036
CAPITAL_USER_EMPTY = -4039

ADDRESS = re.compile(r"^[A-Za-z0-9]{8,128}\Z")
TX_ID = re.compile(r"^[A-Za-z0-9:_.-]{1,128}\Z")
WITHDRAW_ORDER_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}\Z")
LABEL_MAX = 64
MAX_ADDRESSES = 200

WithdrawalStatus = Literal[
    "REQUESTED", "PENDING_APPROVAL", "APPROVED", "SENT", "REJECTING", "REJECTED", "FAILED"
]
NOT_COUNTED = ("REJECTING", "REJECTED", "FAILED")
"""Withdrawals that do not count against the daily limit."""
BINANCE_WITHDRAW_STATUS = {
    "REQUESTED": 4,  # Processing
    "PENDING_APPROVAL": 2,  # Awaiting Approval
    "APPROVED": 4,
    "SENT": 6,  # Completed
    "REJECTING": 3,  # Rejected
    "REJECTED": 3,
    "FAILED": 5,  # Failure
}
DepositStatus = Literal["PENDING", "CREDITED"]
BINANCE_DEPOSIT_STATUS: dict[DepositStatus, int] = {"PENDING": 0, "CREDITED": 1}

SCHEMA = [
    [
        """CREATE TABLE funding_cursor (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            seq INTEGER NOT NULL
        )""",
        """CREATE TABLE verification_tiers (
            user_id INTEGER PRIMARY KEY REFERENCES users (id),
            tier INTEGER NOT NULL,
            updated_ms INTEGER NOT NULL
        )""",
        """CREATE TABLE withdrawal_addresses (
            id INTEGER PRIMARY KEY,
            user_id INTEGER NOT NULL REFERENCES users (id),
            asset INTEGER NOT NULL,
            address TEXT NOT NULL,
            label TEXT NOT NULL,
            created_ms INTEGER NOT NULL,
            usable_ms INTEGER NOT NULL,
            UNIQUE (user_id, asset, address)
        )""",
        """CREATE TABLE deposits (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            tx_id TEXT NOT NULL UNIQUE,
            account INTEGER NOT NULL,
            user_id INTEGER,
            asset INTEGER NOT NULL,
            amount INTEGER NOT NULL,
            status TEXT NOT NULL,
            seq INTEGER,
            operator TEXT NOT NULL,
            created_ms INTEGER NOT NULL,
            credited_ms INTEGER
        )""",
        "CREATE INDEX deposits_by_account ON deposits (account, id)",
        """CREATE TABLE withdrawals (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            user_id INTEGER NOT NULL REFERENCES users (id),
            account INTEGER NOT NULL,
            asset INTEGER NOT NULL,
            amount INTEGER NOT NULL,
            address TEXT NOT NULL,
            network TEXT NOT NULL,
            withdraw_order_id TEXT,
            status TEXT NOT NULL,
            needs_approval INTEGER NOT NULL,
            withdraw_seq INTEGER,
            refund_seq INTEGER,
            tx_id TEXT,
            info TEXT NOT NULL DEFAULT '',
            created_ms INTEGER NOT NULL,
            updated_ms INTEGER NOT NULL,
            UNIQUE (user_id, withdraw_order_id)
        )""",
        "CREATE INDEX withdrawals_by_user ON withdrawals (user_id, asset, created_ms)",
        "CREATE INDEX withdrawals_by_status ON withdrawals (status, id)",
        """CREATE TABLE withdrawal_approvals (
            withdrawal_id INTEGER NOT NULL REFERENCES withdrawals (id),
            operator_id INTEGER NOT NULL,
            operator TEXT NOT NULL,
            time_ms INTEGER NOT NULL,
            PRIMARY KEY (withdrawal_id, operator_id)
        )""",
    ]
]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def invalid(msg: str, status: int = 400) -> ApiError:
    return ApiError(INVALID_PARAMETER, msg, status)


def busy() -> ApiError:
    """The node's ring stayed full: nothing was submitted, nothing changed."""
    return ApiError(SERVER_BUSY, "The exchange is busy; nothing was changed. Try again.", 503)


def conflict(msg: str) -> ApiError:
    """A request that contradicts the current state (HTTP 409)."""
    return ApiError(INVALID_PARAMETER, msg, 409)


@dataclass(frozen=True)
class WithdrawalAddress:
    id: int
    user_id: int
    asset: Asset
    address: str
    label: str
    created_ms: int
    usable_ms: int


@dataclass(frozen=True)
class DepositRecord:
    id: int
    tx_id: str
    account: int
    user_id: int | None
    asset: Asset
    amount: int
    status: DepositStatus
    seq: int | None
    operator: str
    created_ms: int
    credited_ms: int | None

    def same_content(self, account: int, asset: Asset, amount: int) -> bool:
        return (self.account, self.asset.id, self.amount) == (account, asset.id, amount)


@dataclass(frozen=True)
class Withdrawal:
    id: int
    user_id: int
    account: int
    asset: Asset
    amount: int
    address: str
    network: str
    withdraw_order_id: str | None
    status: WithdrawalStatus
    needs_approval: bool
    withdraw_seq: int | None
    refund_seq: int | None
    tx_id: str | None
    info: str
    created_ms: int
    updated_ms: int
    approvals: tuple[str, ...]
    """The names of the operators who approved it, in order."""

    @property
    def amount_str(self) -> str:
        return fmt(self.amount, self.asset.decimals, self.asset.decimals)


def parse_amount(text: str, asset: Asset, name: str = "amount") -> int:
    """A positive decimal amount in atoms of ``asset`` (Binance wallet errors otherwise)."""
    if not text:
        raise mandatory(name)
    try:
        atoms = parse_decimal(text, asset.decimals)
    except DecimalError as err:
        if "decimals" in str(err):
            step = fmt(1, asset.decimals, asset.decimals)
            raise ApiError(
                CAPITAL_WITHDRAW_AMOUNT_MULTIPLE,
                f"The {name} must be a multiple of {step} {asset.name}.",
            ) from None
        raise invalid(f"Data sent for parameter '{name}' is not valid: {text!r}.") from None
    if atoms == 0:
        step = fmt(1, asset.decimals, asset.decimals)
        raise ApiError(
            CAPITAL_WITHDRAW_MIN_AMOUNT, f"The {name} must be at least {step} {asset.name}."
        )
    if atoms > U64_MAX:
        raise invalid(f"Data sent for parameter '{name}' is not valid: too large.")
    return atoms


class Funding:
    """The funding service (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        bridge: EngineBridge,
        node: Node,
        listing: Listing,
        accounts: Accounts,
        settings: FundingSection,
        *,
        clock_ms: Callable[[], int] = now_ms,
    ) -> None:
        self.db = db
        self.bridge = bridge
        self.node = node
        self.listing = listing
        self.accounts = accounts
        self.settings = settings
        self.clock_ms = clock_ms
        self._deposits_in_flight: dict[int, asyncio.Future[DepositRecord]] = {}
        db.migrate("funding", SCHEMA)
        row = db.conn.execute("SELECT seq FROM funding_cursor WHERE id = 1").fetchone()
        if row is None:
            # Nothing of this module can be in the log before its tables existed.
            start = node.stats()["applied_seq"]
            with db.transaction() as conn:
                conn.execute("INSERT INTO funding_cursor (id, seq) VALUES (1, ?)", (start,))
            self._cursor = start
        else:
            self._cursor = int(row[0])
        self._persisted_cursor = self._cursor

    # --- the rules ------------------------------------------------------------------------

    def _rule(self, table: dict[str, str], asset: Asset) -> int:
        text = table.get(asset.name, table.get("*", "0"))
        try:
            return parse_decimal(text, asset.decimals)
        except DecimalError:
            # Finer than the asset: round down to its atoms (a limit, never money moved).
            whole, _, fraction = text.partition(".")
            return parse_decimal(f"{whole}.{fraction[: asset.decimals]}", asset.decimals)

    def approval_threshold(self, asset: Asset) -> int:
        """Atoms: a withdrawal of more than this needs approval."""
        return self._rule(self.settings.approval_threshold, asset)

    def daily_limit(self, tier: int, asset: Asset) -> int:
        """Atoms: the most a user of ``tier`` may withdraw of ``asset`` in 24 hours."""
        return self._rule(self.settings.daily_withdrawal_limits.get(str(tier), {}), asset)

    def tier(self, user_id: int) -> int:
        row = self.db.conn.execute(
            "SELECT tier FROM verification_tiers WHERE user_id = ?", (user_id,)
        ).fetchone()
        return 0 if row is None else int(row[0])

    def set_tier(self, user: User, tier: int) -> int:
        if str(tier) not in VERIFICATION_TIERS:
            tiers = ", ".join(VERIFICATION_TIERS)
            raise invalid(f"Data sent for parameter 'tier' is not valid: one of {tiers}.")
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO verification_tiers (user_id, tier, updated_ms) VALUES (?, ?, ?) "
                "ON CONFLICT (user_id) DO UPDATE SET tier = excluded.tier, "
                "updated_ms = excluded.updated_ms",
                (user.id, tier, self.clock_ms()),
            )
        self.accounts.notify(
            user, "Verification level changed", f"Your verification tier is now {tier}."
        )
        return tier

    def asset_named(self, name: str, parameter: str = "coin") -> Asset:
        if not name:
            raise mandatory(parameter)
        asset = self.listing.assets_by_name.get(name)
        if asset is None:
            raise ApiError(CAPITAL_WITHDRAW_ASSET_NOT_EXIST, f"The asset {name!r} does not exist.")
        return asset

    def _check_totp(self, user: User, code: str | None) -> None:
        """The user's TOTP code (checks before it: it is used up when accepted)."""
        if not user.totp_enabled:
            raise ApiError(
                CAPITAL_WITHDRAW_2FA_VERIFY, "Two-factor authentication must be enabled."
            )
        if not code:
            raise mandatory("totp")
        if not self.accounts.verify_totp(user, code):
            raise ApiError(UNAUTHORIZED, "Invalid or already used two-factor code.", 401)

    # --- withdrawal addresses -------------------------------------------------------------

    def _address_from(self, r: sqlite3.Row) -> WithdrawalAddress:
        return WithdrawalAddress(
            r["id"],
            r["user_id"],
            self.listing.assets[r["asset"]],
            r["address"],
            r["label"],
            r["created_ms"],
            r["usable_ms"],
        )

    def addresses(self, user: User) -> list[WithdrawalAddress]:
        rows = self.db.conn.execute(
            "SELECT * FROM withdrawal_addresses WHERE user_id = ? ORDER BY id", (user.id,)
        ).fetchall()
        return [self._address_from(r) for r in rows]

    def add_address(
        self, user: User, coin: str, address: str, label: str, totp: str | None
    ) -> WithdrawalAddress:
        """Whitelist an address for an asset (needs a TOTP code)."""
        asset = self.asset_named(coin)
        if not ADDRESS.match(address):
            raise ApiError(
                CAPITAL_WITHDRAW_ILLEGAL_ADDRESS,
                "Illegal address: 8 to 128 letters or digits.",
            )
        if len(label) > LABEL_MAX or not label.isprintable():
            raise invalid(
                f"Data sent for parameter 'label' is not valid: at most {LABEL_MAX} printable "
                "characters."
            )
        existing = self.db.conn.execute(
            "SELECT COUNT(*), SUM(asset = ? AND address = ?) FROM withdrawal_addresses "
            "WHERE user_id = ?",
            (asset.id, address, user.id),
        ).fetchone()
        if existing[1]:
            raise conflict("The address is already on the whitelist for this asset.")
        if existing[0] >= MAX_ADDRESSES:
            raise invalid(f"At most {MAX_ADDRESSES} whitelisted addresses.")
        self._check_totp(user, totp)
        created = self.clock_ms()
        usable = created + self.settings.address_cooldown_s * 1000
        with self.db.transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO withdrawal_addresses (user_id, asset, address, label, created_ms, "
                "usable_ms) VALUES (?, ?, ?, ?, ?, ?)",
                (user.id, asset.id, address, label, created, usable),
            )
        self.accounts.notify(
            user,
            "Withdrawal address added",
            f"{address} ({label or 'no label'}) was added to your {asset.name} withdrawal "
            "whitelist.",
        )
        row = self.db.conn.execute(
            "SELECT * FROM withdrawal_addresses WHERE id = ?", (cursor.lastrowid,)
        ).fetchone()
        return self._address_from(row)

    def remove_address(self, user: User, address_id: int) -> WithdrawalAddress:
        row = self.db.conn.execute(
            "SELECT * FROM withdrawal_addresses WHERE id = ? AND user_id = ?",
            (address_id, user.id),
        ).fetchone()
        if row is None:
            raise invalid("Unknown withdrawal address id.")
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM withdrawal_addresses WHERE id = ?", (address_id,))
        removed = self._address_from(row)
        self.accounts.notify(
            user,
            "Withdrawal address removed",
            f"{removed.address} was removed from your {removed.asset.name} withdrawal whitelist.",
        )
        return removed

    # --- deposits -------------------------------------------------------------------------

    def _deposit_from(self, r: sqlite3.Row) -> DepositRecord:
        return DepositRecord(
            id=r["id"],
            tx_id=r["tx_id"],
            account=r["account"],
            user_id=r["user_id"],
            asset=self.listing.assets[r["asset"]],
            amount=r["amount"],
            status=r["status"],
            seq=r["seq"],
            operator=r["operator"],
            created_ms=r["created_ms"],
            credited_ms=r["credited_ms"],
        )

    def deposit_by_id(self, deposit_id: int) -> DepositRecord | None:
        row = self.db.conn.execute("SELECT * FROM deposits WHERE id = ?", (deposit_id,)).fetchone()
        return None if row is None else self._deposit_from(row)

    def deposit_by_tx(self, tx_id: str) -> DepositRecord | None:
        row = self.db.conn.execute("SELECT * FROM deposits WHERE tx_id = ?", (tx_id,)).fetchone()
        return None if row is None else self._deposit_from(row)

    def deposits(
        self,
        *,
        account: int | None = None,
        asset: Asset | None = None,
        status: DepositStatus | None = None,
        tx_id: str | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        offset: int = 0,
        limit: int = 1000,
    ) -> list[DepositRecord]:
        """Deposits, newest first."""
        equal = {
            "account": account,
            "asset": None if asset is None else asset.id,
            "status": status,
            "tx_id": tx_id,
        }
        rows = self._history("deposits", equal, None, start_ms, end_ms, offset, limit)
        return [self._deposit_from(r) for r in rows]

    def _history(
        self,
        table: Literal["deposits", "withdrawals"],
        equal: Mapping[str, object],
        statuses: Sequence[str] | None,
        start_ms: int | None,
        end_ms: int | None,
        offset: int,
        limit: int,
    ) -> list[sqlite3.Row]:
        """A page of ``table``'s rows, newest first: the columns in ``equal`` that are not
        None must match, ``status`` must be one of ``statuses`` (if given), and
        ``created_ms`` must be within ``[start_ms, end_ms]``. Column names are this module's
        constants, never input."""
        sql, args = f"SELECT * FROM {table} WHERE 1 = 1", []
        for column, value in equal.items():
            if value is not None:
                sql += f" AND {column} = ?"
                args.append(value)
        if statuses is not None:
            sql += f" AND status IN ({', '.join('?' for _ in statuses)})"
            args.extend(statuses)
        if start_ms is not None:
            sql += " AND created_ms >= ?"
            args.append(start_ms)
        if end_ms is not None:
            sql += " AND created_ms <= ?"
            args.append(end_ms)
        sql += " ORDER BY id DESC LIMIT ? OFFSET ?"
        return self.db.conn.execute(sql, (*args, limit, offset)).fetchall()

    async def deposit(
        self,
        *,
        account: int,
        user: User | None,
        asset: Asset,
        amount: int,
        tx_id: str,
        operator: str,
    ) -> tuple[DepositRecord, bool]:
        """Credit a chain deposit, idempotent by ``tx_id``: ``(deposit, created_now)``. The
        same ``tx_id`` with other content is a 409 error."""
        if not TX_ID.match(tx_id):
            raise invalid(
                "Data sent for parameter 'tx_id' is not valid: 1 to 128 characters from "
                "A-Z, a-z, 0-9, ':', '_', '.', '-'."
            )
        existing = self.deposit_by_tx(tx_id)
        if existing is not None:
            if not existing.same_content(account, asset, amount):
                raise conflict(
                    f"tx_id {tx_id!r} was already credited with other content (deposit "
                    f"{existing.id}: account {existing.account}, {existing.asset.name} "
                    f"{fmt(existing.amount, existing.asset.decimals, existing.asset.decimals)})."
                )
            in_flight = self._deposits_in_flight.get(existing.id)
            if in_flight is not None:
                return await asyncio.shield(in_flight), False
            return existing, False
        if self.node.balance(account, asset.id) is None:
            raise ApiError(CAPITAL_USER_EMPTY, f"The account {account} does not exist.")
        with self.db.transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO deposits (tx_id, account, user_id, asset, amount, status, operator, "
                "created_ms) VALUES (?, ?, ?, ?, ?, 'PENDING', ?, ?)",
                (
                    tx_id,
                    account,
                    None if user is None else user.id,
                    asset.id,
                    amount,
                    operator,
                    self.clock_ms(),
                ),
            )
        deposit_id = cursor.lastrowid
        assert deposit_id is not None
        future: asyncio.Future[DepositRecord] = asyncio.get_running_loop().create_future()
        self._deposits_in_flight[deposit_id] = future
        try:
            record = await self._submit_deposit(deposit_id, account, asset, amount)
        except BaseException as err:
            future.set_exception(err)
            future.exception()  # retrieved: no "never retrieved" warning without waiters
            raise
        finally:
            del self._deposits_in_flight[deposit_id]
        future.set_result(record)
        return record, True

    async def _submit_deposit(
        self, deposit_id: int, account: int, asset: Asset, amount: int
    ) -> DepositRecord:
        command = Deposit(account=account, asset=asset.id, amount=amount)
        try:
            ack = await self._submit(command, DEPOSIT_SOURCE, deposit_id)
        except NodeBusy:
            with self.db.transaction() as conn:
                conn.execute(
                    "DELETE FROM deposits WHERE id = ? AND status = 'PENDING'", (deposit_id,)
                )
            raise busy() from None
        rejected = ack.rejection()
        self._settle_deposit(deposit_id, ack.seq, None if rejected is None else rejected.reason)
        if rejected is not None:
            raise invalid(f"The engine refused the deposit: {rejected.reason}.")
        record = self.deposit_by_id(deposit_id)
        assert record is not None
        return record

    def _settle_deposit(self, deposit_id: int, seq: int, rejection: str | None) -> None:
        row = self.db.conn.execute(
            "SELECT * FROM deposits WHERE id = ? AND status = 'PENDING'", (deposit_id,)
        ).fetchone()
        if row is None:
            return
        with self.db.transaction() as conn:
            if rejection is not None:
                log.warning("deposit %d refused by the engine: %s", deposit_id, rejection)
                conn.execute("DELETE FROM deposits WHERE id = ?", (deposit_id,))
                return
            conn.execute(
                "UPDATE deposits SET status = 'CREDITED', seq = ?, credited_ms = ? WHERE id = ?",
                (seq, self.clock_ms(), deposit_id),
            )
        record = self._deposit_from(row)
        if record.user_id is not None:
            user = self.accounts.user(record.user_id)
            if user is not None:
                amount = fmt(record.amount, record.asset.decimals, record.asset.decimals)
                self.accounts.notify(
                    user,
                    "Deposit credited",
                    f"{amount} {record.asset.name} arrived (transaction {record.tx_id}).",
                )

    # --- withdrawals ----------------------------------------------------------------------

    def _withdrawal_from(self, r: sqlite3.Row) -> Withdrawal:
        approvals = self.db.conn.execute(
            "SELECT operator FROM withdrawal_approvals WHERE withdrawal_id = ? ORDER BY time_ms, "
            "rowid",
            (r["id"],),
        ).fetchall()
        return Withdrawal(
            id=r["id"],
            user_id=r["user_id"],
            account=r["account"],
            asset=self.listing.assets[r["asset"]],
            amount=r["amount"],
            address=r["address"],
            network=r["network"],
            withdraw_order_id=r["withdraw_order_id"],
            status=r["status"],
            needs_approval=bool(r["needs_approval"]),
            withdraw_seq=r["withdraw_seq"],
            refund_seq=r["refund_seq"],
            tx_id=r["tx_id"],
            info=r["info"],
            created_ms=r["created_ms"],
            updated_ms=r["updated_ms"],
            approvals=tuple(a[0] for a in approvals),
        )

    def withdrawal(self, withdrawal_id: int) -> Withdrawal | None:
        row = self.db.conn.execute(
            "SELECT * FROM withdrawals WHERE id = ?", (withdrawal_id,)
        ).fetchone()
        return None if row is None else self._withdrawal_from(row)

    def withdrawals(
        self,
        *,
        user_id: int | None = None,
        statuses: Sequence[str] | None = None,
        asset: Asset | None = None,
        withdraw_order_id: str | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        offset: int = 0,
        limit: int = 1000,
    ) -> list[Withdrawal]:
        """Withdrawals, newest first."""
        equal = {
            "user_id": user_id,
            "asset": None if asset is None else asset.id,
            "withdraw_order_id": withdraw_order_id,
        }
        rows = self._history("withdrawals", equal, statuses, start_ms, end_ms, offset, limit)
        return [self._withdrawal_from(r) for r in rows]

    def count_withdrawals(self, status: WithdrawalStatus) -> int:
        row = self.db.conn.execute(
            "SELECT COUNT(*) FROM withdrawals WHERE status = ?", (status,)
        ).fetchone()
        return int(row[0])

    def withdrawn_in_window(self, user: User, asset: Asset) -> int:
        """Atoms of the asset the user withdrew (not rejected) in the last 24 hours."""
        since = self.clock_ms() - DAY_MS
        total = 0
        for (amount,) in self.db.conn.execute(
            "SELECT amount FROM withdrawals WHERE user_id = ? AND asset = ? AND created_ms > ? "
            f"AND status NOT IN ({', '.join('?' for _ in NOT_COUNTED)})",
            (user.id, asset.id, since, *NOT_COUNTED),
        ):
            total += int(amount)
        return total

    async def request_withdrawal(
        self,
        user: User,
        *,
        coin: str,
        address: str,
        amount_text: str,
        withdraw_order_id: str | None = None,
        network: str | None = None,
        totp: str | None = None,
        require_totp: bool,
    ) -> Withdrawal:
        """Check, hold (``Withdraw`` in the engine) and send or queue for approval (see the
        module docstring). ``require_totp``: the session path (the API-key path relies on
        the withdraw permission, which needed a TOTP code when the key was created)."""
        asset = self.asset_named(coin)
        if not address:
            raise mandatory("address")
        if network not in (None, "", asset.name):
            raise invalid(
                f"Data sent for parameter 'network' is not valid: {asset.name} withdrawals go "
                f"over network {asset.name}."
            )
        amount = parse_amount(amount_text, asset)
        if withdraw_order_id is not None:
            if not WITHDRAW_ORDER_ID.match(withdraw_order_id):
                raise invalid(
                    "Data sent for parameter 'withdrawOrderId' is not valid: 1 to 64 "
                    "characters from A-Z, a-z, 0-9, '_', '.', '-'."
                )
            if self.withdrawals(user_id=user.id, withdraw_order_id=withdraw_order_id, limit=1):
                raise conflict(f"withdrawOrderId {withdraw_order_id!r} was used already.")
        current = self.accounts.user(user.id) or user
        if current.frozen:
            raise ApiError(CAPITAL_WITHDRAW_RESTRICTED, "Withdrawals are disabled for this user.")
        whitelisted = self.db.conn.execute(
            "SELECT usable_ms FROM withdrawal_addresses WHERE user_id = ? AND asset = ? AND "
            "address = ?",
            (user.id, asset.id, address),
        ).fetchone()
        if whitelisted is None:
            raise ApiError(
                CAPITAL_WITHDRAW_NOT_WHITE_ADDRESS,
                "This address is not on the whitelist. Please join and try again.",
            )
        now = self.clock_ms()
        if whitelisted["usable_ms"] > now:
            hours = -(-(whitelisted["usable_ms"] - now) // 3_600_000)
            raise ApiError(
                CAPITAL_WITHDRAW_NEW_ADDRESS,
                f"The new address needs to be withdrawn in {hours} hours.",
            )
        tier = self.tier(user.id)
        limit = self.daily_limit(tier, asset)
        used = self.withdrawn_in_window(current, asset)
        if used + amount > limit:
            d = asset.decimals
            raise ApiError(
                CAPITAL_WITHDRAW_MAX_AMOUNT,
                f"Within 24 hours, the withdrawal exceeds the maximum amount: the limit of "
                f"verification tier {tier} is {fmt(limit, d, d)} {asset.name}, "
                f"{fmt(used, d, d)} used.",
            )
        free, _ = self.node.balance(current.account, asset.id) or (0, 0)
        if free < amount:
            raise ApiError(CAPITAL_WITHDRAW_USER_ASSET_NOT_ENOUGH, "You have insufficient balance.")
        if require_totp:
            self._check_totp(current, totp)
        needs_approval = amount > self.approval_threshold(asset)
        # No await since the checks: the limit check and this insert are one step.
        with self.db.transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO withdrawals (user_id, account, asset, amount, address, network, "
                "withdraw_order_id, status, needs_approval, created_ms, updated_ms) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, 'REQUESTED', ?, ?, ?)",
                (
                    user.id,
                    current.account,
                    asset.id,
                    amount,
                    address,
                    asset.name,
                    withdraw_order_id,
                    int(needs_approval),
                    now,
                    now,
                ),
            )
        withdrawal_id = cursor.lastrowid
        assert withdrawal_id is not None
        command = Withdraw(account=current.account, asset=asset.id, amount=amount)
        try:
            ack = await self._submit(command, WITHDRAWAL_SOURCE, withdrawal_id)
        except NodeBusy:
            with self.db.transaction() as conn:
                conn.execute(
                    "DELETE FROM withdrawals WHERE id = ? AND status = 'REQUESTED'",
                    (withdrawal_id,),
                )
            raise busy() from None
        rejected = ack.rejection()
        self._settle_withdrawal(
            withdrawal_id, ack.seq, None if rejected is None else rejected.reason
        )
        if rejected is not None:
            if rejected.reason == "insufficient_balance":
                raise ApiError(
                    CAPITAL_WITHDRAW_USER_ASSET_NOT_ENOUGH, "You have insufficient balance."
                )
            if rejected.reason == "account_frozen":
                raise ApiError(
                    CAPITAL_WITHDRAW_RESTRICTED, "Withdrawals are disabled for this user."
                )
            raise invalid(f"The engine refused the withdrawal: {rejected.reason}.")
        found = self.withdrawal(withdrawal_id)
        assert found is not None
        return found

    def _notify(self, user_id: int, subject: str, body: str) -> None:
        user = self.accounts.user(user_id)
        if user is not None:
            self.accounts.notify(user, subject, body)

    def _describe(self, w: Withdrawal) -> str:
        return f"withdrawal {w.id} of {w.amount_str} {w.asset.name} to {w.address}"

    def _settle_withdrawal(self, withdrawal_id: int, seq: int, rejection: str | None) -> None:
        """The engine applied (or refused) a REQUESTED withdrawal's ``Withdraw``."""
        w = self.withdrawal(withdrawal_id)
        if w is None or w.status != "REQUESTED":
            return
        now = self.clock_ms()
        if rejection is not None:
            with self.db.transaction() as conn:
                conn.execute("DELETE FROM withdrawals WHERE id = ?", (withdrawal_id,))
            return
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE withdrawals SET status = 'PENDING_APPROVAL', withdraw_seq = ?, "
                "updated_ms = ? WHERE id = ?",
                (seq, now, withdrawal_id),
            )
        note = (
            f"It needs the approval of {self.settings.approvals_required} operator(s)."
            if w.needs_approval
            else "It is being sent."
        )
        self._notify(
            w.user_id, "Withdrawal requested", f"Your {self._describe(w)} was requested. {note}"
        )
        if not w.needs_approval:
            self._send(withdrawal_id)

    def _send(self, withdrawal_id: int) -> None:
        """Hand a held withdrawal to the (simulated) chain: SENT with its transaction id."""
        tx_id = secrets.token_hex(32)
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE withdrawals SET status = 'SENT', tx_id = ?, updated_ms = ? "
                "WHERE id = ? AND status = 'PENDING_APPROVAL'",
                (tx_id, self.clock_ms(), withdrawal_id),
            )
        w = self.withdrawal(withdrawal_id)
        assert w is not None
        self._notify(w.user_id, "Withdrawal sent", f"Your {self._describe(w)} was sent: {tx_id}.")

    def _fail_withdrawal(self, withdrawal_id: int, info: str) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE withdrawals SET status = 'FAILED', info = ?, updated_ms = ? "
                "WHERE id = ? AND status = 'REQUESTED'",
                (info, self.clock_ms(), withdrawal_id),
            )
        w = self.withdrawal(withdrawal_id)
        if w is not None and w.status == "FAILED":
            self._notify(
                w.user_id, "Withdrawal failed", f"Your {self._describe(w)} failed: {info}."
            )

    def _pending(self, withdrawal_id: int) -> Withdrawal:
        w = self.withdrawal(withdrawal_id)
        if w is None:
            raise ApiError(CAPITAL_WITHDRAW_NOT_EXIST, "The withdrawal record does not exist.", 404)
        if w.status != "PENDING_APPROVAL":
            raise conflict(f"Withdrawal {w.id} is {w.status}, not PENDING_APPROVAL.")
        return w

    def approve(self, withdrawal_id: int, operator: Operator) -> Withdrawal:
        """One operator's approval; the N-th distinct one sends the withdrawal."""
        w = self._pending(withdrawal_id)
        if operator.name in w.approvals:
            raise conflict(f"Operator {operator.name!r} has already approved withdrawal {w.id}.")
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO withdrawal_approvals (withdrawal_id, operator_id, operator, time_ms) "
                "VALUES (?, ?, ?, ?)",
                (w.id, operator.id, operator.name, self.clock_ms()),
            )
        count, needed = len(w.approvals) + 1, self.settings.approvals_required
        self._notify(
            w.user_id,
            "Withdrawal approved" if count >= needed else "Withdrawal approval",
            f"Your {self._describe(w)} has {count} of {needed} approvals.",
        )
        if count >= needed:
            self._send(w.id)
        updated = self.withdrawal(w.id)
        assert updated is not None
        return updated

    async def reject(self, withdrawal_id: int, operator: Operator, reason: str) -> Withdrawal:
        """Reject a pending withdrawal and pay the held amount back (see the module doc)."""
        if len(reason) > 256 or not reason.isprintable():
            raise invalid("Data sent for parameter 'reason' is not valid: at most 256 characters.")
        w = self._pending(withdrawal_id)
        info = f"rejected by {operator.name}" + (f": {reason}" if reason else "")
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE withdrawals SET status = 'REJECTING', info = ?, updated_ms = ? "
                "WHERE id = ?",
                (info, self.clock_ms(), w.id),
            )
        await self._refund(w)
        updated = self.withdrawal(w.id)
        assert updated is not None
        return updated

    async def _refund(self, w: Withdrawal) -> None:
        command = Deposit(account=w.account, asset=w.asset.id, amount=w.amount)
        try:
            ack = await self._submit(command, REFUND_SOURCE, w.id)
        except NodeBusy:
            with self.db.transaction() as conn:
                conn.execute(
                    "UPDATE withdrawals SET status = 'PENDING_APPROVAL', info = '' "
                    "WHERE id = ? AND status = 'REJECTING'",
                    (w.id,),
                )
            raise busy() from None
        rejected = ack.rejection()
        if rejected is not None:
            # Cannot happen for an amount that left this account; stays REJECTING (retried
            # at the next start) and is loud.
            log.error("refund of withdrawal %d refused by the engine: %s", w.id, rejected.reason)
            raise ApiError(
                UNKNOWN, "The refund was refused by the engine; it will be retried.", 500
            )
        self._settle_refund(w.id, ack.seq)

    def _settle_refund(self, withdrawal_id: int, seq: int) -> None:
        w = self.withdrawal(withdrawal_id)
        if w is None or w.status != "REJECTING":
            return
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE withdrawals SET status = 'REJECTED', refund_seq = ?, updated_ms = ? "
                "WHERE id = ?",
                (seq, self.clock_ms(), withdrawal_id),
            )
        self._notify(
            w.user_id,
            "Withdrawal rejected",
            f"Your {self._describe(w)} was {w.info}; the amount is back in your account.",
        )

    # --- engine commands, the feed and recovery -------------------------------------------

    async def _submit(self, command: Command, source: int, reference: int) -> Ack:
        """Submit with the row's origin. NodeBusy passes through (nothing was sent: the
        caller undoes its intent row); an unknown outcome is -1007 (the feed settles the row
        when the entry arrives, or recovery at the next start)."""
        try:
            return await self.bridge.submit(command, source=source, reference=reference)
        except NodeBusy:
            raise
        except Exception as err:
            log.warning("funding command (%d, %d) outcome unknown: %r", source, reference, err)
            raise ApiError(
                TIMEOUT,
                "Timeout waiting for response from backend server. Send status unknown; "
                "execution status unknown.",
                503,
            ) from None

    def consume(self, batch: Sequence[Entry]) -> None:
        """The event feed's consumer: settle the rows whose commands the engine applied."""
        mine = False
        for entry in batch:
            source = entry.origin.source
            if source not in SOURCES:
                continue
            mine = True
            reference = entry.origin.reference
            rejection = next((e.reason for e in entry.events if isinstance(e, Rejected)), None)
            if source == DEPOSIT_SOURCE:
                self._settle_deposit(reference, entry.seq, rejection)
            elif source == WITHDRAWAL_SOURCE:
                self._settle_withdrawal(reference, entry.seq, rejection)
            elif rejection is None:
                self._settle_refund(reference, entry.seq)
        self._cursor = batch[-1].seq
        if mine or self._cursor - self._persisted_cursor >= CURSOR_EVERY:
            self._persist_cursor()

    def _persist_cursor(self) -> None:
        with self.db.transaction() as conn:
            conn.execute("UPDATE funding_cursor SET seq = ? WHERE id = 1", (self._cursor,))
        self._persisted_cursor = self._cursor

    @property
    def cursor(self) -> int:
        return self._cursor

    def subscribe(self, feed: EventFeed) -> None:
        feed.subscribe("funding", self.consume, self._persisted_cursor + 1)

    async def recover(self, feed: EventFeed) -> None:
        """At start, once the feed has caught up: finish what a crash interrupted (step 5 of
        the protocol in the module docstring)."""
        await feed.wait_for(self.node.stats()["applied_seq"], 600)
        for row in self.db.conn.execute(
            "SELECT id FROM withdrawals WHERE status = 'PENDING_APPROVAL' ORDER BY id"
        ).fetchall():
            w = self.withdrawal(row[0])
            assert w is not None
            if not w.needs_approval or len(w.approvals) >= self.settings.approvals_required:
                log.warning("withdrawal %d was cleared to send: sending it", w.id)
                self._send(w.id)
        for row in self.db.conn.execute(
            "SELECT id FROM withdrawals WHERE status = 'REQUESTED' ORDER BY id"
        ).fetchall():
            log.warning("withdrawal %d never reached the engine: FAILED", row[0])
            self._fail_withdrawal(row[0], "the request did not reach the exchange; nothing moved")
        for row in self.db.conn.execute(
            "SELECT * FROM deposits WHERE status = 'PENDING' ORDER BY id"
        ).fetchall():
            d = self._deposit_from(row)
            log.warning("deposit %d (%s) not applied yet: submitting it again", d.id, d.tx_id)
            await self._submit_deposit(d.id, d.account, d.asset, d.amount)
        for row in self.db.conn.execute(
            "SELECT id FROM withdrawals WHERE status = 'REJECTING' ORDER BY id"
        ).fetchall():
            w = self.withdrawal(row[0])
            assert w is not None
            log.warning("refund of withdrawal %d not applied yet: submitting it again", w.id)
            await self._refund(w)


FUNDING = web.AppKey("funding", Funding)


def setup(app: web.Application, exchange: Any) -> Funding:
    """Create the service once per app (``app[FUNDING]``), subscribe it to the feed and
    finish interrupted work at start; later calls return the same service."""
    if FUNDING in app:
        return app[FUNDING]
    from controlplane.api.auth import ACCOUNTS

    funding = Funding(
        exchange.db,
        exchange.bridge,
        exchange.node,
        exchange.listing,
        app[ACCOUNTS],
        exchange.config.funding,
    )
    funding.subscribe(exchange.feed)
    app[FUNDING] = funding

    async def recover(_: web.Application) -> None:
        await funding.recover(exchange.feed)

    app.on_startup.append(recover)
    return funding
